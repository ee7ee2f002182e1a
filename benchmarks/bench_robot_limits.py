"""Where does the robot runner's change limit (default 25% of the action range per tick) start to
cost a trained policy success? (issue 27)

Runs a checkpoint through ``vlastack.robot.RobotRunner`` on the simulator adapter (``GymRobot``
over a Meta-World env) under each ``--fractions`` value of ``max_delta_fraction`` (the change
allowed per control tick, as a fraction of the action range; 1.0 = any change inside the range,
i.e. the change limit off; the range clamp stays, as ``vlastack eval`` clips to it too), on the
same held-out seeds ``vlastack demo`` evaluates on (``episode_seed(seed + EVAL_SEED, ...)``).
Success per task and overall with Wilson 95% intervals, and how many ticks were rate-limited.

Ticks run on a virtual clock (one control period per tick, no real sleeping) so machine load
cannot turn slow inferences into held ticks; ``wait`` in the output counts any tick that still
had no action within one real period (``--control-hz``, default 0.5: a 2 s budget; the limits
are per tick, so the rate does not change them).

    .venv/bin/python benchmarks/bench_robot_limits.py CKPT [--episodes 10] \
        [--fractions 1.0,0.25,0.1,0.05,0.02]

Prints a table per task and overall, then one JSON object on the last line. A stricter limit
makes failing episodes run to ``--max-ticks``, so the strict settings cost the most time.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from vlastack.demo import DEMO_TASKS, EVAL_SEED  # noqa: E402
from vlastack.evaluation.metrics import wilson_interval  # noqa: E402
from vlastack.evaluation.rollout import episode_seed  # noqa: E402
from vlastack.image_size import trained_image_size  # noqa: E402


class VirtualClock:
    """A clock that moves only when the runner sleeps: every tick lasts one control period."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)


