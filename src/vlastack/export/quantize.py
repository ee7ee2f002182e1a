"""Post-training quantization of a trained VLA's checkpoint: int8 linear layers and BitVLA ternary
weights (the layer swaps themselves are ``models.quantize``).

``quantize_checkpoint`` writes a new checkpoint folder whose ``config.json`` records the method
(``"quantization"`` section) and whose ``model.safetensors`` already holds the quantized weight
values (int8 per-channel grid, or {-1, 0, 1}·scale for BitNet b1.58, Ma et al. 2402.17764; BitVLA
2506.07530), so a plain ``Policy.from_checkpoint`` reproduces the quantized numerics and
``load_policy`` also rebuilds the int8 kernels. ``export.comparison.compare`` reports accuracy,
latency and memory against the source checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vlastack.errors import ConfigError, DataError
from vlastack.models.bitlinear import BitLinear
from vlastack.models.quantize import (
    DEFAULT_PARTS,
    INT8_BACKENDS,
    INT8_SKIP,
    METHODS,
    PARTS,
    Int8Linear,
    apply_quantization,
    check_parts,
    fake_quantize_int8_,
    int8_per_channel,
    is_int8_linear,
    quantize_dynamic_int8,
    resolve_int8_backend,
    ternarize_model,
    ternary_storage_weight,
)

QUANT_FORMAT_VERSION = 1  # of the config.json "quantization" section

# ---- checkpoints -------------------------------------------------------------------------------


def _bitlinear_storage_(model: nn.Module) -> int:
    """Replace every BitLinear weight by its exact storage form (``ternary_storage_weight``)."""
    count = 0
    for mod in model.modules():
        if isinstance(mod, BitLinear):
            with torch.no_grad():
                mod.weight.copy_(ternary_storage_weight(mod.weight))
            count += 1
    return count


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2))


# imported formats with an int8 path (pretrained.lerobot.quantize)
LEROBOT_INT8 = (
    "lerobot_act",
    "lerobot_diffusion",
    "lerobot_smolvla",
    "lerobot_pi0",
    "lerobot_pi05",
)


def refuse_imported(src: str | Path, method: str = "int8") -> None:
    """ConfigError when ``src`` is a folder a registered checkpoint format claims (an imported
    policy) that ``quantize_checkpoint`` cannot quantize with ``method``: LeRobot ACT / Diffusion
    / SmolVLA / pi0 / pi0.5 folders take int8 (``pretrained.lerobot.quantize``), nothing
    imported takes ternary."""
    from vlastack.policy_formats import detect_policy_format

    fmt = detect_policy_format(src)
    if fmt is None or (fmt.name in LEROBOT_INT8 and method == "int8"):
        return
    raise ConfigError(
        f"{src} is an imported {fmt.name!r} checkpoint; `vlastack export quantize` takes "
        f"native vlastack checkpoints (int8, ternary) and LeRobot ACT / Diffusion Policy / "
        f"SmolVLA / pi0 / pi0.5 folders (int8 only), not {method!r} on this one. Use `vlastack export onnx` "
        "(float32 graphs + manifest) or quantize the float source"
    )


def quantize_checkpoint(
    src: str | Path,
    dst: str | Path,
    method: str = "int8",
    parts: Iterable[str] | None = None,
    *,
    backend: str = "auto",
    overwrite: bool = False,
) -> Path:
    """Write a quantized copy of checkpoint ``src`` to the folder ``dst`` (atomically).

    ``int8``: selected linear weights are rounded to their int8 per-channel grid; ``load_policy``
    swaps in int8 kernels (``backend``). ``ternary``: the parts are added to the model config's
    ``ternary`` list (so ``build_vla`` makes them ``BitLinear``) and weights are stored as
    {-1, 0, 1}·scale. ``config.json["quantization"]`` records method, parts and backend.
    """
    from vlastack.training.checkpoint import FORMAT_VERSION, save_weights

    if method not in METHODS:
        raise ConfigError(f"quantization method {method!r} unknown; choose one of {METHODS}")
    refuse_imported(src, method)
    from vlastack.policy_formats import detect_policy_format

    fmt = detect_policy_format(src)
    if fmt is not None and fmt.name in LEROBOT_INT8:
        if parts is not None:
            raise ConfigError(
                "--parts names parts of native vlastack models; a LeRobot folder is quantized "
                "whole (every linear layer): drop --parts"
            )
        from vlastack.pretrained.lerobot.quantize import quantize_lerobot

        return quantize_lerobot(src, dst, backend=backend, overwrite=overwrite)
    chosen = list(parts) if parts is not None else list(DEFAULT_PARTS[method])
    check_parts(chosen)
    dst = Path(dst)
    if dst.exists() and not overwrite:
        raise ConfigError(f"{dst} already exists; pass another --out folder or overwrite=True")
    from vlastack.policy import load_vla

    ckpt, model = load_vla(src)
    if ckpt.config.get("quantization"):
        raise ConfigError(
            f"{ckpt.path} is already quantized ({ckpt.config['quantization'].get('method')}); "
            "quantize the original full-precision checkpoint instead"
        )
    config = json.loads(json.dumps(ckpt.config))
    info: dict[str, Any] = {
        "method": method,
        "parts": chosen,
        "format_version": QUANT_FORMAT_VERSION,
        "source": str(ckpt.path),
    }
    if method == "int8":
        info["backend"] = resolve_int8_backend(backend)
        info["num_layers"] = fake_quantize_int8_(model, chosen)
        weights = model.state_dict()
    else:
        from vlastack.models.vla import TERNARY_PARTS

        bad = [p for p in chosen if p not in TERNARY_PARTS]
        if bad:
            raise ConfigError(
                f"ternary parts {bad} are not supported by the model config; choose from "
                f"{list(TERNARY_PARTS)}"
            )
        cfg_model = dict(config["model"])
        cfg_model["ternary"] = sorted(set(cfg_model.get("ternary") or []) | set(chosen))
        config["model"] = cfg_model
        ternarize_model(model, chosen)
        info["num_layers"] = _bitlinear_storage_(model)
        weights = model.state_dict()
    # Keep the same key set as the source (frozen external weights such as MiniLM stay out).
    weights = {k: v for k, v in weights.items() if k in ckpt.weights}
    if method == "int8":
        from vlastack.checkpoints import pack_int8_weights

        weights, info["stored_int8"] = pack_int8_weights(weights)
        info["storage"] = "int8"
    config["quantization"] = info

    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.parent / f".tmp-{dst.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        save_weights(tmp / "model.safetensors", weights)
        _write_json(tmp / "config.json", config)
        _write_json(tmp / "normalization.json", ckpt.normalization)
        if ckpt.embodiment is not None:
            _write_json(tmp / "embodiment.json", ckpt.embodiment.to_dict())
        (tmp / "format_version").write_text(f"{FORMAT_VERSION}\n")
        if dst.exists():
            old = dst.parent / f".old-{dst.name}-{os.getpid()}"
            dst.rename(old)
            tmp.rename(dst)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(dst)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dst


def ternarize_checkpoint(
    src: str | Path, dst: str | Path, parts: Iterable[str] | None = None, **kw: Any
) -> Path:
    """BitVLA 1.58-bit weights applied post-training to ``parts`` of checkpoint ``src``."""
    return quantize_checkpoint(src, dst, "ternary", parts, **kw)


def quantization_info(path: str | Path) -> dict[str, Any] | None:
    """The ``quantization`` section of a checkpoint's config.json (None for full precision)."""
    from vlastack.checkpoints import resolve_checkpoint
    from vlastack.pretrained.lerobot.quantize import QUANT_FILE, is_lerobot_int8

    if is_lerobot_int8(Path(path)):
        return dict(json.loads((Path(path) / QUANT_FILE).read_text()))
    p = resolve_checkpoint(path) / "config.json"
    try:
        info = json.loads(p.read_text()).get("quantization")
    except json.JSONDecodeError as exc:
        raise DataError(f"{p}: not valid JSON ({exc})") from None
    return dict(info) if info else None


def load_policy(path: str | Path, **kwargs: Any) -> Any:
    """``Policy.from_checkpoint``, which rebuilds the int8 kernels a quantized checkpoint asks
    for (``apply_quantization``); kept as the export package's name for it."""
    from vlastack.policy import Policy

    return Policy.from_checkpoint(path, **kwargs)


__all__ = [
    "DEFAULT_PARTS",
    "INT8_BACKENDS",
    "INT8_SKIP",
    "METHODS",
    "PARTS",
    "QUANT_FORMAT_VERSION",
    "Int8Linear",
    "apply_quantization",
    "check_parts",
    "fake_quantize_int8_",
    "int8_per_channel",
    "is_int8_linear",
    "load_policy",
    "quantization_info",
    "quantize_checkpoint",
    "quantize_dynamic_int8",
    "resolve_int8_backend",
    "ternarize_checkpoint",
    "ternarize_model",
    "ternary_storage_weight",
]
