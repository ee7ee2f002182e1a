"""Training-sampler throughput: vlastack's WindowedDataset vs LeRobot's LeRobotDataset.

Writes a dataset with vlastack (2 cameras, AV1 when available, 96x96 or 224x224), then measures
samples/s of shuffled batches (obs_horizon 2, action_horizon 16) with 0 and 2 DataLoader workers.
LeRobot runs on the same files in its own venv (``--lerobot-python``, default
/work/lerobot-venv/bin/python, or VLASTACK_LEROBOT_PYTHON) with ``video_backend='pyav'``.
Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

LEROBOT_SCRIPT = r"""
import json, sys, time, os
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch
from lerobot.datasets.lerobot_dataset import LeRobotDataset
root, workers, batches, batch_size, obs_h, act_h = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
def main():
    probe = LeRobotDataset("local/bench", root=root, video_backend="pyav")
    dt = 1.0 / probe.fps
    obs = [-(obs_h - 1 - k) * dt for k in range(obs_h)]
    delta = {k: obs for k in probe.meta.camera_keys}
    delta["observation.state"] = obs
    delta["action"] = [k * dt for k in range(act_h)]
    ds = LeRobotDataset("local/bench", root=root, video_backend="pyav", delta_timestamps=delta)
    g = torch.Generator(); g.manual_seed(0)
    kw = dict(persistent_workers=True, prefetch_factor=4) if workers else {}
    dl = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers, generator=g, **kw)
    it = iter(dl)
    next(it)  # warm-up: worker start, first decodes
    t = time.perf_counter(); n = 0
    for _ in range(batches):
        b = next(it); n += len(b["index"])
    print(json.dumps({"samples_per_s": n / (time.perf_counter() - t)}))
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


def bench_vlastack(
    root: Path, workers: int, batches: int, batch_size: int, obs_h: int, act_h: int
) -> float:
    from vlastack.data.dataset import WindowedDataset, make_dataloader

    ds = WindowedDataset(root, obs_horizon=obs_h, action_horizon=act_h)
    it = iter(make_dataloader(ds, batch_size=batch_size, shuffle=True, num_workers=workers, seed=0))
    next(it)
    t = time.perf_counter()
    n = 0
    for _ in range(batches):
        n += len(next(it)["index"])
    return n / (time.perf_counter() - t)


def bench_lerobot(
    python: str, root: Path, workers: int, batches: int, batch_size: int, obs_h: int, act_h: int
) -> float | None:
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(LEROBOT_SCRIPT)
    try:
        proc = subprocess.run(
            [
                python,
                f.name,
                str(root),
                str(workers),
                str(batches),
                str(batch_size),
                str(obs_h),
                str(act_h),
            ],
            capture_output=True,
            text=True,
            timeout=1800,
        )
    finally:
        os.unlink(f.name)
    if proc.returncode != 0:
        print(f"LeRobot run failed: {proc.stderr[-1500:]}", file=sys.stderr)
        return None
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["samples_per_s"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[96, 224])
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--length", type=int, default=100)
    ap.add_argument("--batches", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--obs-horizon", type=int, default=2)
    ap.add_argument("--action-horizon", type=int, default=16)
    ap.add_argument(
        "--lerobot-python",
        default=os.environ.get("VLASTACK_LEROBOT_PYTHON", "/work/lerobot-venv/bin/python"),
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
    base = Path(args.root or tempfile.mkdtemp(prefix="vlastack_bench_"))
    rows = []
    for size in args.sizes:
        root = base / f"two_cam_{size}"
        if not (root / "meta" / "info.json").exists():
            t = time.perf_counter()
            write_dataset(root, size, args.episodes, args.length)
            print(f"wrote {root} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        for workers in args.workers:
            ours = bench_vlastack(
                root, workers, args.batches, args.batch_size, args.obs_horizon, args.action_horizon
            )
            theirs = (
                bench_lerobot(
                    args.lerobot_python,
                    root,
                    workers,
                    args.batches,
                    args.batch_size,
                    args.obs_horizon,
                    args.action_horizon,
                )
                if have_lerobot
                else None
            )
            rows.append(
                {
                    "size": size,
                    "workers": workers,
                    "vlastack_samples_per_s": round(ours, 1),
                    "lerobot_samples_per_s": None if theirs is None else round(theirs, 1),
                    "speedup": None if not theirs else round(ours / theirs, 2),
                }
            )
    print(f"{'cams':>10} {'workers':>7} {'vlastack/s':>11} {'lerobot/s':>10} {'speedup':>8}")
    for r in rows:
        lr = "n/a" if r["lerobot_samples_per_s"] is None else f"{r['lerobot_samples_per_s']:.1f}"
        sp = "n/a" if r["speedup"] is None else f"{r['speedup']:.2f}x"
        print(
            f"{'2x' + str(r['size']):>10} {r['workers']:>7} {r['vlastack_samples_per_s']:>11.1f} {lr:>10} {sp:>8}"
        )
    print(
        json.dumps(
            {
                "bench": "dataloader",
                "obs_horizon": args.obs_horizon,
                "action_horizon": args.action_horizon,
                "batch_size": args.batch_size,
                "cpu_count": os.cpu_count(),
                "results": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
