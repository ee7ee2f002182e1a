"""What a suite trains on and how: its dataset (collected by the experts when not given) and one
training run with a suite's budget (``train_one``, above the evaluation layer: it calls ``train``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
) -> tuple[Any, float]:
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
    result = train(cfg, build)
    if result.stopped_by in ("SIGINT", "SIGTERM"):
        # train() saved a checkpoint and returned; a suite must stop, not go on to evaluate
        raise KeyboardInterrupt(f"training stopped by {result.stopped_by}; run dir {out}")
    return result, time.perf_counter() - t0


__all__ = ["ensure_dataset", "split_envs", "train_one"]
