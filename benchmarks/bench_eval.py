"""Rollout throughput of ``evaluate()`` on Meta-World at 128×128 beside the raw simulator rate.

A fixed small policy (a seeded linear map from state to an 8-step chunk, ~0.05 ms) keeps the
policy out of the way. Measured: the raw simulator loop (reset + step + render, one process, no
harness), then ``evaluate`` with 1 and 2 spawned workers. Harness overhead (target ≤ 20%) =
episode wall time − simulator time − policy time, over simulator + policy time, summed over
episodes; end-to-end rates also include spawning workers and building envs. Prints a table and
a last-line JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")


class BenchPolicy:
    """Seeded linear state→chunk policy with H=8, A=4; picklable by reference for workers."""

    def __init__(self, action_horizon: int = 8, state_dim: int = 4, action_dim: int = 4) -> None:
        rng = np.random.default_rng(0)
        self.weight = rng.normal(0, 0.3, (state_dim, action_horizon * action_dim))
        self.shape = (action_horizon, action_dim)
        self.metadata = {"execute_horizon": action_horizon}

    def reset(self) -> None:
        pass

    def infer(self, obs: dict) -> dict:
        s = np.asarray(obs["observation.state"], dtype=np.float64)
        return {"actions": np.tanh(s @ self.weight).reshape(self.shape).astype(np.float32)}


def raw_rate(tasks: list[str], episodes: int, max_steps: int, size: int, seed: int) -> dict:
    """The simulator alone: same tasks, seeds, steps and actions as the harness runs."""
    from vlastack.envs import make_env
    from vlastack.evaluation.rollout import episode_seed

    policy = BenchPolicy()
    steps = 0
    env_s = policy_s = 0.0
    for ti, task in enumerate(tasks):
        env = make_env(task, image_size=(size, size))
        for ep in range(episodes):
            t0 = time.perf_counter()
            obs, _ = env.reset(seed=episode_seed(seed, ti, ep, episodes))
            env_s += time.perf_counter() - t0
            chunk: list[np.ndarray] = []
            for _ in range(max_steps):
                if not chunk:
                    t0 = time.perf_counter()
                    chunk = list(policy.infer(obs)["actions"])
                    policy_s += time.perf_counter() - t0
                t0 = time.perf_counter()
                obs, _r, term, trunc, info = env.step(chunk.pop(0))
                env_s += time.perf_counter() - t0
                steps += 1
                if info.get("success") or term or trunc:
                    break
        env.close()
    return {"steps": steps, "env_s": env_s, "policy_s": policy_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tasks", default="metaworld/reach-v3,metaworld/push-v3")
    ap.add_argument("--episodes-per-task", type=int, default=4)
    ap.add_argument("--max-steps", type=int, default=80)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--workers", default="1,2")
    args = ap.parse_args()
    from vlastack.evaluation.rollout import evaluate

    tasks = args.tasks.split(",")
    raw = raw_rate(tasks, args.episodes_per_task, args.max_steps, args.image_size, 0)
    rows = [
        {
            "mode": "raw simulator",
            "workers": 1,
            "steps": raw["steps"],
            "steps_per_s": raw["steps"] / raw["env_s"],
            "sim+policy steps/s": raw["steps"] / (raw["env_s"] + raw["policy_s"]),
            "end_to_end_steps_per_s": None,
            "overhead_pct": 0.0,
        }
    ]
    for w in (int(x) for x in args.workers.split(",")):
        res = evaluate(
            BenchPolicy,
            tasks[0],  # the env family; ``tasks`` lists what runs
            tasks=tasks,
            episodes_per_task=args.episodes_per_task,
            seed=0,
            workers=w,
            max_steps=args.max_steps,
            image_size=(args.image_size, args.image_size),
            progress=False,
        )
        steps = sum(r.steps for r in res.records)
        episode_s = sum(r.wall_s for r in res.records)
        env_s = sum(r.extra["env_s"] for r in res.records)
        policy_s = sum(r.extra["policy_s"] for r in res.records)
        rows.append(
            {
                "mode": "evaluate()",
                "workers": w,
                "steps": steps,
                "steps_per_s": steps / episode_s * w,  # steady state, all workers together
                "sim+policy steps/s": steps / (env_s + policy_s),
                "end_to_end_steps_per_s": steps / res.summary["timing"]["wall_s"],
                "overhead_pct": 100 * (episode_s - env_s - policy_s) / (env_s + policy_s),
            }
        )
    print(
        f"Meta-World {args.image_size}x{args.image_size}, tasks {tasks}, "
        f"{args.episodes_per_task} episodes/task, ≤{args.max_steps} steps, cpus={os.cpu_count()}"
    )
    print(
        f"{'mode':<15}{'workers':>8}{'steps':>7}{'steps/s':>10}{'sim+pol/s':>11}"
        f"{'end-to-end/s':>14}{'overhead %':>12}"
    )
    for r in rows:
        e2e = r["end_to_end_steps_per_s"]
        print(
            f"{r['mode']:<15}{r['workers']:>8}{r['steps']:>7}{r['steps_per_s']:>10.1f}"
            f"{r['sim+policy steps/s']:>11.1f}{'-' if e2e is None else f'{e2e:.1f}':>14}"
            f"{r['overhead_pct']:>12.1f}"
        )
    print(json.dumps({"bench": "eval", "rows": rows}))


if __name__ == "__main__":
    main()
