"""What the training loop trains on: ``TrainingParts`` (model, data, normalizer, what the
checkpoint records) and ``ValSet`` (held-out windows validated on their own).

``training.build.build_parts`` makes them from a recipe and ``--data``; a caller may hand
``train`` its own ``build`` function returning them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn
from torch.utils.data import Dataset

from vlastack.batch import Batch
from vlastack.embodiment import EmbodimentSpec

Sample = dict[str, Any]  # one dataset window, before ``collate``


@runtime_checkable
class TrainablePolicy(Protocol):
    """What the loop trains (an ``nn.Module``): a recipe's VLA, an imported LeRobot policy
    (``pretrained.lerobot.trainable``), or a plugin's model.

    * ``loss(batch)``: the training loss of a normalized batch, (B,) or a scalar (the loop
      takes the mean);
    * ``sample_actions(batch)``: (B, H, A) normalized actions, for open-loop validation;
    * optionally ``param_groups()``: ``{group: parameter names | Parameters | Module}``, the
      names ``--freeze`` accepts (e.g. 'vision', 'encoder'; a VLA 'vlm' and 'expert');
    * optionally ``lora_target``: the regex over module names LoRA wraps when ``--lora.target``
      is left at its default.

    Its training checkpoint is the loop's: ``state_dict()`` (EMA applied, LoRA merged) in
    ``model.safetensors``, ``TrainingParts.model_config`` in config.json, the normalizer's
    ``to_dict()`` in normalization.json, and the optimizer / RNG / data position for exact
    resume. ``TrainingParts.checkpoint_format`` names the registered checkpoint format
    (``policy_formats``) that loads it back as a policy; None = a native vlastack checkpoint.
    """

    def loss(self, batch: Batch) -> torch.Tensor: ...

    def sample_actions(self, batch: Batch) -> torch.Tensor: ...


@dataclass
class TrainingParts:
    """What the loop trains on. ``build_parts`` makes these from a recipe and a dataset."""

    model: nn.Module
    train_dataset: Dataset
    val_dataset: Dataset | None = None
    normalizer: Any = None  # data.normalization.Normalizer (or None = batches already normalized)
    embodiment: EmbodimentSpec | None = None
    model_config: dict[str, Any] = field(default_factory=dict)
    collate_fn: Callable[[list[Sample]], dict[str, Any]] | None = None
    tasks: list[str] = field(default_factory=list)  # distinct instructions, for the probe
    action_names: list[str] | None = None
    uses_language: bool = True
    recipe_extra: dict[str, Any] = field(default_factory=dict)  # e.g. execute_horizon
    # Mixtures (training.build.as_mixture): held-out data per member, the epoch's sample order when
    # members have explicit weights (default: a seeded shuffle), and what the checkpoint records.
    val_sets: list[ValSet] = field(default_factory=list)
    epoch_indices: Callable[[int], Sequence[int]] | None = None
    mixture: dict[str, Any] | None = None
    # A registered checkpoint format that loads the saved checkpoint (config.json "format");
    # None for a native vlastack checkpoint (TrainablePolicy)
    checkpoint_format: str | None = None


@dataclass
class ValSet:
    """Held-out windows validated on their own: one per mixture member, in that robot's units."""

    name: str  # "" for a single dataset (metric keys stay val/action_mse)
    dataset: Dataset
    normalizer: Any
    collate_fn: Callable[[list[Sample]], dict[str, Any]] | None = None
    action_names: list[str] | None = None
    tasks: list[str] = field(default_factory=list)
