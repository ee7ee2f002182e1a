"""Checkpoint formats other than vlastack's own, registered by plugins.

A format is a ``detect(path) -> bool`` that recognises its checkpoint folder from the files in it
(cheaply: no weights read) and a ``load(path, *, expect_embodiment=None, embodiment=None,
device=None)`` that returns an object with the policy contract (``reset()``, ``infer(obs) -> {"actions": (H, A)}``,
optionally ``metadata``). ``evaluation.rollout.load_policy`` (``vlastack eval`` and the suites)
asks the registered formats first and loads a folder none of them claims as a native vlastack
checkpoint (``Policy.from_checkpoint``), which stays the default; ``vlastack serve``,
``vlastack bench latency`` and ``vlastack inspect`` ask them first too. Each of those also takes
a hub id (``lerobot/xxx``) found in the local Hugging Face cache (``resolve_checkpoint_arg``).

This module imports only the registry (and the torch-free folder reader of the built-in
formats), so evaluation, serving and the CLI can all use it. Built in: ``lerobot_act``,
``lerobot_diffusion``, ``lerobot_smolvla``, ``lerobot_pi0``, ``lerobot_pi05`` and
``lerobot_xvla``, LeRobot ACT / Diffusion Policy / SmolVLA / pi0 / pi0.5 / X-VLA
``pretrained_model`` folders
(``vlastack.pretrained.lerobot``), whose torch code is imported only when such a folder
loads, ``openpi_pi0`` (openpi's PyTorch pi0 / pi0.5 checkpoints), and
``lerobot_finetuned``, the checkpoints ``vlastack train --init-from`` writes for them
(``pretrained.lerobot.finetune``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlastack.errors import ConfigError, VlastackError
from vlastack.registry import Entry, Registry


@dataclass(frozen=True)
class PolicyFormat:
    """How to recognise and load one kind of checkpoint folder."""

    detect: Callable[[Path], bool]
    load: Callable[..., Any]
    # ``vlastack inspect``: path -> (JSON-ready facts, the plain-words report of them); None
    # for a format that cannot explain itself (inspect then says so)
    describe: Callable[[Path], tuple[dict[str, Any], str]] | None = None


POLICY_FORMATS: Registry[PolicyFormat] = Registry("checkpoint format")


def register_policy_format(
    name: str,
    detect: Callable[[Path], bool],
    load: Callable[..., Any],
    description: str = "",
    describe: Callable[[Path], tuple[dict[str, Any], str]] | None = None,
) -> None:
    """Add a checkpoint format (see the module docstring for ``detect`` and ``load``;
    ``describe`` feeds ``vlastack inspect``)."""
    POLICY_FORMATS.add(name, PolicyFormat(detect, load, describe), description)


def detect_policy_format(path: str | Path) -> Entry[PolicyFormat] | None:
    """The registered format that claims the folder ``path``; None: a native checkpoint (or
    none at all). Two formats claiming one folder is a ConfigError naming them."""
    p = Path(path)
    hits = [e for e in POLICY_FORMATS.entries() if e.obj.detect(p)]
    if len(hits) > 1:
        raise ConfigError(
            f"{p} is claimed by several checkpoint formats ({', '.join(e.name for e in hits)}); "
            "their plugins' detect() functions overlap: make one of them stricter, or load "
            "without one of those plugins (VLASTACK_PLUGINS)"
        )
    return hits[0] if hits else None


def load_registered_policy(path: str | Path, **kw: Any) -> Any | None:
    """Load ``path`` with the registered format that claims it (``kw``: ``expect_embodiment``,
    ``embodiment``, ``device``); None when none does, so the caller loads a native checkpoint."""
    fmt = detect_policy_format(path)
    return None if fmt is None else fmt.obj.load(Path(path), **kw)


def resolve_checkpoint_arg(text: str | Path) -> Path:
    """A checkpoint argument as a local folder: an existing path as given; a hub id such as
    ``lerobot/act_aloha_sim_transfer_cube_human`` that is no local path, from the local Hugging
    Face cache (ConfigError naming the id and the download command when it is not cached); any
    other text as given, for the caller's 'no such folder' error."""
    from vlastack.pretrained.lerobot.hub import resolve_checkpoint_arg as resolve

    return resolve(text)


