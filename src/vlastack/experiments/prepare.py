"""What a suite trains on and how: its dataset (collected by the experts when not given) and one
training run with a suite's budget (``train_one``, above the evaluation layer: it calls ``train``),
its wall time and the peak memory during it (``PeakMemory``), the ``--seeds`` list parser, and
the record of a finished (condition, seed) run that lets an interrupted suite resume
(``finished_run`` / ``record_finished_run``).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vlastack.atomic import write_text
from vlastack.errors import ConfigError
from vlastack.experiments.common import register_env_names


def ensure_dataset(
    env: str,
    data: str | Path | None,
    out: Path,
    *,
    episodes_per_task: int,
    image_size: tuple[int, int],
    seed: int,
    workers: int,
    progress: bool,
    executor: Any = None,
) -> Path:
    """``data`` if given (must exist), else expert demonstrations collected into ``out``
    (``env`` may list several envs or suites, comma-separated: one dataset for all)."""
    if data is not None:
        p = Path(data)
        if not (p / "meta" / "info.json").exists():
            raise ConfigError(
                f"--data {p}: not a LeRobot v3 dataset (no meta/info.json); omit --data to "
                "collect one"
            )
        return p
    from vlastack.envs.collect import collect

    names = split_envs(env)
    register_env_names(names)
    for name in names:  # collect appends each env's tasks to the same dataset (and resumes)
        collect(
            name,
            out,
            episodes_per_task=episodes_per_task,
            image_size=image_size,
            seed=seed,
            workers=max(1, workers),
            progress=progress,
            executor=executor,
        )
    return out


def split_envs(env: str) -> list[str]:
    """``"metaworld/door-open-v3,metaworld/drawer-open-v3"`` -> the names; one name -> [name]."""
    names = [e.strip() for e in env.split(",") if e.strip()]
    if not names:
        raise ConfigError(f"env {env!r}: name at least one environment or suite")
    return names


def parse_seeds(text: str | int | list[int], field: str = "--seeds") -> list[int]:
    """``"0,1,2"`` (or an int, or a list) -> distinct seeds in order; a clear error otherwise."""
    if isinstance(text, int):
        return [text]
    items = text if isinstance(text, list) else [x.strip() for x in str(text).split(",")]
    try:
        seeds = [int(x) for x in items if str(x).strip() != ""]
    except ValueError:
        raise ConfigError(
            f"{field} {text!r}: give integers separated by commas, e.g. 0,1,2"
        ) from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"{field} {text!r}: give at least one seed, each once (e.g. 0,1,2)")
    return seeds


def _rss_mb() -> float | None:
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


class PeakMemory:
    """Peak resident memory (MB) of this process while the block runs, sampled every
    ``interval_s`` from /proc/self/statm (Linux; elsewhere ``peak_mb`` stays None: the process's
    lifetime peak would mix in earlier runs), and CUDA's peak allocation when CUDA is in use."""

    def __init__(self, interval_s: float = 0.05) -> None:
        self.interval_s = interval_s
        self.peak_mb: float | None = None
        self.peak_cuda_mb: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        v = _rss_mb()
        if v is not None:
            self.peak_mb = v if self.peak_mb is None else max(self.peak_mb, v)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> PeakMemory:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.reset_peak_memory_stats()
        self._sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        import torch

        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            self.peak_cuda_mb = torch.cuda.max_memory_allocated() / 2**20


def mem_est_mb(result: Any) -> float | None:
    """The trainer's own estimate of one run's training memory (parameters, gradients, AdamW
    states and one micro-batch's activations, ``training/probes.py``), MB; None if it made none."""
    mem = getattr(result, "memory", None)
    return None if mem is None else mem.total_bytes / 2**20


def train_one(
    recipe: str,
    data: Path,
    out: Path,
    *,
    steps: int,
    max_minutes: float | None,
    model: dict[str, Any],
    seed: int,
    progress: bool,
    build: Callable[[Any], Any] | None = None,
    extra_overrides: list[str] | None = None,
) -> tuple[Any, float, PeakMemory]:
    """Train ``recipe`` on ``data`` into ``out`` with the suite's budget; returns the
    ``TrainResult``, its wall seconds and the peak memory while it ran."""
    from vlastack.training.config import TrainConfig
    from vlastack.training.loop import train

    cfg = TrainConfig.from_recipe(recipe, list(extra_overrides or []))
    cfg.data = [str(data)]
    cfg.out_dir = str(out)
    cfg.steps = steps
    cfg.max_minutes = max_minutes
    cfg.seed = seed
    cfg.log = "none"
    cfg.progress = progress
    cfg.model = {**cfg.model, **model}
    cfg.warmup_steps = min(cfg.warmup_steps, max(1, steps // 10))
    t0 = time.perf_counter()
    with PeakMemory() as mem:
        result = train(cfg, build)
    if result.stopped_by in ("SIGINT", "SIGTERM"):
        # train() saved a checkpoint and returned; a suite must stop, not go on to evaluate
        raise KeyboardInterrupt(f"training stopped by {result.stopped_by}; run dir {out}")
    return result, time.perf_counter() - t0, mem


RUN_RECORD = "run.json"


def finished_run(run_dir: Path, budget: dict[str, Any]) -> dict[str, Any] | None:
    """The table row of a (condition, seed) run that already trained and evaluated under
    ``run_dir`` with the same ``budget``, else None: a suite stopped part way (Ctrl-C, a session
    limit) reruns only what is missing. A finished run with another budget is refused rather
    than mixed into a table it does not belong to."""
    path = run_dir / RUN_RECORD
    if not path.exists():
        return None
    try:
        rec = json.loads(path.read_text())
        row, old = rec["row"], rec["budget"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(
            f"{path}: unreadable finished-run record ({e}); delete it to rerun that run"
        ) from e
    if old != budget:
        raise ConfigError(
            f"{path}: this run finished with budget {old}, not {budget}; use another --out "
            "or delete that run folder to rerun it"
        )
    return dict(row)


def record_finished_run(run_dir: Path, budget: dict[str, Any], row: dict[str, Any]) -> None:
    """Write the record ``finished_run`` reads (atomically, after the evaluation finished)."""
    write_text(run_dir / RUN_RECORD, json.dumps({"budget": budget, "row": row}, indent=1))


__all__ = [
    "RUN_RECORD",
    "PeakMemory",
    "ensure_dataset",
    "finished_run",
    "mem_est_mb",
    "parse_seeds",
    "record_finished_run",
    "split_envs",
    "train_one",
]
