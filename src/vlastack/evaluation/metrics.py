"""Evaluation metrics: per-episode records and their aggregates.

Success rates carry a Wilson score 95% interval (Wilson 1927; better than the normal interval
at the small n and extreme rates of robot evaluations). Smoothness is the mean squared jerk of the
actions actually executed plus the jump at chunk boundaries; latency is per policy call (one chunk).
Episodes that errored are counted apart (``errors``) and left out of ``success_rate`` (over the
completed episodes); the headline, ``headline_success_rate`` (with its own interval), counts an
errored episode as a failure, so a policy that crashes on hard seeds never looks better for it.
"""

from __future__ import annotations

import math
import resource
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

Status = Literal["success", "failure", "error"]
Z_95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (0, 1) when n == 0."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= n:
        raise ValueError(f"successes={successes} must be within 0..n={n}")
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    # Rounding can put a bound a hair past p at p = 0 or 1; the interval always contains p.
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


def mean_squared_jerk(actions: np.ndarray, dt_s: float = 1.0) -> float:
    """Mean squared jerk of executed (T, A) actions, (units/s³)² with ``dt_s`` = 1/control_hz.

    Delegates to ``vlastack.functional.smoothness`` (third backward differences) so that the
    evaluation and the runtime benchmarks share one definition. NaN with fewer than 4 actions.
    """
    from vlastack.functional.smoothness import mean_squared_jerk as _msj

    a = np.asarray(actions, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.shape[0] < 4:
        return float("nan")
    return float(_msj(a, dt_s))


def chunk_boundary_jump(actions: np.ndarray, chunk_start_steps: Sequence[int]) -> float:
    """Mean over boundaries of ‖a_first_of_new_chunk − a_last_of_previous_chunk‖₂.

    ``chunk_start_steps`` are the step indices at which a new chunk began executing (the first,
    at step 0, has no previous chunk and is skipped). NaN when there is no boundary.
    """
    from vlastack.functional.smoothness import chunk_boundary_jumps

    a = np.asarray(actions, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    starts = [s for s in chunk_start_steps if 0 < s < a.shape[0]]
    if not starts:
        return float("nan")
    return float(chunk_boundary_jumps(a, starts).mean())


def latency_stats(latencies_ms: Iterable[float]) -> dict[str, float]:
    """p50/p95/p99/mean/max of per-chunk inference latencies (ms); NaN when empty."""
    x = np.asarray(list(latencies_ms), dtype=np.float64)
    if x.size == 0:
        nan = float("nan")
        return {"p50_ms": nan, "p95_ms": nan, "p99_ms": nan, "mean_ms": nan, "max_ms": nan}
    p50, p95, p99 = np.percentile(x, [50, 95, 99])
    return {
        "p50_ms": float(p50),
        "p95_ms": float(p95),
        "p99_ms": float(p99),
        "mean_ms": float(x.mean()),
        "max_ms": float(x.max()),
    }


def peak_memory_mb() -> dict[str, float | None]:
    """Peak resident memory of this process (MB) and, if CUDA is in use, torch's peak allocation."""
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kilobytes, macOS bytes.
    rss_mb = ru / (1024 * 1024) if sys.platform == "darwin" else ru / 1024
    cuda_mb: float | None = None
    torch = sys.modules.get("torch")  # only ask torch if the policy already imported it
    if torch is not None:
        try:
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                cuda_mb = torch.cuda.max_memory_allocated() / (1024 * 1024)
        except Exception:  # a broken CUDA install must not fail an evaluation
            cuda_mb = None
    return {"peak_rss_mb": float(rss_mb), "peak_cuda_mb": cuda_mb}


@dataclass
class EpisodeRecord:
    """One rollout. ``condition`` and ``subtasks_*`` let suites (stress, long-horizon) reuse it."""

    task: str
    episode: int
    seed: int
    status: Status
    steps: int = 0
    steps_to_success: int | None = None
    instruction: str = ""
    difficulty: str | None = None
    condition: str = "default"
    mean_squared_jerk: float | None = None
    chunk_jump: float | None = None
    num_chunks: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    peak_rss_mb: float | None = None
    peak_cuda_mb: float | None = None
    initial_state_sha: str | None = None
    video: str | None = None
    attempts: int = 1
    error: str | None = None
    wall_s: float = 0.0
    subtasks_total: int | None = None
    subtasks_completed: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in d.items():  # NaN is not JSON; store null
            if isinstance(v, float) and math.isnan(v):
                d[k] = None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EpisodeRecord:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


def _nanmean(values: Iterable[float | None]) -> float | None:
    x = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(x)) if x else None


def aggregate(records: Sequence[EpisodeRecord]) -> dict[str, Any]:
    """Aggregate one group of episodes: success with Wilson CI, errors apart, the rest averaged."""
    done = [r for r in records if r.status != "error"]
    n_success = sum(r.status == "success" for r in done)
    n = len(done)
    lo, hi = wilson_interval(n_success, n)
    n_all = len(records)
    lo_all, hi_all = wilson_interval(n_success, n_all)
    steps_ok = [r.steps_to_success for r in done if r.steps_to_success is not None]
    latencies = [x for r in records for x in r.latencies_ms]
    out: dict[str, Any] = {
        "episodes": len(records),
        "completed": n,
        "successes": n_success,
        "errors": len(records) - n,
        "success_rate": n_success / n if n else None,
        "ci95_low": lo if n else None,
        "ci95_high": hi if n else None,
        "headline_success_rate": n_success / n_all if n_all else None,
        "headline_ci95_low": lo_all if n_all else None,
        "headline_ci95_high": hi_all if n_all else None,
        "steps_to_success_mean": float(np.mean(steps_ok)) if steps_ok else None,
        "steps_to_success_median": float(np.median(steps_ok)) if steps_ok else None,
        "mean_squared_jerk": _nanmean(r.mean_squared_jerk for r in done),
        "chunk_jump": _nanmean(r.chunk_jump for r in done),
        "latency": {k: (None if math.isnan(v) else v) for k, v in latency_stats(latencies).items()},
        "num_chunks": int(sum(r.num_chunks for r in records)),
        "peak_rss_mb": max((r.peak_rss_mb for r in records if r.peak_rss_mb), default=None),
        "peak_cuda_mb": max((r.peak_cuda_mb for r in records if r.peak_cuda_mb), default=None),
    }
    chains = [r.subtasks_completed for r in done if r.subtasks_completed is not None]
    if chains:
        # CALVIN-style: average number of subtasks completed in a row, and P(chain >= k).
        total = max(r.subtasks_total or 0 for r in done) or max(chains)
        out["chain_length_mean"] = float(np.mean(chains))
        out["chain_success_at"] = {
            str(k): float(np.mean([c >= k for c in chains])) for k in range(1, total + 1)
        }
    return out


def _group(records: Sequence[EpisodeRecord], key: str) -> dict[str, list[EpisodeRecord]]:
    groups: dict[str, list[EpisodeRecord]] = {}
    for r in records:
        groups.setdefault(str(getattr(r, key) or "unknown"), []).append(r)
    return groups


def summarize(
    records: Sequence[EpisodeRecord], baseline_condition: str = "default"
) -> dict[str, Any]:
    """Overall, per-task, per-difficulty and (when several) per-condition aggregates.

    With several conditions (stress suites), each non-baseline condition also gets
    ``drop`` = baseline success rate − its success rate (positive = worse under perturbation).
    """
    out: dict[str, Any] = {
        "overall": aggregate(records),
        "per_task": {k: aggregate(v) for k, v in sorted(_group(records, "task").items())},
    }
    if any(r.difficulty for r in records):
        out["per_difficulty"] = {
            k: aggregate(v) for k, v in sorted(_group(records, "difficulty").items())
        }
    conditions = _group(records, "condition")
    if len(conditions) > 1:
        per_cond = {k: aggregate(v) for k, v in conditions.items()}
        base = per_cond.get(baseline_condition, {}).get("success_rate")
        for agg in per_cond.values():
            rate = agg["success_rate"]
            agg["drop"] = base - rate if (base is not None and rate is not None) else None
        out["per_condition"] = per_cond
        out["baseline_condition"] = baseline_condition
    return out
