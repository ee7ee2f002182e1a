"""Training-sampler throughput: vlastack's WindowedDataset vs LeRobot's LeRobotDataset.

Writes a dataset with vlastack (2 cameras, AV1 when available, 96x96 and 224x224), then measures
shuffled batches (obs_horizon 2, action_horizon 16, float32 images in [0, 1] on both sides) with
0 and 2 DataLoader workers. LeRobot runs on the same files in its own venv (``--lerobot-python``,
default ``.venv-lerobot`` beside the repo or VLASTACK_LEROBOT_PYTHON) with both of its video
backends, ``torchcodec`` (LeRobot 0.6.1's default) and ``pyav``; vlastack is compared with the
faster of the two. vlastack runs with each of its own video backends (``--vlastack-backends``):
``pyav`` (its default) and ``torchcodec`` (opt-in, ``--video_backend=torchcodec``; measured when
torchcodec imports here). ``--baseline-src OLD/src`` adds another vlastack checkout (a before/after).

Every measurement is a fresh process (warm-up batch first: worker start, first decodes), and the
rounds are interleaved (each round runs every contender once, in a rotating order), so machine
load hits all of them alike. Each run reports samples/s (wall clock) and CPU seconds per sample
of the process and its DataLoader workers (psutil over the timed batches; also split into user
and system time, with minor page faults per sample from /proc): on a shared machine the CPU
figure is the steadier one. The table gives medians over rounds and the 1-minute load
average around each row's runs; rows whose load exceeded the core count are marked as loaded.
Prints a table, then one JSON line.

    .venv/bin/python benchmarks/bench_dataloader.py [--rounds 3] [--baseline-src ../main/src]
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

# One script for every contender, run in the contender's interpreter. argv[1] is a JSON config.
MEASURE_SCRIPT = r"""
import json, os, sys, time
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import psutil
import torch

cfg = json.loads(sys.argv[1])

def cpu_s():
    # (user s, system s, minor page faults) of this process and its DataLoader workers, and
    # this process's own user + system s
    me = psutil.Process()
    user = system = faults = 0.0
    t = me.cpu_times()
    main_s = t.user + t.system
    for p in [me, *me.children(recursive=True)]:
        try:
            t = p.cpu_times()
            with open(f"/proc/{p.pid}/stat") as f:
                stat = f.read().rsplit(")", 1)[1].split()
            user, system, faults = user + t.user, system + t.system, faults + int(stat[7])
        except (psutil.Error, OSError):
            pass
    return user, system, faults, main_s

def loader():
    w = cfg["workers"]
    if cfg["kind"] == "vlastack":
        from vlastack.data.dataset import WindowedDataset, make_dataloader
        from vlastack.data.reader import DatasetReader
        kw = {} if cfg.get("video_backend") is None else {"video_backend": cfg["video_backend"]}
        reader = DatasetReader(cfg["root"], **kw)
        ds = WindowedDataset(reader, obs_horizon=cfg["obs_h"], action_horizon=cfg["act_h"])
        return make_dataloader(ds, batch_size=cfg["batch_size"], shuffle=True, num_workers=w, seed=0)
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    backend = cfg["backend"]
    probe = LeRobotDataset("local/bench", root=cfg["root"], video_backend=backend)
    dt = 1.0 / probe.fps
    obs = [-(cfg["obs_h"] - 1 - k) * dt for k in range(cfg["obs_h"])]
    delta = {k: obs for k in probe.meta.camera_keys}
    delta["observation.state"] = obs
    delta["action"] = [k * dt for k in range(cfg["act_h"])]
    ds = LeRobotDataset("local/bench", root=cfg["root"], video_backend=backend, delta_timestamps=delta)
    g = torch.Generator(); g.manual_seed(0)
    kw = dict(persistent_workers=True, prefetch_factor=4) if w else {}
    return torch.utils.data.DataLoader(ds, batch_size=cfg["batch_size"], shuffle=True, num_workers=w, generator=g, **kw)

def main():
    it = iter(loader())
    b = next(it)  # warm-up
    shape = list(b[cfg["camera"]].shape)
    c0, t0 = cpu_s(), time.perf_counter()
    n = 0
    for _ in range(cfg["batches"]):
        n += len(next(it)["index"])
    wall = time.perf_counter() - t0
    user, system, faults, main_s = (x1 - x0 for x0, x1 in zip(c0, cpu_s()))
    print(json.dumps({
        "samples_per_s": n / wall, "cpu_ms_per_sample": 1e3 * (user + system) / n,
        "user_ms_per_sample": 1e3 * user / n, "sys_ms_per_sample": 1e3 * system / n,
        "faults_per_sample": faults / n, "main_ms_per_sample": 1e3 * main_s / n, "shape": shape,
    }))
    os._exit(0)  # skip the workers' teardown (it is not part of the measurement)

