"""What the training loop trains on: ``TrainingParts`` (model, data, normalizer, what the
checkpoint records) and ``ValSet`` (held-out windows validated on their own).

``training.build.build_parts`` makes them from a recipe and ``--data``; a caller may hand
``train`` its own ``build`` function returning them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from vlastack.embodiment import EmbodimentSpec

Batch = dict[str, Any]


@dataclass
class TrainingParts:
    """What the loop trains on. ``build_parts`` makes these from a recipe and a dataset."""

    model: nn.Module
    train_dataset: Dataset
    val_dataset: Dataset | None = None
    normalizer: Any = None  # data.normalization.Normalizer (or None = batches already normalized)
    embodiment: EmbodimentSpec | None = None
    model_config: dict[str, Any] = field(default_factory=dict)
    collate_fn: Callable[[list[Batch]], Batch] | None = None
    tasks: list[str] = field(default_factory=list)  # distinct instructions, for the probe
    action_names: list[str] | None = None
    uses_language: bool = True
    recipe_extra: dict[str, Any] = field(default_factory=dict)  # e.g. execute_horizon
    # Mixtures (training.build.as_mixture): held-out data per member, the epoch's sample order when
    # members have explicit weights (default: a seeded shuffle), and what the checkpoint records.
    val_sets: list[ValSet] = field(default_factory=list)
    epoch_indices: Callable[[int], Sequence[int]] | None = None
    mixture: dict[str, Any] | None = None


@dataclass
class ValSet:
    """Held-out windows validated on their own: one per mixture member, in that robot's units."""

    name: str  # "" for a single dataset (metric keys stay val/action_mse)
    dataset: Dataset
    normalizer: Any
    collate_fn: Callable[[list[Batch]], Batch] | None = None
    action_names: list[str] | None = None
    tasks: list[str] = field(default_factory=list)
