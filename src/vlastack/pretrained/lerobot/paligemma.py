"""PaliGemma (SigLIP vision tower + linear projector + Gemma language model) and the Gemma action
expert, laid out with the state-dict keys of LeRobot's ``PaliGemmaWithExpertModel``
(``paligemma.model.{vision_tower.vision_model,multi_modal_projector.linear,language_model}.*``,
``paligemma.lm_head``, ``gemma_expert.model.*``, ``gemma_expert.lm_head``).

The vision tower is transformers' ``SiglipVisionModel`` built from a ``SiglipVisionConfig`` (no
pooling head, ``gelu_pytorch_tanh``, LayerNorm eps 1e-6, SDPA attention as transformers picks
by default); its output ``last_hidden_state`` (after ``post_layernorm``) goes through the
projector's Linear, which is all PaliGemma's ``get_image_features`` does in transformers 5.5.4
(the version the fixtures were written with: no division by sqrt(width) there).

LeRobot hard-codes the PaliGemma vocabulary (257152) and the SigLIP-So400m sizes in
``PaliGemmaWithExpertModel.__init__`` (``policies/pi0/modeling_pi0.py``, LeRobot 0.6.1; the
SigLIP defaults come from transformers' ``PaliGemmaConfig``: hidden 1152, 27 layers, 16 heads,
patch 14, with LeRobot's intermediate 4304 and projection_dim 2048) and keys them by nothing but
the Gemma variant; ``PALIGEMMA_SIZES`` does the same, with the reduced ``dummy`` sizes of the
fixtures (README "pi0", ``paligemma_edits``: vocab 1024, SigLIP 32 wide, 2 layers, 2 heads,
projection = text width).

The two ``lm_head`` matrices are saved by LeRobot but never used for actions; they are not built
here (``UNUSED_HEADS``): the loader checks their shapes and skips them, saving 257152 x (2048 +
1024) floats at full size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from vlastack.errors import ConfigError
from vlastack.pretrained.lerobot.gemma import GemmaSize, GemmaStack


@dataclass(frozen=True)
class VisionSize:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    patch: int


@dataclass(frozen=True)
class PaliGemmaSize:
    vocab: int
    vision: VisionSize


SO400M = VisionSize(hidden=1152, intermediate=4304, layers=27, heads=16, patch=14)
PALIGEMMA_SIZES = {
    "gemma_2b": PaliGemmaSize(257152, SO400M),
    "dummy": PaliGemmaSize(1024, VisionSize(32, 64, 2, 2, 14)),
}

PREFIX = "model.paligemma_with_expert."
UNUSED_HEADS = (PREFIX + "paligemma.lm_head.weight", PREFIX + "gemma_expert.lm_head.weight")
EMBED_KEY = PREFIX + "paligemma.model.language_model.embed_tokens.weight"


def paligemma_size(variant: str) -> PaliGemmaSize:
    if variant not in PALIGEMMA_SIZES:
        raise ConfigError(
            f"config.json 'paligemma_variant' is {variant!r}; PaliGemma is built for "
            f"{', '.join(PALIGEMMA_SIZES)}: use gemma_2b (LeRobot accepts only that one)"
        )
    return PALIGEMMA_SIZES[variant]


def siglip(vision: VisionSize, image_size: int, attn: str = "sdpa") -> nn.Module:
    """transformers' SigLIP vision transformer (the module whose keys are ``embeddings.*``,
    ``encoder.layers.N.*``, ``post_layernorm.*``; transformers < 5.25 wraps it as
    ``SiglipVisionModel.vision_model``)."""
    from transformers import SiglipVisionConfig, SiglipVisionModel

    if image_size % vision.patch:
        raise ConfigError(
            f"config.json 'image_resolution' {image_size} is not a multiple of SigLIP's patch "
            f"size {vision.patch}: use e.g. 224"
        )
    cfg = SiglipVisionConfig(
        hidden_size=vision.hidden,
        intermediate_size=vision.intermediate,
        num_hidden_layers=vision.layers,
        num_attention_heads=vision.heads,
        patch_size=vision.patch,
        image_size=image_size,
        vision_use_head=False,
        hidden_act="gelu_pytorch_tanh",
        layer_norm_eps=1e-6,
    )
    cfg._attn_implementation = attn  # what PaliGemma's vision tower gets by default
    model = SiglipVisionModel(cfg)
    return getattr(model, "vision_model", model)


class _Node(nn.Module):
    """A plain container (only for the key layout)."""


class PaliGemmaWithExpert(nn.Module):
    """``paligemma`` (vision tower, projector, language model) and ``gemma_expert``."""

    def __init__(
        self,
        vlm: GemmaSize,
        expert: GemmaSize,
        pali: PaliGemmaSize,
        image_size: int,
        expert_adarms: bool,
    ) -> None:
        super().__init__()
        self.image_size = image_size
        self.paligemma = _Node()
        inner = _Node()
        inner.vision_tower = _Node()
        inner.vision_tower.vision_model = siglip(pali.vision, image_size)
        inner.multi_modal_projector = _Node()
        inner.multi_modal_projector.linear = nn.Linear(pali.vision.hidden, vlm.width, bias=True)
        inner.language_model = GemmaStack(vlm, vocab_size=pali.vocab)
        self.paligemma.model = inner
        self.gemma_expert = _Node()
        self.gemma_expert.model = GemmaStack(
            expert, cond_dim=expert.width if expert_adarms else None
        )

    @property
    def inner(self) -> Any:
        """``paligemma.model`` (vision_tower, multi_modal_projector, language_model)."""
        return cast(Any, self.paligemma).model

    @property
    def language_model(self) -> GemmaStack:
        return cast(GemmaStack, self.inner.language_model)

    @property
    def expert(self) -> GemmaStack:
        return cast(GemmaStack, cast(Any, self.gemma_expert).model)

    def embed_image(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [-1, 1] -> (B, (S/14)^2, width); vision path in float32."""
        out_dtype = image.dtype
        inner = self.inner
        feats = inner.vision_tower.vision_model(image.to(torch.float32)).last_hidden_state
        feats = inner.multi_modal_projector.linear(feats)
        return feats.to(out_dtype)

    def fix_buffers(self) -> None:
        """Recreate the SigLIP ``position_ids`` buffer (not saved) after a meta-device build."""
        emb = self.inner.vision_tower.vision_model.embeddings
        device = emb.position_embedding.weight.device
        emb.position_ids = torch.arange(emb.num_positions, device=device).expand((1, -1))
