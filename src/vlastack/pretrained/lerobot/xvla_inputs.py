"""What a LeRobot X-VLA folder fixes about the inputs (``XVLASpec``), its processor pipelines,
and the preprocessing steps X-VLA adds, as LeRobot 0.6.1 runs them
(``policies/xvla/processor_xvla.py``, ``modeling_xvla.py``):

* ``xvla_image_to_float``: per camera key (``image_keys``, default every
  ``observation.images.*``), over the whole batch tensor: a max <= 1 leaves the values as they
  are (made float); otherwise they must lie in [0, 255] (``validate_range``) and are divided by
  255. After ``prepare_observation_for_inference``'s /255 this is a no-op.
* ``xvla_imagenet_normalize``: the values must lie in [0, 1]; ``(x - mean) / std`` with
  ImageNet's mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225) as float32.
* ``xvla_add_domain_id``: ``domain_id`` (int64, one per row) from the step's config (default 0).
* then the ``normalizer_processor`` (X-VLA's default mapping is IDENTITY for everything).
* ``prepare`` is ``XVLAPolicy._build_model_inputs``: the cameras in config order stacked as
  (B, V, C, H, W) (resized with padding on the top/left with 0 first when
  ``resize_imgs_with_padding`` is set, read as (height, width)), zero views with mask 0 up to
  ``num_image_views``; the state zero-padded or truncated to ``max_state_dim`` (width 0 without
  ``use_proprio``); the domain id of ``domain_feature_key`` when the batch has it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from vlastack.errors import ConfigError
from vlastack.pretrained.lerobot import folder as lf
from vlastack.pretrained.lerobot.normalize import FeatureNormalizer
from vlastack.pretrained.lerobot.policy import Processors
from vlastack.pretrained.lerobot.smolvla_policy import TokenizerStep

IMAGE_PREFIX = "observation.images."
EMPTY_CAMERA = "observation.images.empty_camera_"
TO_FLOAT = "xvla_image_to_float"
IMAGENET = "xvla_imagenet_normalize"
DOMAIN = "xvla_add_domain_id"
TOKENIZER_STEP = "tokenizer_processor"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TOKENS = "observation.language.tokens"
TOKEN_MASK = "observation.language.attention_mask"
DOMAIN_KEY = "domain_id"


@dataclass(frozen=True)
class XVLASpec:
    """config.json's features and the X-VLA fields outside the two networks."""

    cameras: tuple[str, ...]  # VISUAL inputs in config order (declared empty cameras excluded)
    image_shapes: tuple[tuple[int, ...], ...]
    state_key: str | None
    state_dim: int
    action_key: str
    action_dim: int
    chunk_size: int
    n_action_steps: int
    num_views: int
    max_state_dim: int
    max_action_dim: int
    use_proprio: bool
    resize: tuple[int, int] | None  # (height, width)
    steps: int
    action_mode: str
    dtype: str
    domain_feature_key: str | None

    @property
    def dim_proprio(self) -> int:
        return self.max_state_dim if self.use_proprio else 0

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> XVLASpec:
        inputs = lf.read_features(dict(cfg), "input_features")
        outputs = lf.read_features(dict(cfg), "output_features")
        images = [f for f in inputs if f.type == "VISUAL" and not f.key.startswith(EMPTY_CAMERA)]
        states = [f for f in inputs if f.type == "STATE"]
        actions = [f for f in outputs if f.type == "ACTION"]
        use_proprio = bool(cfg.get("use_proprio", True))
        if not images or len(actions) != 1 or len(states) > 1 or (use_proprio and not states):
            raise ConfigError(
                "config.json: X-VLA needs at least one VISUAL input, one ACTION output and "
                "(with use_proprio) one STATE input (got "
                f"{[f.key for f in inputs]} -> {[f.key for f in outputs]})"
            )

        def num(key: str, default: Any) -> int:
            value = cfg.get(key, default)
            try:
                return int(value)
            except (TypeError, ValueError):
                raise ConfigError(
                    f"config.json '{key}' must be an integer, got {value!r}"
                ) from None

        chunk, n_exec = num("chunk_size", 32), num("n_action_steps", 32)
        if chunk <= 0 or n_exec > chunk:
            raise ConfigError(
                f"config.json: chunk_size {chunk} must be > 0 and n_action_steps {n_exec} <= it"
            )
        dtype = str(cfg.get("dtype", "float32"))
        if dtype not in ("float32", "bfloat16"):
            raise ConfigError(f"config.json 'dtype' {dtype!r}: X-VLA runs in float32 or bfloat16")
        resize = cfg.get("resize_imgs_with_padding")
        if resize is not None:
            try:
                h, w = (int(v) for v in resize)
            except (TypeError, ValueError):
                raise ConfigError(
                    f"config.json 'resize_imgs_with_padding' must be [height, width], got {resize!r}"
                ) from None
            resize = (h, w)
        views = len(images) + num("empty_cameras", 0)
        declared = cfg.get("num_image_views")
        return cls(
            cameras=tuple(f.key for f in images),
            image_shapes=tuple(f.shape for f in images),
            state_key=states[0].key if states else None,
            state_dim=states[0].shape[0] if states else 0,
            action_key=actions[0].key,
            action_dim=actions[0].shape[0],
            chunk_size=chunk,
            n_action_steps=n_exec,
            num_views=max(views, num("num_image_views", 0) if declared is not None else 0),
            max_state_dim=num("max_state_dim", 32),
            max_action_dim=num("max_action_dim", 20),
            use_proprio=use_proprio,
            resize=resize,
            steps=max(1, num("num_denoising_steps", 10)),
            action_mode=str(cfg.get("action_mode", "ee6d")),
            dtype=dtype,
            domain_feature_key=cfg.get("domain_feature_key") or None,
        )


