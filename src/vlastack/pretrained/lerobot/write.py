"""Writing an imported LeRobot ACT / Diffusion Policy / SmolVLA back as a LeRobot 0.6.1
``pretrained_model`` folder (``vlastack export lerobot CKPT --out DIR``).

What is written, from the policy object as it is now (so a fine-tuned policy exports its new
weights and stats; no file of the source folder is copied):

* ``model.safetensors``: the network's ``state_dict()`` (LeRobot's key names, which the loader
  checks one for one: ``weights.load_strict``), as CPU tensors, no metadata (as LeRobot's
  ``save_pretrained``).
* each normalizer step's ``state_file`` (``policy_preprocessor_step_<i>_normalizer_processor``
  / ``policy_postprocessor_step_<i>_unnormalizer_processor.safetensors``): the policy's
  normalizer / unnormalizer stats, flat ``'<feature>.<stat>'``, float32, in the shapes the
  source file had (``FeatureNormalizer.flat_stats``).
* ``config.json``, ``policy_preprocessor.json``, ``policy_postprocessor.json``: the source's JSON
  as read at load (``folder.FolderJSON``; they hold no weights or stats), formatted as LeRobot
  0.6.1 writes them (draccus: indent 4; processor pipelines: indent 2; no final newline), so
  the three files of the fixtures come back byte for byte. No field is changed: in particular
  ``device`` (config.json and the ``device_processor`` steps) stays the source's, whatever
  device the policy ran on.

A checkpoint of ``vlastack train --init-from`` (``finetune``, format ``lerobot_finetuned``)
exports the same way: its policy carries the source's JSON (with the camera renames the
fine-tune added) and the stats it trained with.

A LeRobot < 0.4 folder (stats as buffers in model.safetensors, no processor JSON) and a native
vlastack checkpoint are ConfigErrors. The folder is written into a temporary sibling and renamed
into place (``vlastack.atomic``), so ``--out`` never holds half an export; a non-empty ``--out``
is refused unless ``force`` (then the old folder is moved aside, replaced, and deleted).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from vlastack.atomic import fsync_dir, fsync_file, staged_path
from vlastack.errors import ConfigError
from vlastack.pretrained.lerobot import folder as lf
from vlastack.pretrained.lerobot.normalize import FeatureNormalizer

FORMATS = (
    "lerobot_act",
    "lerobot_diffusion",
    "lerobot_smolvla",
    "lerobot_finetuned",
    "lerobot_pi0",
    "lerobot_pi05",
    "lerobot_xvla",
)


def _parts(policy: Any) -> tuple[torch.nn.Module, Any, Any, lf.FolderJSON]:
    """(network, normalizer, unnormalizer, source JSON) of an imported ACT or Diffusion
    policy."""
    from vlastack.pretrained.lerobot.diffusion_policy import LeRobotDiffusionPolicy
    from vlastack.pretrained.lerobot.policy import LeRobotACTPolicy
    from vlastack.pretrained.lerobot.smolvla_policy import LeRobotSmolVLAPolicy

    if isinstance(policy, LeRobotACTPolicy):
        norm, unnorm = policy.normalizer, policy.unnormalizer
    elif isinstance(policy, (LeRobotDiffusionPolicy, LeRobotSmolVLAPolicy)) or hasattr(
        policy,
        "lerobot_state_dict",  # pi0 / pi0.5 (pi0_policy.LeRobotPi0Policy), X-VLA
    ):
        norm, unnorm = policy.processors.normalizer, policy.processors.unnormalizer
    else:
        raise ConfigError(
            f"{type(policy).__name__} is not an imported LeRobot policy; only LeRobot ACT, "
            "Diffusion Policy and SmolVLA checkpoints loaded by vlastack can be written back as "
            "LeRobot pretrained_model folders"
        )
    if getattr(policy, "quantization", None):
        raise ConfigError(
            f"{policy.checkpoint or 'this policy'} is an int8 copy (lerobot_int8); LeRobot "
            "folders hold float weights: export the float source folder instead"
        )
    src = policy.folder_json
    if src is None or src.preprocessor is None:
        raise ConfigError(
            f"{policy.checkpoint or 'this policy'} was loaded from a LeRobot < 0.4 folder (stats "
            "in model.safetensors, no policy_preprocessor.json); exporting it is not supported: "
            "convert it with LeRobot's own migration script first"
        )
    return policy.network, norm, unnorm, src


def _stats_files(
    pipeline: dict[str, Any] | None, normalizer: FeatureNormalizer | None, filename: str
) -> dict[str, bytes]:
    """The state file of the pipeline's normalizer step, from ``normalizer``'s stats."""
    from safetensors.torch import save

    out: dict[str, bytes] = {}
    for step in (pipeline or {}).get("steps", []):
        if step.get("registry_name") not in lf.NORMALIZER_STEPS or not step.get("state_file"):
            continue
        if normalizer is None:
            raise ConfigError(f"{filename} names {step['state_file']} but the policy has no stats")
        out[str(step["state_file"])] = save(normalizer.flat_stats())
    return out


def folder_files(policy: Any) -> dict[str, bytes]:
    """File name -> contents of the ``pretrained_model`` folder for ``policy``."""
    from safetensors.torch import save

    network, norm, unnorm, src = _parts(policy)
    # pi0 / pi0.5 add the saved-but-unused lm_head matrices the network does not hold; X-VLA
    # leaves out the tied embedding safetensors does not save twice
    state = policy.lerobot_state_dict() if hasattr(policy, "lerobot_state_dict") else None
    weights = {
        k: v.detach().to("cpu").contiguous().clone()
        for k, v in (state if state is not None else network.state_dict()).items()
    }
    files = {
        lf.CONFIG: json.dumps(src.config, indent=4).encode(),
        # X-VLA: safetensors' save_model records the tied alias it left out in the metadata
        lf.WEIGHTS: save(weights, metadata=getattr(policy, "lerobot_file_metadata", None)),
        lf.PREPROCESSOR: json.dumps(src.preprocessor, indent=2).encode(),
    }
    files.update(_stats_files(src.preprocessor, norm, lf.PREPROCESSOR))
    if src.postprocessor is not None:
        files[lf.POSTPROCESSOR] = json.dumps(src.postprocessor, indent=2).encode()
        files.update(_stats_files(src.postprocessor, unnorm, lf.POSTPROCESSOR))
    return files


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ConfigError(
            f"--out {out} exists and is not empty; pass --force to replace it, or choose "
            "another folder"
        )


def write_pretrained(policy: Any, out: str | Path, *, force: bool = False) -> Path:
    """Write ``policy`` (an imported LeRobot ACT / Diffusion policy, possibly fine-tuned) as a
    LeRobot ``pretrained_model`` folder at ``out``, atomically (see the module docstring)."""
    out = Path(out)
    _check_out(out, force)
    files = folder_files(policy)
    tmp = staged_path(out)
    tmp.mkdir()
    old: Path | None = None
    try:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
            fsync_file(tmp / name)
        fsync_dir(tmp)
        _check_out(out, force)  # again: another writer may have filled it meanwhile
        if out.is_dir() and any(out.iterdir()):
            old = staged_path(out)
            os.replace(out, old)
        try:
            os.replace(tmp, out)  # also replaces an empty folder
        except BaseException:
            if old is not None:
                os.replace(old, out)
                old = None
            raise
        fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return out


def export_checkpoint(checkpoint: str | Path, out: str | Path, *, force: bool = False) -> Path:
    """Load the LeRobot ACT / Diffusion folder (or cached hub id) ``checkpoint`` and write it
    back at ``out`` (``write_pretrained``); anything else is a ConfigError saying that only
    imported LeRobot policies can be exported this way."""
    from vlastack.policy_formats import detect_policy_format, resolve_checkpoint_arg

    path = resolve_checkpoint_arg(checkpoint)
    if not path.is_dir():
        raise ConfigError(f"{path} is not a checkpoint folder")
    fmt = detect_policy_format(path)
    if fmt is None or fmt.name not in FORMATS:
        if fmt is not None:
            kind = f"a {fmt.name!r} checkpoint"
        elif (path / lf.WEIGHTS).is_file():
            kind = "a native vlastack checkpoint"
        else:
            kind = "no checkpoint folder (no model.safetensors)"
        raise ConfigError(
            f"{path} is {kind}; only imported LeRobot policies (ACT, Diffusion Policy, SmolVLA, "
            "pi0, pi0.5 or X-VLA pretrained_model folders) can be exported with `vlastack "
            "export lerobot`"
        )
    _check_out(Path(out), force)  # before loading the weights
    # pi0 / pi0.5: no tokenizer needed to write weights and stats back
    kw = {"tokenizer": False} if fmt.name in ("lerobot_pi0", "lerobot_pi05", "lerobot_xvla") else {}
    policy = fmt.obj.load(path, device="cpu", **kw)
    return write_pretrained(policy, out, force=force)
