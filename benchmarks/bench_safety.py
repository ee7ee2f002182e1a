"""Cost of the robot runner's safety layer per control tick (issue 27).

Times ``SafetyFilter.command`` (the whole per-tick guard: finiteness check, hold selection, range
clamp, per-tick change and velocity limit, counters) on the tick path, for action sizes 4 (Meta-
World), 6 (SO-100), 14 (ALOHA) and 32, in four regimes: clean actions inside the limits, every
action out of range (clamped and rate-limited, one log line per run of ticks), every action NaN
(hold), and ticks with no action yet (wait). Beside it, a bare ``np.clip`` to the range as the
floor any clamp pays. Each regime runs ``--ticks`` ticks after a warm-up, timing every call;
rounds are interleaved so machine load hits every row alike.

    .venv/bin/python benchmarks/bench_safety.py [--ticks 20000] [--rounds 5]

Prints a table, then one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from vlastack.embodiment import EmbodimentSpec, VectorSpec  # noqa: E402
from vlastack.robot.safety import SafetyFilter, limits_for  # noqa: E402

REGIMES = ("clean", "out_of_range", "nan", "wait", "np.clip only")


def _filter(dim: int) -> SafetyFilter:
    names = [f"j{i}" for i in range(dim)]
    spec = EmbodimentSpec(
        "bench", [], VectorSpec(names), VectorSpec(names, low=[-1.0] * dim, high=[1.0] * dim), 50
    )
    return SafetyFilter(limits_for(names, 50.0, robot=spec, overrides={"max_delta": 0.05}))


def _actions(regime: str, dim: int, n: int) -> list[np.ndarray | None]:
    rng = np.random.default_rng(0)
    t = np.arange(n)[:, None] * 0.01 + np.arange(dim)[None, :]
    clean = 0.8 * np.sin(t)  # changes < 0.01 per tick: inside every limit
    if regime == "out_of_range":
        return list(rng.choice([-3.0, 3.0], size=(n, dim)))
    if regime == "nan":
        return list(np.full((n, dim), np.nan))
    if regime == "wait":
        return [None] * n
    return list(clean)


def time_regime(regime: str, dim: int, ticks: int) -> list[float]:
    """Microseconds per tick, one sample per tick."""
    acts = _actions(regime, dim, ticks + 200)
    hold = np.zeros(dim)
    out: list[float] = []
    if regime == "np.clip only":
        low, high = -np.ones(dim), np.ones(dim)
        for i, a in enumerate(acts):
            t0 = time.perf_counter()
            np.clip(a, low, high)
            if i >= 200:
                out.append((time.perf_counter() - t0) * 1e6)
        return out
    f = _filter(dim)
    f.reset()
    dt = 1.0 / 50
    reason = "wait" if regime == "wait" else None
    for i, a in enumerate(acts):
        t0 = time.perf_counter()
        f.command(a, i * dt, hold, reason)
        if i >= 200:
            out.append((time.perf_counter() - t0) * 1e6)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ticks", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--dims", default="4,6,14,32")
    args = ap.parse_args()
    logging.getLogger("vlastack.robot.safety").setLevel(logging.ERROR)  # time the guard, not I/O
    dims = [int(d) for d in args.dims.split(",")]
    samples: dict[tuple[int, str], list[float]] = {(d, r): [] for d in dims for r in REGIMES}
    for _ in range(args.rounds):
        for d in dims:
            for r in REGIMES:
                samples[(d, r)].extend(time_regime(r, d, args.ticks // args.rounds))
    rows = []
    for (d, r), v in samples.items():
        v.sort()
        rows.append(
            {
                "action_dim": d,
                "regime": r,
                "p50_us": round(statistics.median(v), 2),
                "p99_us": round(v[int(0.99 * (len(v) - 1))], 2),
                "max_us": round(v[-1], 1),
                "ticks": len(v),
            }
        )
    print(f"{'dim':>4} {'regime':<14} {'p50 µs':>8} {'p99 µs':>8} {'max µs':>8}")
    for row in rows:
        print(
            f"{row['action_dim']:>4} {row['regime']:<14} {row['p50_us']:>8.2f} "
            f"{row['p99_us']:>8.2f} {row['max_us']:>8.1f}"
        )
    worst = max(r["p99_us"] for r in rows if r["regime"] != "np.clip only")
    print(f"worst p99 of the safety layer: {worst:.1f} µs = {worst / 200:.3f} % of a 50 Hz tick")
    print(
        json.dumps(
            {
                "bench": "safety",
                "machine": platform.processor() or platform.machine(),
                "cpus": os.cpu_count(),
                "rows": rows,
                "worst_p99_us": worst,
            }
        )
    )


if __name__ == "__main__":
    main()