def _is_lerobot_act(path: Path) -> bool:
    from vlastack.pretrained.lerobot.folder import is_lerobot_folder

    return is_lerobot_folder(path, "act")


def _load_lerobot_act(path: Path, **kw: Any) -> Any:
    from vlastack.pretrained.lerobot.policy import load_lerobot_act

    return load_lerobot_act(path, **kw)


def _lerobot_describer(policy_type: str, format_name: str) -> Callable[[Path], Any]:
    def describe(path: Path) -> tuple[dict[str, Any], str]:
        from vlastack.pretrained.lerobot.describe import describe_folder, format_text

        info = describe_folder(path, policy_type, format_name)
        return info, format_text(info)

    return describe


def _is_lerobot_diffusion(path: Path) -> bool:
    from vlastack.pretrained.lerobot.folder import is_lerobot_folder

    return is_lerobot_folder(path, "diffusion")


def _load_lerobot_diffusion(path: Path, **kw: Any) -> Any:
    from vlastack.pretrained.lerobot.diffusion_policy import load_lerobot_diffusion

    return load_lerobot_diffusion(path, **kw)


register_policy_format(
    "lerobot_act",
    _is_lerobot_act,
    _load_lerobot_act,
    "LeRobot ACT pretrained_model folder (config.json type 'act', model.safetensors, "
    "policy_preprocessor.json)",
    _lerobot_describer("act", "lerobot_act"),
)
register_policy_format(
    "lerobot_diffusion",
    _is_lerobot_diffusion,
    _load_lerobot_diffusion,
    "LeRobot Diffusion Policy pretrained_model folder (config.json type 'diffusion', "
    "model.safetensors, policy_preprocessor.json)",
    _lerobot_describer("diffusion", "lerobot_diffusion"),
)


def _is_lerobot_int8(path: Path) -> bool:
    from vlastack.pretrained.lerobot.folder import is_int8_folder

    return is_int8_folder(path)


def _load_lerobot_int8(path: Path, **kw: Any) -> Any:
    from vlastack.pretrained.lerobot.quantize import load_lerobot_int8

    return load_lerobot_int8(path, **kw)


register_policy_format(
    "lerobot_int8",
    _is_lerobot_int8,
    _load_lerobot_int8,
    "int8 copy of a LeRobot ACT / Diffusion Policy / SmolVLA / pi0 / pi0.5 folder written by `vlastack export quantize` "
    "(quantization.json, model_int8.safetensors)",
)


def _is_lerobot_finetuned(path: Path) -> bool:
    """A vlastack checkpoint (or its run / ``checkpoints`` folder) whose config.json says
    ``"format": "lerobot_finetuned"``; reads that one JSON file, imports no torch."""
    import json

    from vlastack.checkpoints import resolve_checkpoint

    if not Path(path).is_dir():
        return False
    try:
        ckpt = resolve_checkpoint(path)
        cfg = json.loads((ckpt / "config.json").read_text())
    except (VlastackError, OSError, ValueError):
        return False
    return isinstance(cfg, dict) and cfg.get("format") == "lerobot_finetuned"


def _load_lerobot_finetuned(path: Path, **kw: Any) -> Any:
    import vlastack.pretrained.lerobot.pi_finetune  # noqa: F401  (registers pi0, pi05)
    import vlastack.pretrained.lerobot.vla_finetune  # noqa: F401  (registers smolvla)
    from vlastack.pretrained.lerobot.finetune import load_finetuned

    return load_finetuned(path, **kw)


def _describe_lerobot_finetuned(path: Path) -> tuple[dict[str, Any], str]:
    from vlastack.pretrained.lerobot.finetune import describe_finetuned

    return describe_finetuned(path)


register_policy_format(
    "lerobot_finetuned",
    _is_lerobot_finetuned,
    _load_lerobot_finetuned,
    "a LeRobot ACT / Diffusion Policy fine-tuned by `vlastack train --init-from` (a vlastack "
    "checkpoint folder whose config.json has format 'lerobot_finetuned')",
    _describe_lerobot_finetuned,
)


