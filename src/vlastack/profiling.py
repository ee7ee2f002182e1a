"""Per-stage latency of one policy call (preprocess, normalize, vision, language, backbone, head,
unnormalize): users of the incumbents report latency far above the papers' and cannot tell
which stage costs it. The policy and model mark their stages with ``stage(name)``; it does
nothing unless ``record_stages()`` is active, so serving pays one global read per stage.

Written here rather than with ``torch.profiler``: the profiler adds per-op overhead to every
kernel (it would inflate the numbers it reports) and needs post-processing to map ops to stages.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

# Stages in call order; "other" is what the policy call spends outside them (Python glue).
STAGES = (
    "preprocess",
    "normalize",
    "language",
    "vision",
    "backbone",
    "head",
    "unnormalize",
)

_RECORDING: dict[str, float] | None = None  # stage -> seconds, within the current call
_SYNC = False  # synchronize CUDA at stage edges (kernels run asynchronously)


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """Time the block as stage ``name`` while ``record_stages()`` is active; else a no-op."""
    rec = _RECORDING
    if rec is None:
        yield
        return
    if _SYNC:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    try:
        yield
    finally:
        if _SYNC:
            torch.cuda.synchronize()
        rec[name] = rec.get(name, 0.0) + time.perf_counter() - t0


@contextlib.contextmanager
def record_stages(cuda_sync: bool = False) -> Iterator[dict[str, float]]:
    """Collect the stages of the calls made inside the block (seconds, summed per stage)."""
    global _RECORDING, _SYNC
    old, old_sync = _RECORDING, _SYNC
    _RECORDING, _SYNC = {}, cuda_sync and torch.cuda.is_available()
    try:
        yield _RECORDING
    finally:
        _RECORDING, _SYNC = old, old_sync


def synthetic_observation(policy: Any, seed: int = 0) -> dict[str, Any]:
    """An observation of the right shapes for ``policy``: random uint8 images (H, W, 3) per
    camera at the policy's image size, a random state, and an instruction. A policy of another
    checkpoint format that has its own ``example_observation(seed)`` (the LeRobot imports) is
    asked for it instead."""
    example = getattr(policy, "example_observation", None)
    if callable(example):
        return dict(example(seed))
    rng = np.random.default_rng(seed)
    h, w = (int(x) for x in policy.image_size)
    obs: dict[str, Any] = {
        f"observation.images.{cam}": rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        for cam in policy.cameras
    }
    if policy.state_dim:
        obs["observation.state"] = rng.normal(size=policy.state_dim).astype(np.float32)
    obs["task"] = policy.default_prompt or "pick up the object"
    return obs


def profile_policy(
    policy: Any, obs: dict[str, Any], *, iters: int = 50, warmup: int = 5
) -> dict[str, Any]:
    """Call ``policy.infer(obs)`` ``warmup + iters`` times; per stage and in total: p50/p95/mean
    ms over the timed calls and the share of the mean total. Stages a model does not have
    (no language model, no trunk) are left out."""
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    for _ in range(warmup):
        policy.infer(obs)
    per_call: list[dict[str, float]] = []
    totals: list[float] = []
    on_cuda = getattr(getattr(policy, "device", None), "type", "cpu") == "cuda"
    for _ in range(iters):
        with record_stages(cuda_sync=on_cuda) as rec:
            t0 = time.perf_counter()
            policy.infer(obs)
            totals.append(time.perf_counter() - t0)
        per_call.append(dict(rec))
    total_ms = np.asarray(totals) * 1e3
    mean_total = float(total_ms.mean())
    rows: list[dict[str, Any]] = []
    seen = [s for s in STAGES if any(s in c for c in per_call)]
    for name in seen:
        ms = np.asarray([c.get(name, 0.0) for c in per_call]) * 1e3
        rows.append(_row(name, ms, mean_total))
    other = total_ms - np.asarray([sum(c.values()) for c in per_call]) * 1e3
    rows.append(_row("other", np.maximum(other, 0.0), mean_total))
    return {
        "iters": iters,
        "threads": torch.get_num_threads(),
        "device": str(getattr(policy, "device", "cpu")),
        "stages": rows,
        "total": _row("total", total_ms, mean_total),
    }


def _row(name: str, ms: np.ndarray, mean_total: float) -> dict[str, Any]:
    return {
        "stage": name,
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "mean_ms": float(ms.mean()),
        "share": float(ms.mean() / mean_total) if mean_total > 0 else 0.0,
    }


def pick_inference_threads(
    policy: Any, candidates: list[int] | None = None, calls: int = 5
) -> tuple[int, dict[int, float]]:
    """Time batch-1 ``policy.infer`` at each intra-op thread count, keep the fastest (set with
    ``torch.set_num_threads``) and return it with the p50 ms of each. Measured on the 2-core
    development CPU for the demo checkpoint: 1 thread 8.4 ms, 2 threads 21.0 ms — at batch 1 the
    per-op work is too small to repay waking a second thread, but on other machines and models
    it can, so the server measures instead of guessing. The policy is reset afterwards (history
    and sampling seed as they were)."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = max(1, cores or 1)
    cands = sorted(set(candidates or [1, max(1, cores // 2), cores]))
    obs = synthetic_observation(policy)
    before = torch.get_num_threads()
    p50: dict[int, float] = {}
    try:
        for n in cands:
            torch.set_num_threads(n)
            policy.infer(obs)  # warm-up at this thread count
            ts = []
            for _ in range(max(1, calls)):
                t0 = time.perf_counter()
                policy.infer(obs)
                ts.append((time.perf_counter() - t0) * 1e3)
            p50[n] = float(np.median(ts))
    except Exception:
        torch.set_num_threads(before)
        raise
    finally:
        if hasattr(policy, "reset"):
            policy.reset()
    best = min(p50, key=lambda n: p50[n])
    torch.set_num_threads(best)
    return best, p50