@dataclass(frozen=True)
class ImageSteps:
    """The two image steps' configs: which keys (None: every camera) and the range check."""

    to_float_keys: tuple[str, ...] | None = None
    validate_range: bool = True
    imagenet_keys: tuple[str, ...] | None = None
    has_to_float: bool = True
    has_imagenet: bool = True


@dataclass(frozen=True)
class XVLAProcessors:
    """Everything the processor JSON says X-VLA's inputs go through."""

    base: Processors  # rename map, normalizer, unnormalizer
    tokenizer: TokenizerStep
    images: ImageSteps
    domain_id: int

    @property
    def normalizer(self) -> FeatureNormalizer | None:
        return self.base.normalizer

    @property
    def unnormalizer(self) -> FeatureNormalizer | None:
        return self.base.unnormalizer


def _normalizer(path: Path, steps: list[lf.Step], name: str) -> FeatureNormalizer | None:
    found = [s for s in steps if s.name == name]
    if len(found) > 1:
        raise ConfigError(f"{path}: {len(found)} {name} steps in one pipeline; expected one")
    if not found:
        return None
    step = found[0]
    stats = lf.read_stats(path, step.state_file) if step.state_file else {}
    return FeatureNormalizer.from_step(step, stats)


def _keys(value: Any) -> tuple[str, ...] | None:
    return None if value is None else tuple(str(k) for k in value)


def read_xvla_processors(path: Path) -> XVLAProcessors:
    """policy_preprocessor.json / policy_postprocessor.json of an X-VLA folder; a step this
    loader does not implement (LeRobot's LIBERO-specific X-VLA steps, say) is a ConfigError
    naming it."""
    path = Path(path)
    if not (path / lf.PREPROCESSOR).is_file():
        raise ConfigError(
            f"{path / lf.PREPROCESSOR} is missing: X-VLA checkpoints (LeRobot >= 0.4) carry "
            "their tokenizer, image and domain-id steps there; copy it from the checkpoint"
        )
    known = (
        lf.RENAME_STEP,
        *lf.PASSIVE_STEPS,
        *lf.NORMALIZER_STEPS,
        TOKENIZER_STEP,
        TO_FLOAT,
        IMAGENET,
        DOMAIN,
    )
    pre = lf.read_pipeline(path, lf.PREPROCESSOR)
    lf.check_steps(path, lf.PREPROCESSOR, pre, known)
    post: list[lf.Step] = []
    if (path / lf.POSTPROCESSOR).is_file():
        post = lf.read_pipeline(path, lf.POSTPROCESSOR)
        lf.check_steps(path, lf.POSTPROCESSOR, post, known)
    names = [s.name for s in pre]
    toks = [s for s in pre if s.name == TOKENIZER_STEP]
    if len(toks) != 1:
        raise ConfigError(
            f"{path / lf.PREPROCESSOR} has {len(toks)} tokenizer_processor steps; X-VLA needs "
            "exactly one (it turns the task into the language tokens)"
        )
    # LeRobot's order: tokenizer, image to float, ImageNet, domain id, then the normalizer
    order = [n for n in names if n in (TO_FLOAT, IMAGENET, DOMAIN, "normalizer_processor")]
    want = [n for n in (TO_FLOAT, IMAGENET, DOMAIN, "normalizer_processor") if n in names]
    if order != want:
        raise ConfigError(
            f"{path / lf.PREPROCESSOR}: steps in the order {order}; vlastack's X-VLA loader "
            f"runs them as LeRobot's factory writes them ({want})"
        )
    by = {s.name: s.config for s in pre}
    to_float, imagenet, domain = by.get(TO_FLOAT, {}), by.get(IMAGENET, {}), by.get(DOMAIN, {})
    images = ImageSteps(
        _keys(to_float.get("image_keys")),
        bool(to_float.get("validate_range", True)),
        _keys(imagenet.get("image_keys")),
        TO_FLOAT in by,
        IMAGENET in by,
    )
    rename: dict[str, str] = {}
    for s in pre:
        if s.name == lf.RENAME_STEP:
            rename.update(s.config.get("rename_map") or {})
    base = Processors(
        rename,
        _normalizer(path, pre, "normalizer_processor"),
        _normalizer(path, post, "unnormalizer_processor"),
    )
    try:
        domain_id = int(domain.get("domain_id", 0)) if DOMAIN in by else 0
    except (TypeError, ValueError):
        raise ConfigError(
            f"{path / lf.PREPROCESSOR}: xvla_add_domain_id 'domain_id' must be an integer, "
            f"got {domain.get('domain_id')!r}"
        ) from None
    tok = TokenizerStep.from_config(toks[0].config, str(path / lf.PREPROCESSOR))
    return XVLAProcessors(base, tok, images, domain_id)


