"""Checks, before any training step, that a recipe can learn from the data: clear errors for
a dataset the recipe cannot read, actions its head can never output, or too little data."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from vlastack.embodiment import EmbodimentSpec
from vlastack.errors import ConfigError, DataError
from vlastack.training.batches import first_batch
from vlastack.training.config import TrainConfig
from vlastack.training.parts import TrainablePolicy, TrainingParts


def check_action_range(
    model: Any, modes: Mapping[str, str], stats: Mapping[str, Any], source: str
) -> None:
    """Refuse a head that cannot output the data's actions: diffusion clips x̂0 to ±clip_range and
    the bins cover [−1, 1] in normalized units, while mean-std normalization leaves actions
    unbounded. If the 1st/99th percentile (else min/max) of a dim lies outside the head's range,
    every action beyond it would be clipped: the policy trains, then moves too little, silently.
    Min-max and quantile normalization map the data into [−1, 1] by construction."""
    limit = getattr(model, "action_output_range", None)
    if limit is None or modes.get("action") != "mean_std" or "action" not in stats:
        return
    st = stats["action"]
    if not all(k in st for k in ("mean", "std")):
        return
    lo_key, hi_key = ("q01", "q99") if "q01" in st and "q99" in st else ("min", "max")
    if lo_key not in st:
        return
    mean = np.asarray(st["mean"], dtype=np.float64).reshape(-1)
    std = np.maximum(np.asarray(st["std"], dtype=np.float64).reshape(-1), 1e-8)
    z = np.maximum(
        np.abs((np.asarray(st[lo_key], dtype=np.float64).reshape(-1) - mean) / std),
        np.abs((np.asarray(st[hi_key], dtype=np.float64).reshape(-1) - mean) / std),
    )
    bad = [int(i) for i in np.flatnonzero(z > limit + 1e-6)]
    if bad:
        worst = ", ".join(f"dim {i}: ±{z[i]:.2f}" for i in bad[:6])
        raise ConfigError(
            f"{source}: the action head outputs normalized actions within ±{limit:g} "
            f"({model.action_range_reason}), but mean-std normalization puts this dataset's "
            f"{lo_key}/{hi_key} actions at {worst} (in std units): they could never be "
            "produced. Use --model.normalization.action=min_max (Diffusion Policy) or quantile "
            "(OpenVLA), or for the diffusion head widen --model.head_kwargs.clip_range (Octo "
            "clips at 5)"
        )


def check_recipe_fits(name: str, vla_cfg: Any, reader: Any, emb: EmbodimentSpec) -> None:
    """Errors before training for a recipe that cannot read this dataset."""
    where = f"{reader.root}"
    if reader.num_episodes == 0 or reader.num_frames == 0:
        raise DataError(f"{where}: the dataset has no episodes; record or convert some first")
    missing = [c for c in vla_cfg.cameras if f"observation.images.{c}" not in reader.camera_keys]
    if missing:
        raise DataError(
            f"{where}: recipe '{name}' needs cameras {missing}, the dataset has "
            f"{reader.camera_keys}; set --model.cameras=[...] or convert with those cameras"
        )
    if vla_cfg.state_dim > 0 and "observation.state" not in reader.features:
        raise DataError(
            f"{where}: recipe '{name}' reads observation.state but the dataset has none; "
            "pick a recipe without state or pass --model.state_dim=0"
        )
    if vla_cfg.language != "none" and not any(t.strip() for t in reader.tasks):
        raise DataError(
            f"{where}: recipe '{name}' is language-conditioned but the dataset has no task "
            "instructions (meta/tasks.parquet is empty); add tasks or pick a recipe without "
            "language (e.g. diffusion_policy, act)"
        )
    lengths = [e.length for e in reader.episodes]
    if max(lengths) < vla_cfg.action_horizon:
        raise DataError(
            f"{where}: the longest episode has {max(lengths)} frames, shorter than the recipe's "
            f"action_horizon {vla_cfg.action_horizon}: every chunk would be mostly padding. "
            "Lower --model.action_horizon or record longer episodes"
        )


def check_fits(parts: TrainingParts, cfg: TrainConfig) -> None:
    """Clear errors, before any step, when the data cannot feed the model."""
    if not isinstance(parts.model, TrainablePolicy):
        raise ConfigError(
            f"{type(parts.model).__name__} cannot be trained by the loop: it needs "
            "loss(batch) and sample_actions(batch) (training.parts.TrainablePolicy)"
        )
    n = len(parts.train_dataset)  # type: ignore[arg-type]
    if n == 0:
        raise DataError(
            f"{cfg.data or 'dataset'}: the training split has no samples; the dataset is empty "
            "or every episode is shorter than the horizons. Lower the horizons or add episodes"
        )
    if n < cfg.batch_size:
        raise DataError(
            f"{cfg.data or 'dataset'}: the training split has {n} windows but batch_size is "
            f"{cfg.batch_size}; lower --batch_size or add episodes"
        )
    fits = getattr(parts.model, "check_batch", None)
    if callable(fits):
        fits(first_batch(parts, 1))
