"""The ``Recipe`` record, the recipe registry and ``get_recipe`` with overrides.

A recipe is data: a ``VLAConfig`` (the model), suggested training hyperparameters (keys of
``training.config.TrainConfig``), per-feature normalization modes, and the paper it follows with
what was scaled down to train on a CPU. ``get_recipe(name, **overrides)`` applies model-config or
training overrides by name; ``backbone=PATH_OR_ID`` loads a real pretrained backbone.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vlastack.errors import ConfigError
from vlastack.models.vla import VLAConfig
from vlastack.registry import Registry

TRAIN_KEYS = (
    "steps",
    "batch_size",
    "lr",
    "warmup_steps",
    "schedule",
    "min_lr_ratio",
    "weight_decay",
    "betas",
    "grad_clip",
    "ema_decay",
    "freeze",
)
HF_VISION = ("hf_resnet", "hf_vit", "siglip", "dinov2")


@dataclass
class Recipe:
    name: str
    model: VLAConfig
    train: dict[str, Any]
    normalization: dict[str, str]
    paper: str
    scaled_down: str = ""
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. execute_horizon, temporal ensembling


RECIPES: Registry[Callable[[], Recipe]] = Registry("recipe")


def recipe(name: str, description: str) -> Callable[[Callable[[], Recipe]], Callable[[], Recipe]]:
    """Register a recipe function under ``name`` with a one-line description."""

    def deco(fn: Callable[[], Recipe]) -> Callable[[], Recipe]:
        RECIPES.add(name, fn, description)
        return fn

    return deco


def _apply_backbone(model: VLAConfig, path: str, name: str) -> None:
    if model.language == "hf_causal_lm":
        model.language_kwargs = {**model.language_kwargs, "pretrained": path}
        model.language_kwargs.pop("config", None)
        model.language_kwargs.pop("tokenizer", None)
    elif model.vision in HF_VISION:
        model.vision_kwargs = {**model.vision_kwargs, "pretrained": path}
        model.vision_kwargs.pop("config", None)
    else:
        raise ConfigError(
            f"recipe '{name}' has no hub backbone (language '{model.language}', vision "
            f"'{model.vision}'); --backbone applies to recipes with an hf_causal_lm or transformers vision model"
        )


def get_recipe(name: str, **overrides: Any) -> Recipe:
    """A fresh copy of recipe ``name`` with ``overrides`` applied.

    Override keys: any ``VLAConfig`` field (``action_dim=7``, ``head_kwargs={...}``), any training
    key in ``TRAIN_KEYS`` (``lr=3e-4``), ``normalization={...}``, and ``backbone=PATH_OR_ID``.
    """
    r = copy.deepcopy(RECIPES.get(name)())
    model_fields = [f.name for f in dataclasses.fields(VLAConfig)]
    for key, value in overrides.items():
        if key == "backbone":
            if value:
                _apply_backbone(r.model, str(value), name)
        elif key == "normalization":  # per feature: --model.normalization.action=min_max
            r.normalization = {**r.normalization, **dict(value)}
        elif key in ("subgoal", "world_model") and isinstance(value, dict):
            # merged, so --model.subgoal.horizon=4 keeps the recipe's other subgoal settings
            setattr(r.model, key, {**getattr(r.model, key), **value})
        elif key in model_fields:
            setattr(r.model, key, tuple(value) if key == "image_size" else value)
        elif key in TRAIN_KEYS:
            r.train[key] = value
        else:
            known = model_fields + list(TRAIN_KEYS) + ["backbone", "normalization"]
            close = difflib.get_close_matches(key, known, n=2, cutoff=0.5)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ConfigError(f"recipe '{name}': unknown override '{key}'.{hint}")
    r.model.validate()
    return r