def image_to_float(key: str, x: torch.Tensor, validate: bool = True) -> torch.Tensor:
    """``xvla_image_to_float`` on one camera's batch tensor."""
    lo, hi = float(x.min()), float(x.max())
    if hi <= 1.0:
        return x.float()
    if validate and (lo < 0.0 or hi > 255.0):
        raise ConfigError(
            f"image {key!r} has values outside [0, 255] (min {lo:.4f}, max {hi:.4f}); send "
            "uint8 frames or floats in [0, 1]"
        )
    return x.float() / 255.0


def imagenet_normalize(key: str, x: torch.Tensor) -> torch.Tensor:
    """``xvla_imagenet_normalize`` on one camera's (B, C, H, W) tensor."""
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise ConfigError(
            f"image {key!r} has values outside [0, 1] (min {lo:.4f}, max {hi:.4f}); X-VLA's "
            "ImageNet normalization needs images in [0, 1]"
        )
    mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype).view(3, 1, 1)
    return (x - mean) / std


def selected(keys: tuple[str, ...] | None, key: str) -> bool:
    return key.startswith(IMAGE_PREFIX) if keys is None else key in keys


def pad_state(x: torch.Tensor, width: int) -> torch.Tensor:
    """LeRobot's ``pad_vector(..., truncate=True)``: zero-pad or cut the last dim to ``width``."""
    if x.shape[-1] >= width:
        return x[..., :width]
    return F.pad(x, (0, width - x.shape[-1]))


def resize_with_pad(img: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """LeRobot 0.6.1 ``vla_utils.resize_with_pad`` with pad_value 0 (X-VLA's call): keep the
    aspect ratio (bilinear, align_corners False), pad on the LEFT and TOP."""
    h, w = img.shape[2:]
    if (h, w) == (height, width):
        return img
    ratio = max(w / width, h / height)
    rh, rw = int(h / ratio), int(w / ratio)
    out = F.interpolate(img, size=(rh, rw), mode="bilinear", align_corners=False)
    return F.pad(out, (max(0, width - rw), 0, max(0, height - rh), 0), value=0.0)


def xvla_language_facts(path: Path, cfg: Mapping[str, Any]) -> tuple[Processors, dict[str, Any]]:
    """For ``vlastack inspect``: the processors and what the language input goes through (the
    tokenizer, whether it is found locally, the domain id), without loading anything."""
    from vlastack.pretrained.lerobot.hub import hub_cache_dir
    from vlastack.pretrained.lerobot.tokenizer import local_folder

    procs = read_xvla_processors(path)
    tok = procs.tokenizer
    folder = local_folder(tok.tokenizer_name, Path(path))
    cached = hub_cache_dir() / ("models--" + tok.tokenizer_name.replace("/", "--"))
    if folder is not None:
        found = f"local folder {folder.resolve()}"
    elif cached.is_dir():
        found = f"local Hugging Face cache ({cached})"
    else:
        found = f"NOT FOUND locally: `hf download {tok.tokenizer_name}`"
    text = (cfg.get("florence_config") or {}).get("text_config") or {}
    facts = {
        "tokenizer": tok.tokenizer_name,
        "tokenizer_found": found,
        "max_length": tok.max_length,
        "padding": tok.padding,
        "padding_side": tok.padding_side,
        "domain_id": procs.domain_id,
        "vlm": "Florence-2 (config.json florence_config)",
    }
    facts["summary"] = (
        f"tokenized by {tok.tokenizer_name!r} ({found}), padded to the {tok.padding} "
        f"({tok.max_length} max) on the {tok.padding_side}; the padding is attended (LeRobot "
        f"passes no mask); Florence-2 BART encoder d_model {text.get('d_model', '?')}; "
        f"domain id {procs.domain_id} (xvla_add_domain_id)"
    )
    return procs.base, facts
