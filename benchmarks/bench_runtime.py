"""Action-runtime strategies under simulated inference delay (issue 7, REFERENCE.md §3.5–3.7).

A position-controlled point robot tracks a smooth 2-D target at 20 Hz and 50 Hz. The policy is a
flow-matching toy (``FlowTrackingPolicy``): each chunk (one second long) is sampled with 10 Euler
steps around the true target with its own smooth error (std --sigma), so consecutive chunks
disagree the way a trained policy's do; each inference takes --delays ms. By default time is
virtual (``SimClock``/``SimExecutor``: delays exact, results independent of machine load);
``--wall-clock`` runs the same code with real threads and sleeps. Per strategy: missed control
ticks (no fresh command at the deadline), the discontinuity |Δ²x| where the executing chunk
changes (vs. inside chunks), mean squared jerk and tracking RMSE.

    .venv/bin/python benchmarks/bench_runtime.py [--seconds 10] [--delays 100 200]

``vlastack bench runtime`` is the suite form of ``--sim`` (several policies, tasks, episodes,
Wilson intervals and a results page). ``--sim metaworld/<task> --checkpoint CKPT`` runs a trained policy in Meta-World instead
(``simulate_env``). The control rate is emulated: the runtime's virtual clock ticks at each
--rates value while every tick applies exactly one env step (Meta-World's native step is 1/80 s),
so a delay of δ ms costs δ·Hz/1000 ticks. A missed tick sends a hold command (zero motion, last
gripper command). Per strategy, averaged over --seeds episodes (env seeds 0..n-1): success rate,
ticks to success, missed ticks, the command jump ‖a_t − a_{t−1}‖ at chunk switches and inside
chunks, and mean squared jerk of the commands and of the measured hand position. ``rtc`` runs
only for flow-matching checkpoints.

    .venv/bin/python benchmarks/bench_runtime.py --sim metaworld/drawer-open-v3 \
        --checkpoint runs/x/checkpoints/last --delays 100 --seeds 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from typing import Any

import numpy as np
import torch

from vlastack.experiments.realtime import metaworld_hold, nanmean, sim_strategies, strategy_label
from vlastack.serving.runtime import make_runtime
from vlastack.serving.simulate import SimClock, SimExecutor, simulate
from vlastack.serving.toy import FlowTrackingPolicy


def target(t: float) -> np.ndarray:
    # Lissajous at 0.25 Hz: peak speed ~1.6 units/s, all derivatives bounded.
    w = 2 * np.pi * 0.25
    return np.array([np.sin(w * t), 0.5 * np.sin(2 * w * t)])


def strategies(horizon: int, hz: float) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        ("sync (execute H/2)", "sync", {"execute_horizon": horizon // 2}),
        ("ensemble (ACT m=0.01)", "ensemble", {"m": 0.01}),
        ("async weighted_avg g=0.5", "async", {"threshold": 0.5, "control_hz": hz}),
        (
            "async latest_only g=0.5",
            "async",
            {"threshold": 0.5, "aggregate": "latest_only", "control_hz": hz},
        ),
        ("rtc g=0.5 beta=5 exp", "rtc", {"threshold": 0.5, "control_hz": hz}),
    ]


def run_sim(args: argparse.Namespace) -> None:
    import time

    from vlastack.envs import make_env
    from vlastack.policy import Policy
    from vlastack.serving.simulate import simulate_env

    torch.set_num_threads(args.threads)
    policy = Policy.from_checkpoint(args.checkpoint)
    env = make_env(
        args.sim, camera=policy.cameras[0] if policy.cameras else None, image_size=policy.image_size
    )
    keys = (
        "success",
        "ticks",
        "missed_ticks",
        "inferences",
        "boundary_jump",
        "within_chunk_jump",
        "mean_sq_jerk_action",
        "mean_sq_jerk_state",
    )
    header = (
        f"{'Hz':>3} {'delay':>6} {'strategy':<26} {'success':>7} {'ticks':>6} {'missed':>7} "
        f"{'infers':>6} {'jump@switch':>11} {'jump@inside':>11} {'jerk² cmd':>10} {'jerk² hand':>10}"
    )
    print(f"# {args.sim}  checkpoint {args.checkpoint}  H={policy.action_horizon}", flush=True)
    print(header)
    print("-" * len(header))
    rows = []
    t_start = time.perf_counter()
    for hz in args.rates:
        for delay_ms in args.delays:
            for key, name, kw in sim_strategies(policy, hz, delay_ms):
                if args.strategies and name not in args.strategies:
                    continue
                label = strategy_label(key, kw, policy)
                per_seed = []
                for seed in range(args.seeds):
                    clock = SimClock()
                    extra = {"executor": SimExecutor(clock, delay_ms / 1000), "clock": clock}
                    with make_runtime(name, policy, **kw, **extra) as rt:
                        res = simulate_env(
                            rt,
                            env,
                            hz,
                            args.max_ticks,
                            clock,
                            seed=seed,
                            hold_action=metaworld_hold,
                            state_dims=slice(0, 3),
                        )
                    per_seed.append(res.row())
                row: dict[str, Any] = {k: nanmean([float(r[k]) for r in per_seed]) for k in keys}
                row.update(
                    {
                        "label": label,
                        "strategy": name,
                        "control_hz": hz,
                        "delay_ms": delay_ms,
                        "episodes": per_seed,
                    }
                )
                rows.append(row)
                print(
                    f"{hz:>3.0f} {delay_ms:>4.0f}ms {label:<26} {row['success']:>7.2f} "
                    f"{row['ticks']:>6.1f} {row['missed_ticks']:>7.1f} {row['inferences']:>6.1f} "
                    f"{row['boundary_jump']:>11.4f} {row['within_chunk_jump']:>11.4f} "
                    f"{row['mean_sq_jerk_action']:>10.3g} {row['mean_sq_jerk_state']:>10.3g}",
                    flush=True,
                )
    env.close()
    print(
        json.dumps(
            {
                "bench": "runtime_sim",
                "time": "virtual",
                "env": args.sim,
                "checkpoint": str(args.checkpoint),
                "action_horizon": policy.action_horizon,
                "execute_horizon": policy.execute_horizon,
                "max_ticks": args.max_ticks,
                "seeds": args.seeds,
                "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
                "wall_s": round(time.perf_counter() - t_start, 1),
                "rows": rows,
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=float, default=10.0, help="control time per run")
    ap.add_argument("--rates", type=float, nargs="+", default=[20.0, 50.0])
    ap.add_argument(
        "--delays", type=float, nargs="+", default=[100.0, 200.0], help="inference delay, ms"
    )
    ap.add_argument("--sigma", type=float, default=0.1, help="per-chunk model error std")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument(
        "--wall-clock", action="store_true", help="real time and threads instead of virtual time"
    )
    ap.add_argument(
        "--sim", help="run a checkpoint in this simulator task, e.g. metaworld/reach-v3"
    )
    ap.add_argument("--checkpoint", help="checkpoint folder for --sim")
    ap.add_argument("--max-ticks", type=int, default=250, help="--sim: episode length cap")
    ap.add_argument(
        "--strategies", nargs="+", help="--sim: only these (sync, ensemble, async, rtc)"
    )
    ap.add_argument(
        "--threads", type=int, default=1, help="--sim: torch threads (virtual time: speed only)"
    )
    args = ap.parse_args()
    if args.sim:
        if not args.checkpoint:
            ap.error("--sim needs --checkpoint CKPT")
        os.environ.setdefault("MUJOCO_GL", "egl")
        run_sim(args)
        return
    torch.set_num_threads(1)  # tiny ops: extra threads only contend on a 2-core machine

    rows = []
    header = (
        f"{'Hz':>3} {'delay':>6} {'strategy':<26} {'missed':>7} {'infers':>6} "
        f"{'jump@switch':>11} {'jump@inside':>11} {'jerk² (u/s³)²':>14} {'rmse':>7}"
    )
    print(header)
    print("-" * len(header))
    keys = (
        "missed_ticks",
        "inferences",
        "boundary_jump",
        "within_chunk_jump",
        "mean_sq_jerk",
        "tracking_rmse",
    )
    for hz in args.rates:
        horizon = int(hz)  # one-second chunks
        for delay_ms in args.delays:
            for label, name, kw in strategies(horizon, hz):
                per_seed = []
                for seed in range(args.seeds):
                    policy = FlowTrackingPolicy(target, hz, horizon, sigma=args.sigma, seed=seed)
                    if args.wall_clock:
                        policy.delay_s = delay_ms / 1000
                        warm = policy.infer({"time_s": 0.0})[
                            "actions"
                        ]  # first autograd call is slow
                        policy.infer_guided({"time_s": 0.0}, warm[: horizon // 2], 1)
                        clock, extra = None, {}
                    else:
                        clock = SimClock()
                        extra = {"executor": SimExecutor(clock, delay_ms / 1000), "clock": clock}
                    with make_runtime(name, policy, **kw, **extra) as rt:
                        res = simulate(
                            rt, target, hz, int(args.seconds * hz), warmup_ticks=1, clock=clock
                        )
                    per_seed.append(res.row())
                row = {k: float(np.mean([r[k] for r in per_seed])) for k in keys}
                row.update(
                    {"label": label, "strategy": name, "control_hz": hz, "delay_ms": delay_ms}
                )
                rows.append(row)
                print(
                    f"{hz:>3.0f} {delay_ms:>4.0f}ms {label:<26} {row['missed_ticks']:>7.1f} {row['inferences']:>6.1f} "
                    f"{row['boundary_jump']:>11.4f} {row['within_chunk_jump']:>11.4f} {row['mean_sq_jerk']:>14.0f} "
                    f"{row['tracking_rmse']:>7.4f}",
                    flush=True,
                )
    print(
        json.dumps(
            {
                "bench": "runtime",
                "time": "wall" if args.wall_clock else "virtual",
                "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
                "seconds": args.seconds,
                "sigma": args.sigma,
                "seeds": args.seeds,
                "rows": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
