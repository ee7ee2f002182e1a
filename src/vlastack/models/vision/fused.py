"""Prismatic's fused "DINO-SigLIP" vision tower (Karamcheti et al. 2024, arXiv 2402.07865), the
one OpenVLA (arXiv 2406.09246) reads: the same frame goes through a DINOv2 and a SigLIP ViT, each
with its own normalization, and their per-patch features (same patch grid) are concatenated along
channels, [DINOv2 | SigLIP] -> (M, n, D_dino + D_siglip). Like Prismatic, each tower is read at
its second-to-last block, without the final norm and without DINOv2's CLS/register tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from vlastack.errors import ConfigError, require
from vlastack.models.common import FiLM
from vlastack.models.vision.base import VisionEncoder
from vlastack.models.vision.hf_encoders import _FAMILIES, HFVisionEncoder

FEATURE_LAYERS = ("penultimate", "last")


@dataclass
class DinoSiglipConfig:
    dino_path: str | None = None  # local folder or hub id; None = tiny random DINOv2
    siglip_path: str | None = None  # local folder or hub id; None = tiny random SigLIP
    dino_config: dict[str, Any] = field(default_factory=dict)  # overrides of the tiny DINOv2
    siglip_config: dict[str, Any] = field(default_factory=dict)  # overrides of the tiny SigLIP
    # Dinov2WithRegistersModel (OpenVLA's ViT-L/14-reg4) or plain Dinov2Model; None = read the
    # checkpoint's model_type when dino_path is given, else registers.
    dino_registers: bool | None = None
    # Both towers see frames of this size; None = SigLIP's own image_size (its position table is
    # fixed; DINOv2 interpolates its own), e.g. 224 for the real towers (16x16 patches of 14 px).
    image_size: int | None = None
    feature_layer: str = "penultimate"  # Prismatic: the second-to-last block; or "last"


def _dino_family(cfg: DinoSiglipConfig) -> str:
    if cfg.dino_registers is not None:
        return "dinov2_reg" if cfg.dino_registers else "dinov2"
    if cfg.dino_path:
        transformers = require("transformers", "hf", "the DINOv2 tower")
        try:
            model_type = transformers.AutoConfig.from_pretrained(cfg.dino_path).model_type
        except (OSError, ValueError):
            return "dinov2_reg"  # the tower's own loader reports the bad path with the fix
        return "dinov2" if model_type == "dinov2" else "dinov2_reg"
    return "dinov2_reg"


def _drop_last_block(tower: HFVisionEncoder, which: str) -> None:
    """Remove the last transformer block and the final norm: the features Prismatic reads
    (``get_intermediate_layers(n={depth - 2})``), with no weight left that gets no gradient."""
    model = tower.model
    layers = getattr(model.encoder, "layer", None) or getattr(model.encoder, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise ConfigError(f"{which}: cannot find the transformer blocks of {type(model).__name__}")
    if len(layers) < 2:
        raise ConfigError(
            f"vision_kwargs.feature_layer='penultimate' needs a {which} tower with >= 2 layers, "
            f"it has {len(layers)}; add layers to {which}_config or set feature_layer='last'"
        )
    del layers[-1]
    model.config.num_hidden_layers = len(layers)
    for norm in ("layernorm", "post_layernorm"):
        if isinstance(getattr(model, norm, None), nn.LayerNorm):
            setattr(model, norm, nn.Identity())


def _patch_grid(tower: HFVisionEncoder, image_size: int) -> int:
    return image_size // int(tower.model.config.patch_size)


class DinoSiglipEncoder(VisionEncoder):
    """Two towers, channel-concatenated patch tokens. Frames arrive in [0, 1] (this encoder's
    declared mean/std are the identity, so ``MultiCameraEncoder`` leaves them alone) and each
    tower normalizes them with its own statistics."""

    dino_mean: torch.Tensor
    dino_std: torch.Tensor
    siglip_mean: torch.Tensor
    siglip_std: torch.Tensor

    def __init__(self, cfg: DinoSiglipConfig, film_dim: int = 0) -> None:
        super().__init__()
        if cfg.feature_layer not in FEATURE_LAYERS:
            raise ConfigError(
                f"vision_kwargs.feature_layer must be one of {FEATURE_LAYERS}, got '{cfg.feature_layer}'"
            )
        sized = {"image_size": cfg.image_size} if cfg.image_size else {}
        self.siglip = HFVisionEncoder("siglip", cfg.siglip_path, {**cfg.siglip_config, **sized})
        native = int(self.siglip.model.config.image_size)
        size = int(cfg.image_size or native)
        if size != native:
            raise ConfigError(
                f"vision_kwargs.image_size={size}, but the SigLIP checkpoint '{cfg.siglip_path}' "
                f"has a fixed {native}-px position table; leave image_size unset (uses {native})"
            )
        self.siglip.image_size = size
        family = _dino_family(cfg)
        dino_config = {**cfg.dino_config, "image_size": size}  # ignored for a checkpoint
        self.dino = HFVisionEncoder(family, cfg.dino_path, dino_config, size)
        grid_d, grid_s = _patch_grid(self.dino, size), _patch_grid(self.siglip, size)
        if grid_d != grid_s:
            p_d, p_s = self.dino.model.config.patch_size, self.siglip.model.config.patch_size
            raise ConfigError(
                f"dinosiglip: at image_size {size} DINOv2 (patch {p_d}) makes a {grid_d}x{grid_d} "
                f"patch grid but SigLIP (patch {p_s}) makes {grid_s}x{grid_s}; their features are "
                "concatenated per patch, so the grids must match. Use towers with the same patch "
                "size (Prismatic: both 14 px at 224), or set vision_kwargs.image_size so that "
                "image_size // patch_size agrees."
            )
        self.num_patches = grid_d * grid_d
        if cfg.feature_layer == "penultimate":
            _drop_last_block(self.dino, "dino")
            _drop_last_block(self.siglip, "siglip")
        for name, tower in (("dino", self.dino), ("siglip", self.siglip)):
            _, _, _, mean, std = _FAMILIES[tower.family]
            self.register_buffer(f"{name}_mean", torch.tensor(mean).view(1, 3, 1, 1), False)
            self.register_buffer(f"{name}_std", torch.tensor(std).view(1, 3, 1, 1), False)
        self.image_mean = (0.0, 0.0, 0.0)
        self.image_std = (1.0, 1.0, 1.0)
        self.out_dim = self.dino.out_dim + self.siglip.out_dim
        self.film = FiLM(film_dim, self.out_dim) if film_dim > 0 else None

    def encode(self, images: torch.Tensor, film_cond: torch.Tensor | None = None) -> torch.Tensor:
        """(M, 3, H, W) in [0, 1] -> (M, n_patches, D_dino + D_siglip)."""
        dino = self.dino((images - self.dino_mean) / self.dino_std)  # (M, prefix + n, D_dino)
        dino = dino[:, dino.shape[1] - self.num_patches :]  # drop CLS and register tokens
        siglip = self.siglip((images - self.siglip_mean) / self.siglip_std)  # (M, n, D_siglip)
        if (
            siglip.shape[1] != dino.shape[1]
        ):  # guarded at build time; a custom checkpoint could differ
            raise ConfigError(
                f"dinosiglip: DINOv2 gave {dino.shape[1]} patch tokens and SigLIP {siglip.shape[1]}"
                "; set vision_kwargs.image_size so both towers use the same patch grid"
            )
        tokens = torch.cat([dino, siglip], dim=-1)
        if self.film is not None and film_cond is not None:
            tokens = self.film(tokens, film_cond)
        return tokens


def build(cfg: DinoSiglipConfig, film_dim: int = 0) -> DinoSiglipEncoder:
    """DINOv2 + SigLIP fused per patch (Prismatic / OpenVLA)."""
    return DinoSiglipEncoder(cfg, film_dim)
