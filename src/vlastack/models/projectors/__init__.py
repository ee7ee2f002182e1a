"""Projectors / token reducers: map encoder tokens (B, N, D_in) to model width (B, N', D_out).

``build_projector(name, kwargs, in_dim, out_dim)``; one registry line per projector below.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from vlastack.models.common import make_config
from vlastack.models.projectors import mlp, perceiver, token_learner
from vlastack.registry import Registry


@dataclass(frozen=True)
class ProjectorSpec:
    config_cls: type
    build: Callable[..., nn.Module]


PROJECTORS: Registry[ProjectorSpec] = Registry("projector")
PROJECTORS.add(
    "mlp",
    ProjectorSpec(mlp.MLPProjectorConfig, mlp.build),
    "2-layer GELU MLP, keeps the token count (LLaVA, OpenVLA)",
)
PROJECTORS.add(
    "perceiver",
    ProjectorSpec(perceiver.PerceiverConfig, perceiver.build),
    "perceiver resampler: learned latents cross-attend to the tokens (Flamingo)",
)
PROJECTORS.add(
    "token_learner",
    ProjectorSpec(token_learner.TokenLearnerConfig, token_learner.build),
    "TokenLearner: 8 learned attention-pooled tokens per image (RT-1)",
)


def build_projector(
    name: str, kwargs: dict[str, Any] | None, in_dim: int, out_dim: int
) -> nn.Module:
    spec = PROJECTORS.get(name)
    cfg: Any = make_config(spec.config_cls, kwargs, f"projector_kwargs (projector '{name}')")
    return spec.build(cfg, in_dim=in_dim, out_dim=out_dim)


__all__ = ["PROJECTORS", "ProjectorSpec", "build_projector"]
