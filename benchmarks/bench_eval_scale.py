"""Episodes per hour of ``vlastack eval`` with the process pool and with Ray, same checkpoint.

For each env (Meta-World reach-v3 + push-v3, PushT) a tiny random vlastack VLA checkpoint is
built for that env's embodiment (small CNN, L1 head, 8-action chunks; the same checkpoint for
both executors), then ``evaluate`` runs the same episodes (same tasks, seeds, max steps) with
``executor="pool"`` and ``executor="ray"`` (a local Ray instance started on demand with
``num_cpus=workers``). Reported per run: end-to-end episodes/hour (wall time including starting
workers, Ray itself and building the policy and envs: what a user waits for), steady-state
episodes/hour (episodes / summed episode time x workers: the rate once everything is up), the
success rate and whether the per-episode outcomes of both executors are identical. Prints a
table and a last-line JSON.

A random policy rarely succeeds and runs to ``--max-steps``, so the rates are those of full-length
episodes. The comparison with ``lerobot-eval`` the issue asks for is not here (see BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")


def tiny_checkpoint(root: Path, task: str) -> Path:
    """A randomly initialised tiny VLA for ``task``'s embodiment (weights seeded)."""
    import numpy as np
    import torch

    from vlastack.data.normalization import Normalizer
    from vlastack.envs import make_env
    from vlastack.models.vla import VLAConfig, build_vla
    from vlastack.training.checkpoint import save_checkpoint

    env = make_env(task, image_size=(128, 128))
    emb = env.embodiment
    env.close()
    torch.manual_seed(0)
    cfg = VLAConfig(
        action_dim=emb.action.dim,
        action_horizon=8,
        obs_horizon=1,
        state_dim=emb.state.dim,
        cameras=[emb.cameras[0].name],
        image_size=(32, 32),
        width=32,
        vision="small_cnn",
        vision_kwargs={"width": 8, "num_blocks": 2, "out_dim": 32},
        vision_pooled=True,
        language="none",
        head="l1",
        head_kwargs={"width": 32, "depth": 1, "num_heads": 2, "resnet_blocks": 1},
    )

    def stats(spec) -> dict:
        lo = np.asarray(spec.low if spec.low is not None else [-1.0] * spec.dim, dtype=float)
        hi = np.asarray(spec.high if spec.high is not None else [1.0] * spec.dim, dtype=float)
        return {
            "mean": ((lo + hi) / 2).tolist(),
            "std": ((hi - lo) / 4).tolist(),
            "min": lo.tolist(),
            "max": hi.tolist(),
        }

    norm = Normalizer(
        {"observation.state": stats(emb.state), "action": stats(emb.action)},
        {"observation.state": "mean_std", "action": "mean_std"},
    )
    return save_checkpoint(
        root,
        1,
        weights=build_vla(cfg).state_dict(),
        config={"model": cfg.to_dict(), "train": {"seed": 0}},
        normalization=norm.to_dict(),
        embodiment=emb,
    )


def run(ckpt: Path, env: str, tasks: list[str], executor: str, args: argparse.Namespace) -> dict:
    from vlastack.evaluation.rollout import evaluate

    t0 = time.perf_counter()
    res = evaluate(
        ckpt,
        env,
        tasks=tasks,
        episodes_per_task=args.episodes_per_task,
        workers=args.workers,
        max_steps=args.max_steps,
        image_size=(args.image_size, args.image_size),
        video_episodes_per_task=0,
        executor=executor,
        progress=False,
    )
    wall = time.perf_counter() - t0  # Ray's start and shutdown included
    recs = res.records
    n = len(recs)
    episode_s = sum(r.wall_s for r in recs)
    return {
        "env": env,
        "executor": executor,
        "workers": args.workers,
        "episodes": n,
        "errors": sum(r.status == "error" for r in recs),
        "steps": sum(r.steps for r in recs),
        "success_rate": res.success_rate,
        "wall_s": round(wall, 2),
        "episodes_per_hour": round(n / wall * 3600, 1),
        "steady_episodes_per_hour": round(n / episode_s * args.workers * 3600, 1),
        "outcomes": [(r.task, r.episode, r.seed, r.status, r.steps) for r in recs],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--envs", default="metaworld,pusht", help="metaworld and/or pusht")
    ap.add_argument("--executors", default="pool,ray")
    ap.add_argument("--episodes-per-task", type=int, default=6)
    ap.add_argument("--max-steps", type=int, default=100)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    suites = {
        "metaworld": ("metaworld/mt10", ["metaworld/reach-v3", "metaworld/push-v3"]),
        "pusht": ("pusht", ["pusht"]),
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.envs.split(","):
            env, tasks = suites[name]
            ckpt = tiny_checkpoint(Path(tmp) / name, tasks[0])
            for ex in args.executors.split(","):
                rows.append(run(ckpt, env, tasks, ex, args))
    for name in args.envs.split(","):
        same = [r for r in rows if r["env"] == suites[name][0]]
        for r in same:
            r["same_outcomes_as_pool"] = r["outcomes"] == same[0]["outcomes"]
    print(
        f"{args.episodes_per_task} episodes/task, <= {args.max_steps} steps, "
        f"{args.image_size}x{args.image_size}, {args.workers} workers, cpus={os.cpu_count()}"
    )
    print(
        f"{'env':<16}{'executor':<10}{'episodes':>9}{'errors':>7}{'success':>8}{'wall s':>8}"
        f"{'ep/h':>9}{'steady ep/h':>13}{'same':>6}"
    )
    for r in rows:
        print(
            f"{r['env']:<16}{r['executor']:<10}{r['episodes']:>9}{r['errors']:>7}"
            f"{r['success_rate'] or 0:>8.2f}{r['wall_s']:>8.1f}{r['episodes_per_hour']:>9.0f}"
            f"{r['steady_episodes_per_hour']:>13.0f}{str(r['same_outcomes_as_pool']):>6}"
        )
    for r in rows:
        del r["outcomes"]
    print(json.dumps({"bench": "eval_scale", "rows": rows}))


if __name__ == "__main__":
    main()
