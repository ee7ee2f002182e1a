"""Episodes per hour on ALOHA (its own venv): one client, the process pool and Ray tasks.

A tiny random vlastack VLA checkpoint for ALOHA (14-d state and actions, cam_high, small CNN,
L1 head, 8-action chunks) is evaluated on ``aloha/transfer_cube`` three ways with the same
episodes (seeds, max steps, execute horizon): ``one-client`` (``evaluate_remote``: one client
process runs every episode in order, the default of ``vlastack eval --env aloha/...``), ``pool``
and ``ray`` (``evaluate_remote_sharded``: one episode per job on ``--workers`` processes / Ray
tasks, each serving the policy and driving its own .venv-aloha client; Ray is a local instance
started on demand). Reported per run: end-to-end episodes/hour (wall time including starting
workers, Ray, the policies and the MuJoCo clients: what a user waits for), steady-state
episodes/hour (episodes / summed episode time x workers), and whether the per-episode outcomes
equal the one-client run's. Needs ``.venv-aloha``. Prints a table and a last-line JSON.

    python benchmarks/bench_eval_remote_scale.py --episodes 8 --max-steps 100 --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

SIM = "aloha/transfer_cube"


def tiny_aloha_checkpoint(root: Path) -> Path:
    import torch

    from vlastack.data.normalization import Normalizer
    from vlastack.models.vla import VLAConfig, build_vla
    from vlastack.training.checkpoint import save_checkpoint

    torch.manual_seed(0)
    cfg = VLAConfig(
        action_dim=14,
        action_horizon=8,
        obs_horizon=1,
        state_dim=14,
        cameras=["cam_high"],
        image_size=(32, 32),
        width=32,
        vision="small_cnn",
        vision_kwargs={"width": 8, "num_blocks": 2, "out_dim": 32},
        vision_pooled=True,
        language="none",
        head="l1",
        head_kwargs={"width": 32, "depth": 1, "num_heads": 2, "resnet_blocks": 1},
    )
    stats = {
        "observation.state": {"mean": [0.0] * 14, "std": [1.0] * 14},
        "action": {"mean": [0.0] * 14, "std": [0.05] * 14},
    }
    norm = Normalizer(stats, {"observation.state": "mean_std", "action": "mean_std"})
    return save_checkpoint(
        root,
        1,
        weights=build_vla(cfg).state_dict(),
        config={"model": cfg.to_dict(), "train": {"seed": 0}},
        normalization=norm.to_dict(),
        embodiment=None,
    )


def run(ckpt: Path, how: str, args: argparse.Namespace) -> dict:
    from vlastack.evaluation.remote import evaluate_remote
    from vlastack.evaluation.remote_sharded import evaluate_remote_sharded

    kw = dict(
        episodes=args.episodes,
        seed=0,
        max_steps=args.max_steps,
        execute_horizon=args.execute_horizon,
        progress=False,
    )
    t0 = time.perf_counter()
    if how == "one-client":
        res = evaluate_remote(str(ckpt), SIM, **kw)
        workers = 1
    else:
        res = evaluate_remote_sharded(str(ckpt), SIM, workers=args.workers, executor=how, **kw)
        workers = args.workers
    wall = time.perf_counter() - t0  # Ray's start and shutdown included
    recs = res.records
    n = len(recs)
    episode_s = sum(r.wall_s or 0.0 for r in recs)
    return {
        "run": how,
        "workers": workers,
        "episodes": n,
        "errors": sum(r.status == "error" for r in recs),
        "steps": sum(r.steps for r in recs),
        "wall_s": round(wall, 2),
        "episodes_per_hour": round(n / wall * 3600, 1),
        "steady_episodes_per_hour": round(n / episode_s * workers * 3600, 1) if episode_s else None,
        "outcomes": [
            (r.episode, r.seed, r.status, r.steps, r.initial_state_sha, r.mean_squared_jerk)
            for r in recs
        ],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="one-client,pool,ray")
    ap.add_argument("--episodes", type=int, default=8)
    ap.add_argument("--max-steps", type=int, default=100)
    ap.add_argument("--execute-horizon", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = tiny_aloha_checkpoint(Path(tmp) / "ckpt")
        rows = [run(ckpt, how, args) for how in args.runs.split(",")]
    ref = rows[0]["outcomes"]
    print(
        f"{'run':<11} {'workers':>7} {'episodes':>8} {'wall s':>8} {'ep/h':>8} {'steady ep/h':>11}"
    )
    for r in rows:
        r["same_outcomes_as_first"] = r["outcomes"] == ref
        print(
            f"{r['run']:<11} {r['workers']:>7} {r['episodes']:>8} {r['wall_s']:>8} "
            f"{r['episodes_per_hour']:>8} {r['steady_episodes_per_hour']!s:>11}"
            f"  same outcomes: {r['same_outcomes_as_first']}"
        )
    for r in rows:
        del r["outcomes"]
    print(json.dumps({"env": SIM, **vars(args), "rows": rows, "load_avg": os.getloadavg()}))


if __name__ == "__main__":
    main()
