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
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from typing import Any

import numpy as np
import torch

from vlastack.serving.runtime import SimClock, SimExecutor, make_runtime, simulate
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
    args = ap.parse_args()
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
