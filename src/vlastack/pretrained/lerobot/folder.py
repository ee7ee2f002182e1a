"""Reading a LeRobot 0.6.1 ``pretrained_model`` folder: what is in it, without building anything.

The folder holds ``config.json`` (the policy config; its ``"type"`` names the policy),
``model.safetensors`` (the policy state dict), ``policy_preprocessor.json`` and
``policy_postprocessor.json`` (the processor pipelines: a list of steps, each with a
``registry_name``, a ``config`` and, for the normalizer steps, a ``state_file`` of stats stored
flat as ``'<feature>.<stat>'``). ``is_lerobot_folder`` recognises one from its file names and
config type alone (no torch import, no weights read), which is what the checkpoint-format
registration needs; the readers below turn the JSON into plain dicts and dataclasses.

Verified against the fixtures in ``shared/fixtures/lerobot_policies/act`` (LeRobot 0.6.1):
step names ``rename_observations_processor``, ``to_batch_processor``, ``device_processor``,
``normalizer_processor``, ``unnormalizer_processor``; stats keys such as
``observation.images.top.mean`` (the feature name itself contains dots, so the stat is the part
after the last dot).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlastack.errors import ConfigError

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
PREPROCESSOR = "policy_preprocessor.json"
POSTPROCESSOR = "policy_postprocessor.json"

# Steps whose effect at inference on one CPU/GPU observation is nothing vlastack has to redo:
# batching (vlastack adds the batch dimension itself) and device placement (float_dtype null).
PASSIVE_STEPS = ("to_batch_processor", "device_processor")
NORMALIZER_STEPS = ("normalizer_processor", "unnormalizer_processor")
RENAME_STEP = "rename_observations_processor"


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path} is missing; a LeRobot pretrained_model folder has it") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} is not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def config_type(path: Path) -> str | None:
    """The ``"type"`` of ``path/config.json``; None when the file is absent or unreadable."""
    try:
        data = json.loads((path / CONFIG).read_text())
    except (OSError, ValueError):
        return None
    kind = data.get("type") if isinstance(data, dict) else None
    return kind if isinstance(kind, str) else None


def is_lerobot_folder(path: Path, policy_type: str) -> bool:
    """True for a LeRobot ``pretrained_model`` folder of ``policy_type``: config.json with that
    ``"type"``, model.safetensors and either policy_preprocessor.json (LeRobot >= 0.4) or stats
    buffers named in the safetensors header (LeRobot < 0.4, ``legacy``). Reads only config.json
    and, without the processor file, the safetensors header (no torch import)."""
    from vlastack.pretrained.lerobot.legacy import has_legacy_stats

    path = Path(path)
    if not (path / WEIGHTS).is_file() or config_type(path) != policy_type:
        return False
    return (path / PREPROCESSOR).is_file() or has_legacy_stats(path / WEIGHTS)


QUANT_FILE = "quantization.json"  # the int8 copies ``quantize.quantize_lerobot`` writes
WEIGHTS_INT8 = "model_int8.safetensors"


def is_int8_folder(path: Path) -> bool:
    """An int8 copy written by ``vlastack export quantize`` (``quantize.py``): quantization.json
    with format ``lerobot_int8`` beside model_int8.safetensors. Reads that JSON only."""
    path = Path(path)
    if not (path / QUANT_FILE).is_file() or not (path / WEIGHTS_INT8).is_file():
        return False
    try:
        info = json.loads((path / QUANT_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and info.get("format") == "lerobot_int8"


def read_config(path: Path, policy_type: str) -> dict[str, Any]:
    """config.json of the folder; a different ``"type"`` is a ConfigError saying which loader
    fits."""
    cfg = read_json(Path(path) / CONFIG)
    kind = cfg.get("type")
    if kind != policy_type:
        raise ConfigError(
            f"{Path(path) / CONFIG}: 'type' is {kind!r}, not {policy_type!r}; this loader reads "
            f"LeRobot {policy_type!r} checkpoints only: point it at a {policy_type} "
            "pretrained_model folder (or load this one with the loader for its type)"
        )
    return cfg


@dataclass(frozen=True)
class Feature:
    """One entry of ``input_features``/``output_features``: ``type`` is VISUAL, STATE, ENV or
    ACTION; ``shape`` as stored (images (C, H, W))."""

    key: str
    type: str
    shape: tuple[int, ...]


def read_features(cfg: dict[str, Any], field_name: str) -> list[Feature]:
    """Features in the order config.json lists them (LeRobot keeps that order, e.g. for the
    cameras fed to ACT)."""
    raw = cfg.get(field_name) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config.json '{field_name}' must be an object, got {raw!r}")
    out = []
    for key, spec in raw.items():
        try:
            out.append(Feature(key, str(spec["type"]), tuple(int(s) for s in spec["shape"])))
        except (KeyError, TypeError, ValueError):
            raise ConfigError(
                f"config.json '{field_name}.{key}' needs 'type' and 'shape', got {spec!r}"
            ) from None
    return out


@dataclass
class Step:
    """One processor step: its registry name, config and (normalizers) stats file."""

    name: str
    config: dict[str, Any] = field(default_factory=dict)
    state_file: str | None = None


def read_pipeline(path: Path, filename: str) -> list[Step]:
    """The steps of ``policy_preprocessor.json``/``policy_postprocessor.json``, in order."""
    return parse_pipeline(read_json(Path(path) / filename), str(Path(path) / filename))


def parse_pipeline(data: dict[str, Any], where: str) -> list[Step]:
    """The steps of a processor pipeline already read as JSON (``where`` names it in errors)."""
    steps = data.get("steps")
    if not isinstance(steps, list):
        raise ConfigError(f"{where} has no 'steps' list")
    out = []
    for i, s in enumerate(steps):
        if not isinstance(s, dict) or not isinstance(s.get("registry_name"), str):
            raise ConfigError(f"{where}: step {i} has no 'registry_name'")
        out.append(Step(s["registry_name"], dict(s.get("config") or {}), s.get("state_file")))
    return out


def read_stats(path: Path, state_file: str) -> dict[str, dict[str, Any]]:
    """A normalizer state file as ``{feature: {stat: float32 tensor}}``."""
    import torch
    from safetensors.torch import load_file

    file = Path(path) / state_file
    if not file.is_file():
        raise ConfigError(f"{file} is missing; the processor JSON names it as the step's stats")
    stats: dict[str, dict[str, Any]] = {}
    for flat, tensor in load_file(str(file)).items():
        key, _, stat = flat.rpartition(".")
        if not key:
            raise ConfigError(f"{file}: stats key {flat!r} is not '<feature>.<stat>'")
        stats.setdefault(key, {})[stat] = tensor.to(torch.float32)
    return stats


@dataclass(frozen=True)
class FolderJSON:
    """The JSON files of a ``pretrained_model`` folder as read at load: ``config.json`` and the
    two processor pipelines (None where the folder has none: a LeRobot < 0.4 folder, or no
    postprocessor). The policy keeps them so that ``write`` can write the folder back: they hold
    no weights or stats, and fine-tuning changes neither the architecture nor the steps."""

    config: dict[str, Any]
    preprocessor: dict[str, Any] | None
    postprocessor: dict[str, Any] | None


def read_folder_json(path: Path, cfg: dict[str, Any]) -> FolderJSON:
    """``cfg`` (config.json, already read) and the processor JSON of the folder ``path``."""
    path = Path(path)

    def optional(name: str) -> dict[str, Any] | None:
        return read_json(path / name) if (path / name).is_file() else None

    return FolderJSON(cfg, optional(PREPROCESSOR), optional(POSTPROCESSOR))


def check_steps(path: Path, filename: str, steps: list[Step], known: tuple[str, ...]) -> None:
    """A step this loader does not implement is an error naming it, not a silent skip."""
    for s in steps:
        if s.name not in known:
            raise ConfigError(
                f"{Path(path) / filename}: processor step {s.name!r} is not supported by "
                f"vlastack's LeRobot loader (supported: {', '.join(known)}); remove the step "
                "if it does nothing at inference, or add it to vlastack.pretrained.lerobot"
            )
