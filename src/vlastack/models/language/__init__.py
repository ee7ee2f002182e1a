"""Language parts: a registry of builders ``build(cfg) -> module`` with ``kind`` and ``out_dim``.

``kind`` is ``"encoder"`` (pooled sentence embedding: ``encode(texts)``), ``"decoder"`` (a causal
LM run on an image+text prefix) or ``"none"`` (no language input).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from vlastack.models.common import make_config
from vlastack.models.language import hf_causal_lm, minilm
from vlastack.models.language.language_motion import label_motions, motion_vocabulary
from vlastack.registry import Registry


@dataclass
class NoLanguageConfig:
    pass


class NoLanguage(nn.Module):
    """No instruction input (Diffusion Policy, ACT)."""

    kind = "none"
    out_dim = 0


@dataclass(frozen=True)
class LanguageSpec:
    config_cls: type
    build: Callable[..., nn.Module]


LANGUAGE_BACKBONES: Registry[LanguageSpec] = Registry("language backbone")
LANGUAGE_BACKBONES.add(
    "minilm",
    LanguageSpec(minilm.MiniLMConfig, minilm.build),
    "frozen all-MiniLM-L6-v2 sentence embedding (384-d, offline), cached per instruction",
)
LANGUAGE_BACKBONES.add(
    "hf_causal_lm",
    LanguageSpec(hf_causal_lm.HFCausalLMConfig, hf_causal_lm.build),
    "transformers decoder LM (Llama/Gemma/Qwen2/SmolLM) on an image+text prefix; path, hub id or tiny config",
)
LANGUAGE_BACKBONES.add(
    "none", LanguageSpec(NoLanguageConfig, lambda cfg: NoLanguage()), "no language input"
)


def build_language(name: str, kwargs: dict[str, Any] | None = None) -> nn.Module:
    spec = LANGUAGE_BACKBONES.get(name)
    cfg: Any = make_config(spec.config_cls, kwargs, f"language_kwargs (language '{name}')")
    return spec.build(cfg)


__all__ = [
    "LANGUAGE_BACKBONES",
    "LanguageSpec",
    "NoLanguage",
    "build_language",
    "label_motions",
    "motion_vocabulary",
]
