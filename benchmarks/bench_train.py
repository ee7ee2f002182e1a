"""Training throughput (samples/s, data loading included) and peak memory for three recipes.

Each recipe trains in its own subprocess (so peak RSS is its own) through ``training.loop.train``
on a real dataset (default: the LeRobot v3 fixture with two AV1 cameras, decoded every step),
at the recipe's CPU-default model size. samples/s counts only training steps (not validation or
checkpoint writes) after ``--warmup`` steps are excluded by running them first. Prints a table
and a last-line JSON list.

    .venv/bin/python benchmarks/bench_train.py [--data PATH] [--steps 20] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "fixtures" / "lerobot_v3_tiny_two_cam"
RECIPES = ["cpu_default", "diffusion_policy", "act"]


def one(recipe: str, data: str, steps: int, batch_size: int, num_workers: int) -> dict:
    import torch

    from vlastack.training.config import TrainConfig
    from vlastack.training.loop import train

    with tempfile.TemporaryDirectory() as tmp:
        overrides = [
            f"--data={data}",
            f"--out_dir={tmp}/run",
            f"--steps={steps}",
            f"--batch_size={batch_size}",
            f"--num_workers={num_workers}",
            "--warmup_steps=1",
            "--log=none",
            "--progress=false",
            "--val_fraction=0",
        ]
        cfg = TrainConfig.from_recipe(recipe, overrides)
        t0 = time.monotonic()
        res = train(cfg)
        wall_s = time.monotonic() - t0
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "recipe": recipe,
        "params_M": res.param_counts["total"][0] / 1e6,
        "trainable_M": res.param_counts["total"][1] / 1e6,
        "batch_size": batch_size,
        "steps": steps,
        "samples_per_s": res.samples_per_s,
        "peak_rss_MiB": rss_kib / 1024,
        "estimate_MiB": res.memory.total_bytes / 2**20 if res.memory else None,
        "wall_s": wall_s,
        "threads": torch.get_num_threads(),
        "num_workers": num_workers,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--num-workers", type=int, default=0)
    ap.add_argument("--recipes", default=",".join(RECIPES))
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        row = one(args.one, args.data, args.steps, args.batch_size, args.num_workers)
        print(json.dumps(row))
        return
    rows = []
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    for recipe in args.recipes.split(","):
        cmd = [
            sys.executable,
            __file__,
            "--one",
            recipe,
            "--data",
            args.data,
            "--steps",
            str(args.steps),
            "--batch-size",
            str(args.batch_size),
            "--num-workers",
            str(args.num_workers),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            print(f"{recipe}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(
        f"{'recipe':<18}{'params M':>10}{'batch':>7}{'samples/s':>11}{'peak RSS MiB':>14}"
        f"{'estimate MiB':>14}"
    )
    for r in rows:
        print(
            f"{r['recipe']:<18}{r['params_M']:>10.2f}{r['batch_size']:>7}"
            f"{r['samples_per_s']:>11.1f}{r['peak_rss_MiB']:>14.0f}{r['estimate_MiB']:>14.1f}"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
