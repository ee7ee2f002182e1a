"""Real-time chunking over the wire: guided vs unguided request latency on loopback.

A ``vlastack serve``-equivalent server runs in its own process (torch at ``--threads``, 1 by
default); this process sends the same observation as a plain openpi request and as a guided one
(the ``rtc/*`` fields: the previous chunk's rows ``--executed``.. and ``--delay`` ticks),
alternating the two so that machine load hits both alike, and reports round-trip p50/p90 and the
server's own ``infer_ms``. Beside it, the in-process ``infer`` / ``infer_guided`` times with the
same thread count, so the wire's share shows. Policies:

* ``native``: a vlastack checkpoint written here from a recipe's model (random weights; default
  ``cpu_default``: small CNN + MiniLM-shaped LM + flow head, 5 Euler steps, H=8);
* ``smolvla``: the imported SmolVLA fixture (../shared/fixtures/lerobot_policies/smolvla,
  reduced size, byte-level tokenizer stand-in; 10 flow steps, H=10).

    PYTHONPATH=src VLASTACK_SHARED=../shared .venv/bin/python benchmarks/bench_rtc_serve.py \
        [--requests 40] [--threads 1] [--policies native,smolvla] [--recipe cpu_default]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VLASTACK_SHARED", ROOT.parent / "shared"))
SMOLVLA = SHARED / "fixtures" / "lerobot_policies" / "smolvla"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def load_policy(kind: str, path: str, threads: int) -> Any:
    import torch

    torch.set_num_threads(threads)
    if kind == "smolvla":
        from vlastack.pretrained.lerobot.smolvla_policy import load_lerobot_smolvla
        from vlastack.pretrained.lerobot.tokenizer import ByteTokenizer

        return load_lerobot_smolvla(Path(path), device="cpu", tokenizer=ByteTokenizer())
    from vlastack.policy import Policy

    return Policy.from_checkpoint(path, device="cpu")


def write_native(recipe: str, out: Path) -> Path:
    import torch

    from vlastack.data.normalization import Normalizer
    from vlastack.models.vla import build_vla
    from vlastack.recipes import get_recipe
    from vlastack.training.checkpoint import save_checkpoint

    cfg = get_recipe(recipe).model
    if cfg.head != "flow_matching":
        raise SystemExit(f"recipe {recipe!r} has head {cfg.head!r}; RTC needs flow_matching")
    torch.manual_seed(0)
    model = build_vla(cfg)
    stats = {
        k: {"mean": [0.0] * d, "std": [1.0] * d}
        for k, d in (("observation.state", cfg.state_dim), ("action", cfg.action_dim))
    }
    norm = Normalizer(stats, {"observation.state": "mean_std", "action": "mean_std"})
    return save_checkpoint(
        out,
        0,
        weights=model.state_dict(),
        config={"model": cfg.to_dict()},
        normalization=norm.to_dict(),
        embodiment=None,
    )


def observation(kind: str, policy: Any) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    if kind == "smolvla":
        return dict(policy.example_observation(0))
    H, W = policy.image_size
    obs: dict[str, Any] = {
        f"observation.images.{c}": rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        for c in policy.cameras
    }
    obs["observation.state"] = rng.normal(0, 1, policy.state_dim).astype(np.float32)
    obs["task"] = "push the puck to the goal"
    return obs


def start_server(kind: str, path: str, port: int, threads: int) -> subprocess.Popen:
    code = (
        "import logging, sys; logging.basicConfig(level=logging.WARNING);"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r});"
        "from bench_rtc_serve import load_policy;"
        "from vlastack.serving.server import run_server;"
        f"run_server(load_policy({kind!r}, {path!r}, {threads}), port={port})"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 600  # a loaded machine loads slowly
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("server exited") from None
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not start")


def pct(xs: list[float]) -> dict[str, float]:
    return {
        "p50": round(float(np.percentile(xs, 50)), 2),
        "p90": round(float(np.percentile(xs, 90)), 2),
    }


def bench(kind: str, path: str, args: argparse.Namespace) -> dict[str, Any]:
    from vlastack.serving.client import PolicyClient

    local = load_policy(kind, path, args.threads)
    obs = observation(kind, local)
    H = int(local.metadata["action_horizon"])
    executed = min(args.executed, H - 1)
    prev = np.asarray(local.infer(obs)["actions"])[executed:]
    delay = min(args.delay, len(prev))
    # in process
    plain_ms, guided_ms = [], []
    for _ in range(3):
        local.infer(obs), local.infer_guided(obs, prev, delay)
    for _ in range(args.requests):
        t = time.perf_counter()
        local.infer(obs)
        plain_ms.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        local.infer_guided(obs, prev, delay)
        guided_ms.append((time.perf_counter() - t) * 1000)
    del local
    port = free_port()
    server = start_server(kind, path, port, args.threads)
    rt: dict[str, list[float]] = {"plain": [], "guided": []}
    srv: dict[str, list[float]] = {"plain": [], "guided": []}
    try:
        with PolicyClient("127.0.0.1", port) as client:
            assert client.supports_guidance, client.metadata
            for _ in range(3):
                client.infer(obs), client.infer_guided(obs, prev, delay)
            for _ in range(args.requests):
                for name in ("plain", "guided"):
                    t = time.perf_counter()
                    if name == "plain":
                        reply = client.infer(obs)
                    else:
                        reply = client.infer_guided(obs, prev, delay)
                        assert reply["rtc"]["prefix_steps"] == len(prev)
                    rt[name].append((time.perf_counter() - t) * 1000)
                    srv[name].append(float(reply["server_timing"]["infer_ms"]))
    finally:
        server.terminate()
        server.wait(30)
    return {
        "policy": kind,
        "action_horizon": H,
        "committed_steps": len(prev),
        "delay_ticks": delay,
        "in_process_ms": {"plain": pct(plain_ms), "guided": pct(guided_ms)},
        "round_trip_ms": {k: pct(v) for k, v in rt.items()},
        "server_infer_ms": {k: pct(v) for k, v in srv.items()},
        "guided_over_plain_round_trip_p50": round(
            float(np.percentile(rt["guided"], 50) / np.percentile(rt["plain"], 50)), 2
        ),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=40, help="timed requests of each kind")
    p.add_argument("--threads", type=int, default=1, help="torch threads, server and in process")
    p.add_argument("--policies", default="native,smolvla")
    p.add_argument("--recipe", default="cpu_default", help="the native checkpoint's model")
    p.add_argument("--native", default=None, help="a native flow checkpoint instead of --recipe")
    p.add_argument("--executed", type=int, default=4, help="rows of the last chunk executed")
    p.add_argument("--delay", type=int, default=2, help="inference delay in ticks")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.policies.split(","):
            if kind == "native":
                path = args.native or str(write_native(args.recipe, Path(tmp) / "native"))
            elif kind == "smolvla":
                path = str(SMOLVLA / "pretrained_model")
            else:
                raise SystemExit(f"unknown policy {kind!r}: native or smolvla")
            row = bench(kind, path, args)
            row["checkpoint"] = args.native or (args.recipe if kind == "native" else "fixture")
            rows.append(row)
            print(json.dumps(row), flush=True)
    load = os.getloadavg()
    print(
        json.dumps(
            {
                "machine": platform.processor() or platform.machine(),
                "cpus": os.cpu_count(),
                "loadavg_1_5_15": [round(x, 2) for x in load],
                "threads": args.threads,
                "requests_each": args.requests,
            }
        )
    )


if __name__ == "__main__":
    main()
