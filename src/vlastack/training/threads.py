"""Thread and data-worker counts for a training run: the cores this rank may use, shared with
its data workers, the other local ranks and the machine's other load."""

from __future__ import annotations

import os

from vlastack.training.batches import decodes_frames
from vlastack.training.config import TrainConfig
from vlastack.training.parts import TrainingParts


def cores_per_rank() -> int:
    """CPU cores this process may use, shared evenly by the ranks on this machine."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // local_ranks())


def local_ranks() -> int:
    return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def pick_workers(cfg: TrainConfig, parts: TrainingParts, device_type: str = "cpu") -> int:
    """``cfg.num_workers``, or for -1: one worker per two cores when samples decode images and the
    run is long enough (> 50 steps) to repay starting them (~2-5 s each); else 0. At most 4 on a
    CPU, where workers take cores from the step itself; at most 8 on a GPU, where the step leaves
    the cores idle and decoding is what a small policy waits on.

    Samples from the frozen-feature cache or without cameras are in memory: workers only add IPC.
    """
    if cfg.num_workers >= 0:
        return cfg.num_workers
    if not decodes_frames(parts) or cfg.steps * cfg.grad_accum <= 50:
        return 0
    return min(4 if device_type == "cpu" else 8, max(1, cores_per_rank() // 2))


def pick_threads(cfg: TrainConfig, other_load: float, num_workers: int) -> int:
    """``cfg.num_threads``, or for 0: the cores this rank can have to itself, at least 1.

    That is (cores / local ranks) - data workers - other processes' load (1-min load average
    ``other_load``, read at the start of the run, shared by the local ranks).
    Measured on the 2-core CI box under load 8-10: a cpu_default step takes 2.5 s with torch's
    default 2 threads (OpenMP threads spin-waiting for a core) and 0.1 s with 1 thread.
    """
    if cfg.num_threads > 0:
        return cfg.num_threads
    per_rank = cores_per_rank()
    return max(1, min(per_rank - num_workers, round(per_rank - other_load / local_ranks())))
