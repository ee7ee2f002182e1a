"""Per-tick latency of a hierarchical checkpoint at two rates, System 2 synchronous vs in the
background (``HierarchicalRuntime(high_level_async=...)``), on a Meta-World task.

One tick = one ``runtime.step(obs)`` (System 2 when due, System 1 when the action queue is empty,
the queue otherwise) then one env step, paced at ``--control-hz`` (the rest of each period is
slept). ``--ticks-by count`` (default) runs System 2 every ``control_hz / high_level_hz`` loop
iterations, so both modes run it equally often even when load stretches the loop; ``wall``
counts ticks of the wall clock, as ``vlastack robot`` does (on a loaded machine a stretched loop
then runs System 2 on more of its iterations). The tick latency is the ``step`` call alone
(``HierarchicalRuntime.tick_ms``), reported over all ticks and over the ticks on which System 1
computed a chunk; a tick longer than the period is a missed deadline. ``--system2-extra-ms``
adds a sleep to every System 2 call (a stand-in for a larger, slower VLM as System 2; a sleep uses
no CPU, so it shows the scheduling alone, without the contention a real slow model adds). The two modes run alternately (``--rounds`` of ``--ticks`` each, sync
first) so that load drifting on a shared machine hits both. Before measuring, each level is called
3 times (warm-up: first-call allocation and the native runner's build).

    python benchmarks/bench_two_rate.py CHECKPOINT --env metaworld/button-press-topdown-v3 \\
        --control-hz 20 --high-level-hz 1 --ticks 200 --rounds 2 --out two_rate.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np


def run_round(policy, env, args, high_level_async: bool, seed: int) -> dict:
    from vlastack.serving.hierarchy import HierarchicalRuntime

    rt = HierarchicalRuntime(
        policy,
        "sync",
        high_level_hz=args.high_level_hz,
        control_hz=args.control_hz,
        high_level_async=high_level_async,
        clock=time.monotonic if args.ticks_by == "wall" else None,
        execute_horizon=args.execute_horizon or policy.metadata.get("execute_horizon"),
    )
    rt.reset()
    obs, _ = env.reset(seed=seed)
    period = 1.0 / args.control_hz
    spec = env.embodiment.action
    low, high = np.asarray(spec.low, np.float32), np.asarray(spec.high, np.float32)
    env_ms = []
    chunk_tick = []
    next_t = time.monotonic()
    for _ in range(args.ticks):
        before = rt.last_chunk_id
        action = rt.step(obs)
        chunk_tick.append(rt.last_chunk_id != before)
        t0 = time.perf_counter()
        act = np.clip(np.asarray(action, dtype=np.float32), low, high)  # as eval clips
        obs, _r, term, trunc, _info = env.step(act)
        env_ms.append((time.perf_counter() - t0) * 1e3)
        if term or trunc:
            obs, _ = env.reset(seed=seed + 1)
        next_t += period
        time.sleep(max(0.0, next_t - time.monotonic()))
        if time.monotonic() - next_t > period:  # fell behind: the runtime skips those ticks
            next_t = time.monotonic()
    rt.close()
    ticks = np.asarray(rt.tick_ms)
    return {
        **rt.summary(),
        "tick_ms": [round(float(x), 3) for x in ticks],
        "chunk_tick": chunk_tick,
        "high_level_ms": [round(float(x), 3) for x in rt.high_level_ms],
        "missed_deadlines": int((ticks > 1e3 * period).sum()),
        "env_ms_p50": round(float(np.median(env_ms)), 3),
    }


def pooled(rounds: list[dict], period_ms: float) -> dict:
    ticks = np.asarray([t for r in rounds for t in r["tick_ms"]])
    chunk = np.asarray([c for r in rounds for c in r["chunk_tick"]], dtype=bool)
    high = np.asarray([t for r in rounds for t in r["high_level_ms"]])
    return {
        "ticks": int(ticks.size),
        "tick_ms_p50": round(float(np.percentile(ticks, 50)), 2),
        "tick_ms_p99": round(float(np.percentile(ticks, 99)), 2),
        "tick_ms_max": round(float(ticks.max()), 2),
        "chunk_ticks": int(chunk.sum()),
        "chunk_tick_ms_p50": round(float(np.percentile(ticks[chunk], 50)), 2),
        "chunk_tick_ms_p99": round(float(np.percentile(ticks[chunk], 99)), 2),
        # the ticks System 1 only pops from its queue: what System 2 adds shows here
        "other_tick_ms_p99": round(float(np.percentile(ticks[~chunk], 99)), 2),
        "other_tick_ms_max": round(float(ticks[~chunk].max()), 2),
        "other_ticks_over_period": int((ticks[~chunk] > period_ms).sum()),
        "ticks_over_period": int((ticks > period_ms).sum()),
        "high_level_runs": sum(r["high_level_runs"] for r in rounds),
        "high_level_skipped": sum(r["high_level_skipped"] for r in rounds),
        "high_level_ms_p50": round(float(np.median(high)), 2) if high.size else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--env", default="metaworld/button-press-topdown-v3")
    ap.add_argument("--control-hz", type=float, default=20.0)
    ap.add_argument("--high-level-hz", type=float, default=1.0)
    ap.add_argument("--ticks", type=int, default=200, help="ticks per round and mode")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--execute-horizon", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--ticks-by", choices=["count", "wall"], default="count")
    ap.add_argument("--system2-extra-ms", type=float, default=0.0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    import torch

    from vlastack.envs import make_env
    from vlastack.image_size import metadata_image_size
    from vlastack.policy import Policy

    torch.set_num_threads(args.threads)
    policy = Policy.from_checkpoint(args.checkpoint, device="cpu")
    meta = dict(policy.metadata)
    cams = [str(c).removeprefix("observation.images.") for c in meta.get("cameras") or []]
    size = metadata_image_size(meta)
    env = make_env(args.env, camera=cams[0] if len(cams) == 1 else None, image_size=size, seed=0)
    obs, _ = env.reset(seed=0)
    low, high = [], []
    for _ in range(3):
        t0 = time.perf_counter()
        sub = policy.infer_high_level(obs)["subtask"]
        high.append((time.perf_counter() - t0) * 1e3)
        t0 = time.perf_counter()
        policy.infer({**obs, "subtask": sub})
        low.append((time.perf_counter() - t0) * 1e3)
    if args.system2_extra_ms > 0:
        real_high = policy.infer_high_level

        def padded(obs, **kw):
            time.sleep(args.system2_extra_ms / 1e3)
            return real_high(obs, **kw)

        policy.infer_high_level = padded  # type: ignore[method-assign]
    rounds: dict[str, list[dict]] = {"sync": [], "background": []}
    for k in range(args.rounds):
        for mode in ("sync", "background"):
            r = run_round(policy, env, args, mode == "background", seed=k)
            rounds[mode].append(r)
            print(
                f"round {k} {mode}: tick p50/p99/max {r['tick_ms_p50']}/{r['tick_ms_p99']}/"
                f"{r['tick_ms_max']} ms, System 2 runs {r['high_level_runs']} "
                f"(skipped {r['high_level_skipped']}, p50 {r['high_level_ms_p50']} ms), "
                f"missed deadlines {r['missed_deadlines']}",
                flush=True,
            )
    period_ms = 1e3 / args.control_hz
    result = {
        "checkpoint": str(args.checkpoint),
        "env": args.env,
        "control_hz": args.control_hz,
        "high_level_hz": args.high_level_hz,
        "ticks_per_round": args.ticks,
        "rounds": args.rounds,
        "torch_threads": args.threads,
        "ticks_by": args.ticks_by,
        "system2_extra_ms": args.system2_extra_ms,
        "warmup_last_ms": {"system2": round(high[-1], 2), "system1_chunk": round(low[-1], 2)},
        "host": {"cpus": os.cpu_count(), "load_avg": os.getloadavg(), "cpu": platform.processor()},
        "sync": pooled(rounds["sync"], period_ms),
        "background": pooled(rounds["background"], period_ms),
    }
    print(json.dumps({k: v for k, v in result.items()}, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps({**result, "per_round": rounds}, indent=1))


if __name__ == "__main__":
    main()
