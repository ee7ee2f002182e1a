"""Action heads: every head maps context tokens to a (B, H, A) chunk of normalized actions.

``ACTION_HEADS`` maps a name to ``build(cfg, *, context_dim, action_dim, action_horizon)`` where
``cfg`` is the head's ``<Name>Config`` dataclass, a dict of its fields, or None (defaults).
Adding a head = one new module + one ``ACTION_HEADS.add`` line; the contract tests pick it up.
The head class describes itself (``ActionHead.export_kind``, ``suite_kwargs``, ...); ``head_class``
finds it from the builder's return annotation, so export and the suites never switch on names.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from typing import Any

from vlastack.models.action_heads import act, bins, diffusion, fast, flow_matching, flower, l1
from vlastack.models.action_heads.act import ACTHead, ACTHeadConfig
from vlastack.models.action_heads.base import ActionHead
from vlastack.models.action_heads.bins import BinsHead, BinsHeadConfig
from vlastack.models.action_heads.diffusion import DiffusionHead, DiffusionHeadConfig
from vlastack.models.action_heads.fast import FastHead, FastHeadConfig
from vlastack.models.action_heads.flow_matching import (
    FlowMatchingHead,
    FlowMatchingHeadConfig,
    FlowPrefixCache,
)
from vlastack.models.action_heads.flower import FlowerHead, FlowerHeadConfig
from vlastack.models.action_heads.l1 import L1Head, L1HeadConfig
from vlastack.registry import Registry

HeadBuilder = Callable[..., ActionHead]

ACTION_HEADS: Registry[HeadBuilder] = Registry("action head")
ACTION_HEADS.add(
    "bins", bins.build, "256-bin per-dimension classification, parallel (RT-1/OpenVLA)"
)
ACTION_HEADS.add(
    "bins_ar", bins.build_autoregressive, "256-bin tokens decoded autoregressively (RT-2/OpenVLA)"
)
ACTION_HEADS.add(
    "fast", fast.build, "FAST DCT+BPE tokens, autoregressive greedy decoding (π0-FAST)"
)
ACTION_HEADS.add("l1", l1.build, "parallel decoding + MLP-ResNet, L1 regression (OpenVLA-OFT)")
ACTION_HEADS.add("mlp", l1.build, "alias of 'l1' (OpenVLA-OFT parallel L1 regression)")
ACTION_HEADS.add(
    "diffusion",
    diffusion.build,
    "DDPM ε-prediction, DDIM/DDPM sampling, transformer or 1-D U-Net denoiser (Diffusion Policy)",
)
ACTION_HEADS.add(
    "flow_matching", flow_matching.build, "π0 flow-matching action expert over a cached prefix"
)
ACTION_HEADS.add(
    "flower",
    flower.build,
    "FLOWER rectified-flow transformer: global AdaLN, causal action tokens, 4 Euler steps",
)
ACTION_HEADS.add("act", act.build, "CVAE chunk head, L1 + KL, z=0 at inference (ACT)")


def build_action_head(
    name: str, cfg: Any = None, *, context_dim: int, action_dim: int, action_horizon: int
) -> ActionHead:
    """Look up ``name`` (did-you-mean on typos) and build it."""
    return ACTION_HEADS.get(name)(
        cfg, context_dim=context_dim, action_dim=action_dim, action_horizon=action_horizon
    )


def head_class(name: str) -> type[ActionHead]:
    """The class head ``name`` builds, read from its builder's return annotation (``-> MyHead``),
    for what a head declares before it is built (``suite_kwargs``); ``ActionHead`` (the defaults)
    when the builder names no ``ActionHead`` subclass."""
    builder = ACTION_HEADS.get(name)
    try:
        ret = typing.get_type_hints(builder).get("return")
    except (NameError, TypeError):
        ret = None
    return ret if isinstance(ret, type) and issubclass(ret, ActionHead) else ActionHead


__all__ = [
    "ACTION_HEADS",
    "ACTHead",
    "ACTHeadConfig",
    "ActionHead",
    "BinsHead",
    "BinsHeadConfig",
    "DiffusionHead",
    "DiffusionHeadConfig",
    "FastHead",
    "FastHeadConfig",
    "FlowMatchingHead",
    "FlowMatchingHeadConfig",
    "FlowPrefixCache",
    "FlowerHead",
    "FlowerHeadConfig",
    "L1Head",
    "L1HeadConfig",
    "build_action_head",
    "head_class",
]
