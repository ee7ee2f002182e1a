"""Vision encoders from ``transformers`` model classes: ResNet, ViT, SigLIP, DINOv2.

Each loads real weights with ``from_pretrained(path_or_hub_id)`` (offline: a local folder, or the
hub cache when ``HF_HUB_OFFLINE`` allows it) or builds the same class from a small config dict with
random weights (how the tests and CPU recipes use them). Frames are resized to the model's
``image_size`` when they differ, as its image processor would.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from vlastack.errors import ConfigError, require
from vlastack.models.common import FiLM
from vlastack.models.vision.base import IMAGENET_MEAN, IMAGENET_STD, VisionEncoder
from vlastack.models.vision.fusion import accelerate_hf_resnet, keep_batchnorm_eval

# name -> (model class, config class, default tiny config, mean, std)
# The random-init DINOv2 size shared by the plain and the with-registers tower.
_SMALL_DINOV2: dict[str, Any] = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "mlp_ratio": 2,
    "image_size": 96,
    "patch_size": 16,
}
_FAMILIES: dict[str, tuple[str, str, dict[str, Any], tuple[float, ...], tuple[float, ...]]] = {
    "hf_resnet": (
        "ResNetModel",
        "ResNetConfig",
        {
            "embedding_size": 16,
            "hidden_sizes": [16, 32, 64],
            "depths": [1, 1, 1],
            "layer_type": "basic",
        },
        IMAGENET_MEAN,
        IMAGENET_STD,
    ),
    "hf_vit": (
        "ViTModel",
        "ViTConfig",
        {
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 128,
            "image_size": 96,
            "patch_size": 16,
        },
        (0.5, 0.5, 0.5),
        (0.5, 0.5, 0.5),
    ),
    "siglip": (
        "SiglipVisionModel",
        "SiglipVisionConfig",
        {
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 128,
            "image_size": 96,
            "patch_size": 16,
        },
        (0.5, 0.5, 0.5),
        (0.5, 0.5, 0.5),
    ),
    "dinov2": (
        "Dinov2Model",
        "Dinov2Config",
        _SMALL_DINOV2,
        IMAGENET_MEAN,
        IMAGENET_STD,
    ),
    # DINOv2 with 4 register tokens (Darcet et al. 2023): the tower Prismatic/OpenVLA fuse with
    # SigLIP. Not registered on its own; ``fused.py`` builds it.
    "dinov2_reg": (
        "Dinov2WithRegistersModel",
        "Dinov2WithRegistersConfig",
        {**_SMALL_DINOV2, "num_register_tokens": 4},
        IMAGENET_MEAN,
        IMAGENET_STD,
    ),
}


@dataclass
class HFVisionConfig:
    pretrained: str | None = None  # local folder or hub id; None = random init from ``config``
    config: dict[str, Any] = field(default_factory=dict)  # overrides of the tiny default config
    image_size: int | None = None  # resize frames to this; default = the model config's image_size
    # BatchNorm normalizes with its running statistics and its affine weights stay fixed, in
    # training too: torchvision's FrozenBatchNorm2d, which DETR, ACT and LeRobot's ResNet
    # backbones use (small robot batches make poor batch statistics). ResNet only.
    freeze_bn: bool = False


class HFVisionEncoder(VisionEncoder):
    """Wraps a ``transformers`` vision model; tokens = last hidden state (conv maps flattened)."""

    def __init__(
        self,
        family: str,
        pretrained: str | None = None,
        config: dict[str, Any] | None = None,
        image_size: int | None = None,
        film_dim: int = 0,
        freeze_bn: bool = False,
    ) -> None:
        super().__init__()
        if family not in _FAMILIES:
            raise ConfigError(f"unknown transformers vision family '{family}'")
        transformers = require("transformers", "hf", f"the {family} vision encoder")
        model_name, config_name, tiny, mean, std = _FAMILIES[family]
        model_cls = getattr(transformers, model_name)
        self.family = family
        if pretrained:
            try:
                self.model = model_cls.from_pretrained(pretrained)
            except (OSError, ValueError) as exc:
                raise ConfigError(
                    f"vision_kwargs.pretrained: cannot load {model_name} from '{pretrained}' "
                    f"({exc}). Give a local folder with config.json + weights, or a hub id that "
                    "is in the local cache (the hub is offline here)."
                ) from exc
        else:
            cfg = getattr(transformers, config_name)(**{**tiny, **(config or {})})
            self.model = (
                model_cls(cfg) if family != "hf_vit" else model_cls(cfg, add_pooling_layer=False)
            )
        for owner in (self.model, getattr(self.model, "vision_model", None)):
            if getattr(owner, "use_head", False):  # SigLIP's pooling head: policies use the tokens
                owner.use_head = False  # type: ignore[union-attr]
                del owner.head  # type: ignore[union-attr]
        for pname, p in self.model.named_parameters():
            if pname.endswith("mask_token"):  # only used by masked-image pretraining objectives
                p.requires_grad_(False)
        if family == "hf_resnet":
            accelerate_hf_resnet(self.model)
        self.freeze_bn = freeze_bn
        if freeze_bn:
            if not self._batchnorms():
                raise ConfigError(
                    f"vision_kwargs.freeze_bn: the {family} encoder has no BatchNorm layers; "
                    "drop the option (it applies to hf_resnet)"
                )
            for bn in self._batchnorms():
                bn.eval()
                bn.requires_grad_(False)
        mcfg = self.model.config
        self.image_mean, self.image_std = mean, std  # type: ignore[assignment]
        self.image_size = image_size or getattr(mcfg, "image_size", None)
        self.out_dim = (
            int(mcfg.hidden_sizes[-1]) if family == "hf_resnet" else int(mcfg.hidden_size)
        )
        self.film = FiLM(film_dim, self.out_dim) if film_dim > 0 else None

    def _batchnorms(self) -> list[torch.nn.BatchNorm2d]:
        return [m for m in self.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]

    def train(self, mode: bool = True) -> HFVisionEncoder:
        super().train(mode)
        if self.freeze_bn:
            keep_batchnorm_eval(self.model)
        return self

    def encode(self, images: torch.Tensor, film_cond: torch.Tensor | None = None) -> torch.Tensor:
        if self.image_size and tuple(images.shape[-2:]) != (self.image_size, self.image_size):
            images = F.interpolate(
                images,
                size=(self.image_size, self.image_size),
                mode="bilinear",
                align_corners=False,
            )
        out = self.model(pixel_values=images).last_hidden_state
        tokens = out.flatten(2).transpose(1, 2) if out.dim() == 4 else out  # (M, n, D)
        if self.film is not None and film_cond is not None:
            tokens = self.film(tokens, film_cond)
        return tokens


def make_builder(family: str):
    def build(cfg: HFVisionConfig, film_dim: int = 0) -> HFVisionEncoder:
        return HFVisionEncoder(
            family, cfg.pretrained, cfg.config, cfg.image_size, film_dim, cfg.freeze_bn
        )

    build.__doc__ = (
        f"transformers {_FAMILIES[family][0]} (pretrained path/hub id, or a random config)"
    )
    return build