def _is_lerobot_smolvla(path: Path) -> bool:
    from vlastack.pretrained.lerobot.folder import is_lerobot_folder

    return is_lerobot_folder(path, "smolvla")


def _load_lerobot_smolvla(path: Path, **kw: Any) -> Any:
    from vlastack.pretrained.lerobot.smolvla_policy import load_lerobot_smolvla

    return load_lerobot_smolvla(path, **kw)


register_policy_format(
    "lerobot_smolvla",
    _is_lerobot_smolvla,
    _load_lerobot_smolvla,
    "LeRobot SmolVLA pretrained_model folder (config.json type 'smolvla', model.safetensors, "
    "policy_preprocessor.json; VLM config and tokenizer from a local folder or the HF cache)",
    _lerobot_describer("smolvla", "lerobot_smolvla"),
)


def _lerobot_pi_format(policy_type: str) -> tuple[Callable[[Path], bool], Callable[..., Any]]:
    def detect(path: Path) -> bool:
        from vlastack.pretrained.lerobot.folder import is_lerobot_folder

        return is_lerobot_folder(path, policy_type)

    def load(path: Path, **kw: Any) -> Any:
        from vlastack.pretrained.lerobot.pi0_policy import load_lerobot_pi0

        return load_lerobot_pi0(path, policy_type=policy_type, **kw)

    return detect, load


for _kind, _words in (("pi0", "pi0"), ("pi05", "pi0.5")):
    register_policy_format(
        f"lerobot_{_kind}",
        *_lerobot_pi_format(_kind),
        f"LeRobot {_words} pretrained_model folder (config.json type '{_kind}', "
        "model.safetensors, policy_preprocessor.json; PaliGemma's tokenizer from a local folder "
        "or the Hugging Face cache)",
        _lerobot_describer(_kind, f"lerobot_{_kind}"),
    )


def _is_lerobot_xvla(path: Path) -> bool:
    from vlastack.pretrained.lerobot.folder import is_lerobot_folder

    return is_lerobot_folder(path, "xvla")


def _load_lerobot_xvla(path: Path, **kw: Any) -> Any:
    from vlastack.pretrained.lerobot.xvla_policy import load_lerobot_xvla

    return load_lerobot_xvla(path, **kw)


register_policy_format(
    "lerobot_xvla",
    _is_lerobot_xvla,
    _load_lerobot_xvla,
    "LeRobot X-VLA pretrained_model folder (config.json type 'xvla' with its florence_config, "
    "model.safetensors, policy_preprocessor.json; BART's tokenizer from a local folder or the "
    "HF cache); LeRobot 0.6.1's actions on the reduced fixture, preprocessing step by step",
    _lerobot_describer("xvla", "lerobot_xvla"),
)


def _is_openpi_pi0(path: Path) -> bool:
    from vlastack.pretrained.lerobot.openpi_folder import is_openpi_folder

    return is_openpi_folder(path)


def _describe_openpi_pi0(path: Path) -> tuple[dict[str, Any], str]:
    from vlastack.pretrained.lerobot.openpi_pi0 import describe_openpi

    return describe_openpi(path)


def _load_openpi_pi0(path: Path, **kw: Any) -> Any:
    from vlastack.pretrained.lerobot.openpi_pi0 import load_openpi_pi0

    return load_openpi_pi0(path, **kw)


register_policy_format(
    "openpi_pi0",
    _is_openpi_pi0,
    _load_openpi_pi0,
    "openpi PyTorch pi0 / pi0.5 checkpoint (convert_jax_model_to_pytorch.py output: config.json "
    "with action_horizon, model.safetensors, assets/<asset_id>/norm_stats.json)",
    _describe_openpi_pi0,
)


__all__ = [
    "POLICY_FORMATS",
    "PolicyFormat",
    "detect_policy_format",
    "load_registered_policy",
    "register_policy_format",
    "resolve_checkpoint_arg",
]
