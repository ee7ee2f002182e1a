"""``VLAConfig``: everything needed to build a VLA (``config.json``'s ``model`` section), its
checks, and ``config_for_embodiment`` (a recipe's config sized to a dataset). The module is
``models/vla.py``, which re-exports these names."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vlastack.errors import ConfigError
from vlastack.models.common import make_config
from vlastack.models.language import LANGUAGE_BACKBONES
from vlastack.models.projectors import PROJECTORS
from vlastack.models.vision import VISION_ENCODERS

TERNARY_PARTS = ("vision", "language", "projector", "head", "trunk")
AUX_TOKEN_LOSSES = ("bins", "fast")


@dataclass
class FastAuxConfig:
    """``VLAConfig.aux_token_kwargs`` for ``aux_token_loss="fast"``."""

    tokenizer_path: str | None = None  # folder written by `vlastack fast fit`; None → no-merge FAST
    scale: float = 10.0  # DCT coefficient scale; only used when tokenizer_path is None


@dataclass
class VLAConfig:
    """Everything needed to build a VLA; stored as ``config.json`` in a checkpoint."""

    action_dim: int = 2
    action_horizon: int = 8
    obs_horizon: int = 1
    state_dim: int = 0  # 0 = no state token
    cameras: list[str] = field(default_factory=lambda: ["main"])  # [] = no images
    image_size: tuple[int, int] = (96, 96)  # (H, W) of every camera
    width: int = 128  # context width D when there is no decoder LM (else the LM's hidden size)
    vision: str = "small_cnn"
    vision_kwargs: dict[str, Any] = field(default_factory=dict)
    shared_vision: bool = True  # one encoder for all cameras, else one copy per camera
    vision_pooled: bool = False  # one token per camera-frame instead of all spatial tokens
    # A learned embedding per image-token position: CNN tokens carry little explicit "where",
    # and robot policies mostly need to know where things are.
    image_pos_embed: bool = True
    projector: str = "mlp"
    projector_kwargs: dict[str, Any] = field(default_factory=dict)
    language: str = "minilm"
    language_kwargs: dict[str, Any] = field(default_factory=dict)
    film: bool = False  # FiLM-condition the vision encoder on the instruction embedding (RT-1)
    trunk_layers: int = 0  # transformer layers over the prefix when there is no decoder LM (Octo)
    trunk_heads: int = 4
    head: str = "flow_matching"
    head_kwargs: dict[str, Any] = field(default_factory=dict)
    freeze_vision: bool = False
    freeze_language: bool = False  # MiniLM is always frozen
    insulate_head: bool = False  # the head reads context.detach() (π0.5 knowledge insulation)
    # "bins" (256-bin tokens) or "fast" (FAST tokens, LM only): discrete-token CE trains the backbone
    aux_token_loss: str | None = None
    aux_token_kwargs: dict[str, Any] = field(default_factory=dict)  # FastAuxConfig for "fast"
    aux_loss_weight: float = 1.0
    action_tokens_in_lm: bool = False  # RT-2/OpenVLA: actions as the LM's last 256 token ids
    num_action_bins: int = 256
    motion_hierarchy: bool = False  # RT-H: predict a language motion, condition the head on it
    motion_threshold: float = 0.2
    motion_loss_weight: float = 1.0
    gripper_index: int | None = None
    # System 2 / System 1 (models/hierarchy.py): the backbone predicts a subtask (a language
    # motion) at a low rate, the head acts every tick on the pre-backbone tokens + that subtask;
    # reuses motion_threshold / motion_loss_weight / gripper_index
    hierarchy: bool = False
    ternary: list[str] = field(default_factory=list)  # parts to swap to BitLinear (BitVLA)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["image_size"] = list(self.image_size)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> VLAConfig:
        cfg = make_config(cls, dict(d), "model config")
        cfg.image_size = (int(cfg.image_size[0]), int(cfg.image_size[1]))
        cfg.cameras = list(cfg.cameras)
        return cfg

    def validate(self) -> None:
        for name in ("action_dim", "action_horizon", "obs_horizon"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"model config: {name} must be >= 1, got {getattr(self, name)}")
        if self.state_dim < 0:
            raise ConfigError(f"model config: state_dim must be >= 0, got {self.state_dim}")
        if len(self.image_size) != 2 or min(self.image_size) < 8:
            raise ConfigError(
                f"model config: image_size must be (H, W) >= 8, got {self.image_size}"
            )
        for reg, name, fld in (
            (VISION_ENCODERS, self.vision, "vision"),
            (PROJECTORS, self.projector, "projector"),
            (LANGUAGE_BACKBONES, self.language, "language"),
        ):
            if name is None and "none" in reg:  # `--model.language=none` parses to None
                setattr(self, fld, "none")
            elif name not in reg:
                raise ConfigError(f"model config field '{fld}': {reg.unknown_message(name)}")
        if self.aux_token_loss is not None and self.aux_token_loss not in AUX_TOKEN_LOSSES:
            raise ConfigError(
                f"model config: aux_token_loss must be one of {AUX_TOKEN_LOSSES} or None, "
                f"got '{self.aux_token_loss}'"
            )
        if self.aux_token_loss == "fast" and self.language != "hf_causal_lm":
            raise ConfigError(
                "model config: aux_token_loss='fast' predicts FAST tokens with the LM; it needs "
                f"language='hf_causal_lm' (got '{self.language}'); use aux_token_loss='bins' otherwise"
            )
        if self.action_tokens_in_lm and self.language != "hf_causal_lm":
            raise ConfigError("model config: action_tokens_in_lm needs language='hf_causal_lm'")
        if self.action_tokens_in_lm and self.motion_hierarchy:
            raise ConfigError(
                "model config: motion_hierarchy with action_tokens_in_lm is not supported"
            )
        if self.hierarchy and (
            self.motion_hierarchy or self.action_tokens_in_lm or self.aux_token_loss
        ):
            raise ConfigError(
                "model config: hierarchy=True (System 2 / System 1) cannot be combined with "
                "motion_hierarchy, action_tokens_in_lm or aux_token_loss; set those off"
            )
        if self.film and self.language != "minilm":
            raise ConfigError(
                "model config: film=True needs a sentence-embedding language ('minilm')"
            )
        if self.film and not self.cameras:
            raise ConfigError("model config: film=True needs at least one camera")
        bad = [p for p in self.ternary if p not in TERNARY_PARTS]
        if bad:
            raise ConfigError(
                f"model config: ternary parts {bad} unknown; choose from {TERNARY_PARTS}"
            )


def config_for_embodiment(cfg: VLAConfig, emb: Any) -> VLAConfig:
    """Copy of ``cfg`` with the dataset's sizes: action_dim, state_dim (kept 0 when the recipe uses
    no state), camera names (kept [] for image-free recipes), image_size and gripper_index."""
    out = dataclasses.replace(cfg)
    out.action_dim = int(emb.action.dim)
    if cfg.state_dim > 0:
        out.state_dim = int(emb.state.dim)
    if emb.action.gripper_index is not None:
        out.gripper_index = int(emb.action.gripper_index)
    if cfg.cameras:
        if not emb.cameras:
            raise ConfigError(
                f"the model uses cameras {cfg.cameras} but the dataset's embodiment ({emb.robot_type}) "
                "has none; pick a recipe without images or set cameras=[]"
            )
        sizes = {(c.height, c.width) for c in emb.cameras}
        if len(sizes) > 1:
            raise ConfigError(
                f"cameras of '{emb.robot_type}' have different sizes {sorted(sizes)}; the model "
                "needs one image_size: resize them to one size when converting the dataset"
            )
        out.cameras = [c.name for c in emb.cameras]
        out.image_size = next(iter(sizes))
    out.validate()
    return out


__all__ = [
    "AUX_TOKEN_LOSSES",
    "TERNARY_PARTS",
    "FastAuxConfig",
    "VLAConfig",
    "config_for_embodiment",
]