def run(args: argparse.Namespace) -> dict:
    import torch

    from vlastack.envs import make_env
    from vlastack.policy import Policy
    from vlastack.robot.adapters import GymRobot
    from vlastack.robot.runner import RobotRunner, stale_default
    from vlastack.robot.safety import SafetyFilter, limits_for

    torch.set_num_threads(args.threads)
    logging.getLogger("vlastack.robot").setLevel(logging.ERROR)
    policy = Policy.from_checkpoint(args.checkpoint)
    stats = policy.normalizer.stats
    size = trained_image_size(args.checkpoint)
    fractions = [float(f) for f in args.fractions.split(",")]
    tasks = args.tasks.split(",") if args.tasks else list(DEMO_TASKS)
    rows: dict[str, dict] = {}
    for ti, task in enumerate(tasks):
        env = make_env(task, camera=args.camera, image_size=size)
        robot = GymRobot(env)
        seeds = [
            episode_seed(args.seed + EVAL_SEED, ti, ep, args.episodes)
            for ep in range(args.episodes)
        ]
        for frac in fractions:
            limits = limits_for(
                list(robot.embodiment.action.names),
                args.control_hz,
                checkpoint=policy.embodiment,
                robot=robot.embodiment,
                stats=stats,
                stale_after_s=stale_default(policy.metadata, args.control_hz),
                max_delta_fraction=frac,
            )
            key = f"{frac:g}"
            row = rows.setdefault(key, {"per_task": {}, "episodes": []})
            ok = 0
            t0 = time.perf_counter()
            for s in seeds:
                clock = VirtualClock()
                runner = RobotRunner(
                    robot,
                    policy,
                    SafetyFilter(limits),
                    runtime_kwargs={"execute_horizon": policy.execute_horizon},
                    control_hz=args.control_hz,
                    clock=clock,
                    sleep=clock.sleep,
                )
                res = runner.run_episode(max_ticks=args.max_ticks, seed=s)
                runner.close()
                ok += bool(res.success)
                if args.verbose:
                    print(f"  seed {s}: {res.summary()}", flush=True)
                row["episodes"].append(
                    {
                        "task": task,
                        "seed": s,
                        "success": bool(res.success),
                        "stopped": res.stopped,
                        "ticks": res.ticks,
                        "rate_limited": res.counts.get("rate_limit", 0),
                        "range_clamped": res.counts.get("range_clamp", 0),
                        "wait": res.counts.get("wait", 0),
                        "violations": res.violations,
                    }
                )
            lo, hi = wilson_interval(ok, len(seeds))
            mine = [e for e in row["episodes"] if e["task"] == task]
            row["per_task"][task] = {
                "successes": ok,
                "n": len(seeds),
                "ci95": [lo, hi],
                "rate_limited_ticks": sum(e["rate_limited"] for e in mine),
                "ticks": sum(e["ticks"] for e in mine),
            }
            print(
                f"{task:40s} max_delta {key:>5s} of range: {ok}/{len(seeds)} "
                f"[{100 * lo:.0f}, {100 * hi:.0f}]  ({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
        robot.disconnect()
    for row in rows.values():
        eps = row["episodes"]
        ok = sum(e["success"] for e in eps)
        lo, hi = wilson_interval(ok, len(eps))
        ticks = sum(e["ticks"] for e in eps)
        row["overall"] = {
            "successes": ok,
            "n": len(eps),
            "ci95": [lo, hi],
            "ticks": ticks,
            "rate_limited_ticks": sum(e["rate_limited"] for e in eps),
            "wait_ticks": sum(e["wait"] for e in eps),
            "violations": sum(e["violations"] for e in eps),
            "mean_ticks_success": (
                sum(e["ticks"] for e in eps if e["success"]) / ok if ok else None
            ),
        }
    return {
        "bench": "robot_limits",
        "checkpoint": str(args.checkpoint),
        "image_size": list(size) if size else None,
        "control_hz_virtual": args.control_hz,
        "max_ticks": args.max_ticks,
        "seeds_from": args.seed + EVAL_SEED,
        "host": {"cpus": os.cpu_count(), "machine": platform.machine()},
        "threads": args.threads,
        "fractions": rows,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--tasks", default=None, help="comma list (default: the demo's four)")
    ap.add_argument("--episodes", type=int, default=10, help="per task and fraction")
    ap.add_argument(
        "--fractions", default="1.0,0.25,0.1,0.05,0.02", help="max_delta_fraction values"
    )
    ap.add_argument("--camera", default="corner2")
    ap.add_argument("--control-hz", type=float, default=0.5)
    ap.add_argument("--max-ticks", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--verbose", action="store_true", help="one line per episode")
    args = ap.parse_args()
    out = run(args)
    tasks = list(next(iter(out["fractions"].values()))["per_task"])
    print("\nper task: successes/n (rate-limited ticks of ticks)")
    print(f"{'fraction':>8s}  " + "  ".join(f"{t.split('/')[-1][:24]:>24s}" for t in tasks))
    for key, row in out["fractions"].items():
        cells = []
        for t in tasks:
            c = row["per_task"][t]
            cells.append(f"{c['successes']}/{c['n']} ({c['rate_limited_ticks']}/{c['ticks']})")
        print(f"{key:>8s}  " + "  ".join(f"{c:>24s}" for c in cells))
    print("\nfraction  success  Wilson 95%  rate-limited ticks  waits  violations  ticks/success")
    for key, row in out["fractions"].items():
        o = row["overall"]
        print(
            f"{key:>8s}  {o['successes']:>3d}/{o['n']:<3d}  [{100 * o['ci95'][0]:.0f}, "
            f"{100 * o['ci95'][1]:.0f}]  {o['rate_limited_ticks']:>7d} of {o['ticks']:<7d}  "
            f"{o['wait_ticks']:>5d}  {o['violations']:>10d}  "
            + (f"{o['mean_ticks_success']:.1f}" if o["mean_ticks_success"] else "-")
        )
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