if __name__ == "__main__":
    main()
"""


def write_dataset(root: Path, size: int, episodes: int, length: int, seed: int = 0) -> None:
    from vlastack.data.format import DatasetWriter, Feature

    rng = np.random.default_rng(seed)
    feats = {
        "observation.images.front": Feature("video", (size, size, 3)),
        "observation.images.wrist": Feature("video", (size, size, 3)),
        "observation.state": Feature("float32", (8,)),
        "action": Feature("float32", (7,)),
    }
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    with DatasetWriter.create(root, fps=10, features=feats) as w:
        for e in range(episodes):
            for i in range(length):
                phase = 2 * np.pi * (i / length + e / episodes)
                # moving smooth pattern: realistic work for the codec, not a flat frame
                r = 127 + 120 * np.sin(6 * xx + phase)
                g = 127 + 120 * np.cos(5 * yy - phase)
                b = 127 + 120 * np.sin(4 * (xx + yy) + 2 * phase)
                img = np.stack([r, g, b], -1).astype(np.uint8)
                w.add_frame(
                    {
                        "observation.images.front": img,
                        "observation.images.wrist": img[::-1].copy(),
                        "observation.state": rng.normal(size=8).astype(np.float32),
                        "action": rng.normal(size=7).astype(np.float32),
                    },
                    task=f"task {e % 3}",
                )
            w.save_episode()


def run_one(python: str, cfg: dict, src: str | None, script: str) -> dict | None:
    """One measurement in a fresh process; None (with the reason on stderr) if it failed."""
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = src
    proc = subprocess.run(
        [python, script, json.dumps(cfg)], capture_output=True, text=True, timeout=1800, env=env
    )
    if proc.returncode != 0:
        print(f"{cfg.get('name')} failed: {proc.stderr[-1500:]}", file=sys.stderr)
        return None
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def machine() -> dict:
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cpu_count": os.cpu_count(), "python": platform.python_version()}


def _med(xs: list[float]) -> float | None:
    return round(statistics.median(xs), 2) if xs else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[96, 224])
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--length", type=int, default=100)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--obs-horizon", type=int, default=2)
    ap.add_argument("--action-horizon", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians reported)")
    ap.add_argument(
        "--backends",
        nargs="+",
        default=["torchcodec", "pyav"],
        help="LeRobot video backends to measure",
    )
    ap.add_argument(
        "--vlastack-backends",
        nargs="+",
        default=["pyav", "torchcodec"],
        help="vlastack video backends to measure (torchcodec only where it imports)",
    )
    ap.add_argument(
        "--baseline-src",
        default=None,
        help="another vlastack src/ folder measured alongside (before/after comparisons)",
    )
    ap.add_argument(
        "--lerobot-python",
        default=os.environ.get(
            "VLASTACK_LEROBOT_PYTHON", str(REPO / ".venv-lerobot" / "bin" / "python")
        ),
    )
    ap.add_argument(
        "--root", default=None, help="folder for the generated datasets (default: a temp dir)"
    )
    args = ap.parse_args()

    have_lerobot = (
        Path(args.lerobot_python).exists()
        and subprocess.run(
            [args.lerobot_python, "-c", "import lerobot"], capture_output=True
        ).returncode
        == 0
    )
    if not have_lerobot:
        print(f"no LeRobot at {args.lerobot_python}: vlastack only", file=sys.stderr)
    # (name, python, src or None, LeRobot backend or None, vlastack backend or None)
    contenders: list[tuple[str, str, str | None, str | None, str | None]] = []
    for vb in args.vlastack_backends:
        if vb == "torchcodec" and importlib.util.find_spec("torchcodec") is None:
            print("torchcodec is not installed here: no vlastack_torchcodec row", file=sys.stderr)
            continue
        name = "vlastack" if vb == "pyav" else f"vlastack_{vb}"
        contenders.append((name, sys.executable, str(REPO / "src"), None, vb))
    if args.baseline_src:
        contenders.append(("vlastack_before", sys.executable, args.baseline_src, None, None))
    if have_lerobot:
        contenders += [(f"lerobot_{b}", args.lerobot_python, None, b, None) for b in args.backends]
    ours = [c[0] for c in contenders if c[4] is not None]  # vlastack rows compared with LeRobot

    base = Path(args.root or tempfile.mkdtemp(prefix="vlastack_bench_"))
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    rows = []
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(MEASURE_SCRIPT)
    try:
        for size in args.sizes:
            root = base / f"two_cam_{size}"
            if not (root / "meta" / "info.json").exists():
                t = time.perf_counter()
                write_dataset(root, size, args.episodes, args.length)
                print(f"wrote {root} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
            for workers in args.workers:
                runs: dict[str, list[dict]] = {c[0]: [] for c in contenders}
                loads: list[float] = []
                for rnd in range(args.rounds):
                    k = rnd % len(contenders)
                    for name, python, src, backend, vb in contenders[k:] + contenders[:k]:
                        cfg = {
                            "name": name,
                            "kind": "lerobot" if backend else "vlastack",
                            "backend": backend,
                            "video_backend": None if vb == "pyav" else vb,
                            "root": str(root),
                            "workers": workers,
                            "batches": args.batches,
                            "batch_size": args.batch_size,
                            "obs_h": args.obs_horizon,
                            "act_h": args.action_horizon,
                            "camera": "observation.images.front",
                        }
                        loads.append(os.getloadavg()[0])
                        res = run_one(python, cfg, src, f.name)
                        if res is not None:
                            runs[name].append(res)
                loads.append(os.getloadavg()[0])
                row: dict = {"size": size, "workers": workers}
                for name, rs in runs.items():
                    row[name] = {
                        k: _med([r[k] for r in rs])
                        for k in (
                            "samples_per_s",
                            "cpu_ms_per_sample",
                            "user_ms_per_sample",
                            "sys_ms_per_sample",
                            "faults_per_sample",
                            "main_ms_per_sample",
                        )
                    }
                    row[name]["runs"] = len(rs)
                theirs = [n for n in runs if n.startswith("lerobot_") and row[n]["samples_per_s"]]
                if theirs:
                    best = max(theirs, key=lambda n: row[n]["samples_per_s"])
                    best_cpu = min(theirs, key=lambda n: row[n]["cpu_ms_per_sample"])
                    row["lerobot_best"] = best
                    for name in ours:
                        if not row[name]["samples_per_s"]:
                            continue
                        # "vlastack" (pyav) keeps the original keys; others get a prefix
                        pre = "" if name == "vlastack" else name.removeprefix("vlastack_") + "_"
                        row[f"{pre}speedup_vs_best"] = round(
                            row[name]["samples_per_s"] / row[best]["samples_per_s"], 2
                        )
                        row[f"{pre}cpu_speedup_vs_best"] = round(
                            row[best_cpu]["cpu_ms_per_sample"] / row[name]["cpu_ms_per_sample"], 2
                        )
                row["load_1min"] = [round(min(loads), 2), round(max(loads), 2)]
                row["loaded"] = max(loads) > (os.cpu_count() or 1)
                rows.append(row)
                print(json.dumps(row), file=sys.stderr)
    finally:
        os.unlink(f.name)

    names = [c[0] for c in contenders]
    prefixes = ["" if n == "vlastack" else n.removeprefix("vlastack_") + "_" for n in ours]
    ratio_heads = [f"{(p or 'pyav_')[:-1][:10]} vs|cpu" for p in prefixes]
    print(
        f"{'cams':>6} {'wk':>2} "
        + " ".join(f"{n[:19]:>19}" for n in names)
        + "".join(f" {h:>17}" for h in ratio_heads)
        + f" {'load 1m':>10}"
    )
    print(f"{'':>6} {'':>2} " + " ".join(f"{'samples/s | ms cpu':>19}" for _ in names))
    for r in rows:
        cells = []
        for n in names:
            sp, cp = r[n]["samples_per_s"], r[n]["cpu_ms_per_sample"]
            cells.append(f"{'n/a' if sp is None else f'{sp:.1f} | {cp:.2f}':>19}")
        ratios = []
        for p in prefixes:
            sp, cs = r.get(f"{p}speedup_vs_best"), r.get(f"{p}cpu_speedup_vs_best")
            ratios.append(f"{'n/a' if sp is None else f'{sp:.2f}x|{cs:.2f}x':>17}")
        lo, hi = r["load_1min"]
        print(
            f"{'2x' + str(r['size']):>6} {r['workers']:>2} "
            + " ".join(cells)
            + "".join(f" {x}" for x in ratios)
            + f" {f'{lo:.1f}-{hi:.1f}':>10}{' loaded' if r['loaded'] else ''}"
        )
    mach = machine()
    print(
        f"machine: {mach['cpu']}, {mach['cpu_count']} cores; {started}; medians of {args.rounds} "
        "interleaved rounds; 'X vs|cpu': vlastack with video backend X, its samples/s over "
        "LeRobot's faster backend's | LeRobot's lowest CPU ms/sample over its own (process + "
        "workers); 'loaded': the 1-minute load average "
        "exceeded the core count during the row, so its wall-clock ratio was measured under load"
    )
    print(
        json.dumps(
            {
                "bench": "dataloader",
                "machine": mach,
                "date": started,
                "rounds": args.rounds,
                "obs_horizon": args.obs_horizon,
                "action_horizon": args.action_horizon,
                "batch_size": args.batch_size,
                "batches": args.batches,
                "contenders": names,
                "results": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
