"""Fine-tuning an imported LeRobot ACT / Diffusion Policy: the folder as a training source, and
the fine-tuned run's checkpoint as a policy again (the ``lerobot_finetuned`` checkpoint format).

``training_source(folder)`` loads a LeRobot 0.6.1 ``pretrained_model`` folder into a
``trainable`` model and says what the training data must look like: the checkpoint's cameras
(key, C, H, W), state/env/action keys and sizes, how many observation steps a sample holds and
where its action window starts (ACT: 1 step, actions ``t .. t+chunk_size-1``; Diffusion:
``n_obs_steps`` steps, actions ``t-n_obs_steps+1 ..`` for ``horizon`` steps, as LeRobot's
``delta_timestamps`` for these policies), LeRobot's optimizer settings from config.json
(``optimizer_lr``, ``optimizer_weight_decay``, ``optimizer_betas``) and its processors.
A LeRobot < 0.4 folder (no processor JSON) is refused: convert it with LeRobot's migration
script first (the export back needs the processor JSON).

The run's checkpoint is a vlastack checkpoint folder (``training.checkpoint``) whose
``config.json`` has ``"format": "lerobot_finetuned"`` and ``model.lerobot`` = the source's
``config.json`` and processor JSON (the preprocessor's ``rename_map`` extended with the
dataset camera names mapped onto the checkpoint's); ``model.safetensors`` holds LeRobot's keys
(LoRA merged, EMA applied) and ``normalization.json`` the normalizer / unnormalizer stats
(``trainable.LeRobotBatchNormalizer.to_dict``). ``load_finetuned`` builds the same
``LeRobotACTPolicy`` / ``LeRobotDiffusionPolicy`` an imported folder gives, so ``eval``,
``serve``, ``Policy.from_checkpoint`` and ``export lerobot`` take it like the folder itself.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vlastack.errors import ConfigError
from vlastack.pretrained.lerobot import folder as lf
from vlastack.pretrained.lerobot.normalize import FeatureNormalizer
from vlastack.pretrained.lerobot.policy import Processors, read_processors
from vlastack.pretrained.lerobot.weights import load_strict

FORMAT_NAME = "lerobot_finetuned"
TYPES = ("act", "diffusion")


@dataclass
class TrainingSource:
    """An imported folder ready to fine-tune (see the module docstring)."""

    path: Path
    policy_type: str
    model: nn.Module  # trainable.ACTTrainable | trainable.DiffusionTrainable
    spec: Any
    folder_json: lf.FolderJSON
    processors: Processors
    image_keys: list[str]
    image_shape: tuple[int, ...] | None
    state_key: str | None
    state_dim: int
    env_state_key: str | None
    action_key: str
    action_dim: int
    obs_steps: int
    action_start: int
    action_steps: int
    train_defaults: dict[str, Any] = field(default_factory=dict)


def training_source(path: str | Path, device: str | torch.device = "cpu") -> TrainingSource:
    """Load the LeRobot ACT / Diffusion folder ``path`` for fine-tuning."""
    from vlastack.pretrained.lerobot.act import ACTNetwork, ACTSpec
    from vlastack.pretrained.lerobot.diffusion import DiffusionNetwork, DiffusionSpec
    from vlastack.pretrained.lerobot.trainable import ACTTrainable, DiffusionTrainable

    path = Path(path)
    kind = lf.config_type(path)
    if kind not in TYPES or not (path / lf.WEIGHTS).is_file():
        raise ConfigError(
            f"--init-from {path}: not a LeRobot ACT or Diffusion Policy pretrained_model folder "
            f"(config.json type {kind!r}; fine-tuning supports {', '.join(TYPES)}, with "
            "config.json, model.safetensors and policy_preprocessor.json)"
        )
    if not (path / lf.PREPROCESSOR).is_file():
        raise ConfigError(
            f"--init-from {path}: a LeRobot < 0.4 folder (stats in model.safetensors, no "
            f"{lf.PREPROCESSOR}); convert it with LeRobot's "
            "processor/migrate_policy_normalization.py first, then fine-tune the converted folder"
        )
    cfg = lf.read_config(path, kind)
    procs = read_processors(path, cfg)
    fj = lf.read_folder_json(path, cfg)
    betas = tuple(float(b) for b in cfg.get("optimizer_betas", (0.9, 0.999)))
    defaults = {
        "lr": float(cfg.get("optimizer_lr", 1e-5)),
        "weight_decay": float(cfg.get("optimizer_weight_decay", 1e-4)),
        "betas": betas,
    }
    model: nn.Module
    if kind == "act":
        spec: Any = ACTSpec.from_config(cfg)
        net = load_strict(lambda: ACTNetwork(spec), path / lf.WEIGHTS, device)
        model = ACTTrainable(net, spec, float(cfg.get("kl_weight", 10.0)))
        obs_steps, start, steps = 1, 0, spec.chunk_size
    else:
        spec = DiffusionSpec.from_config(cfg)
        dnet = load_strict(lambda: DiffusionNetwork(spec), path / lf.WEIGHTS, device)
        model = DiffusionTrainable(
            dnet,
            spec,
            crop_is_random=bool(cfg.get("crop_is_random", True)),
            do_mask_loss_for_padding=bool(cfg.get("do_mask_loss_for_padding", False)),
        )
        obs_steps, start, steps = spec.n_obs_steps, 1 - spec.n_obs_steps, spec.horizon
    return TrainingSource(
        path=path,
        policy_type=kind,
        model=model,
        spec=spec,
        folder_json=fj,
        processors=procs,
        image_keys=list(spec.image_keys),
        image_shape=spec.image_shape,
        state_key=spec.state_key,
        state_dim=int(spec.state_dim or 0),
        env_state_key=spec.env_state_key,
        action_key=spec.action_key,
        action_dim=int(spec.action_dim),
        obs_steps=obs_steps,
        action_start=start,
        action_steps=steps,
        train_defaults=defaults,
    )


def recomputed(
    norm: FeatureNormalizer,
    stats: dict[str, dict[str, Any]],
    key_map: dict[str, str],
    stats_file: str,
) -> FeatureNormalizer:
    """``norm`` with each feature's stats taken from a dataset's ``stats`` (``key_map``:
    checkpoint key -> dataset key), in the checkpoint's stored shapes; a stat the mode needs
    and the dataset lacks is a ConfigError naming it, the file and the fix."""
    from vlastack.pretrained.lerobot.normalize import _BOUNDS

    new: dict[str, dict[str, torch.Tensor]] = {}
    for key, kind in norm.features.items():
        mode = norm.norm_map.get(kind, "IDENTITY")
        if mode == "IDENTITY":
            continue
        have = stats.get(key_map.get(key, key), {})
        needed = ("mean", "std") if mode == "MEAN_STD" else _BOUNDS[mode]
        per: dict[str, torch.Tensor] = {}
        for name, shape in norm.stored_shapes.get(key, {n: () for n in needed}).items():
            if name not in have:
                if name in needed:
                    raise ConfigError(
                        f"--stats=recompute: {stats_file} has no {name!r} for "
                        f"{key_map.get(key, key)!r}, which the checkpoint's {mode} normalization "
                        "of it needs; run `vlastack data stats DATASET` to recompute the "
                        "dataset's stats, or keep the checkpoint's with --stats=keep"
                    )
                continue
            t = torch.as_tensor(have[name], dtype=torch.float32)
            if shape and t.numel() != int(torch.tensor(shape).prod()):
                raise ConfigError(
                    f"--stats=recompute: {stats_file} {key_map.get(key, key)!r} {name} has "
                    f"{t.numel()} values, the checkpoint's {key!r} has shape {list(shape)}"
                )
            per[name] = t.reshape(shape) if shape else t
        new[key] = per
    return FeatureNormalizer(dict(norm.features), dict(norm.norm_map), new, norm.eps)


def finetuned_json(src: TrainingSource, rename: dict[str, str]) -> lf.FolderJSON:
    """The source's JSON with ``rename`` (dataset key -> checkpoint key) added to the
    preprocessor's ``rename_observations_processor`` (so that clients may send the dataset's
    camera names, and LeRobot renames them the same way after the export)."""
    pre = copy.deepcopy(src.folder_json.preprocessor)
    if rename and pre is not None:
        for step in pre.get("steps", []):
            if step.get("registry_name") == lf.RENAME_STEP:
                step.setdefault("config", {}).setdefault("rename_map", {}).update(rename)
                break
        else:
            raise ConfigError(
                f"{src.path / lf.PREPROCESSOR} has no {lf.RENAME_STEP} step to record the "
                f"camera map {rename} in; name the dataset's cameras as the checkpoint's instead"
            )
    return lf.FolderJSON(
        copy.deepcopy(src.folder_json.config), pre, copy.deepcopy(src.folder_json.postprocessor)
    )


# ---- the fine-tuned checkpoint as a policy ----------------------------------------------------
def _checkpoint_dir(path: Path) -> Path | None:
    from vlastack.checkpoints import resolve_checkpoint
    from vlastack.errors import DataError

    try:
        return resolve_checkpoint(path)
    except (DataError, ConfigError, OSError):
        return None


def processors_from(fj: lf.FolderJSON, norm: dict[str, Any], where: str) -> Processors:
    from vlastack.pretrained.lerobot.trainable import stats_from_lists

    def one(pipeline: dict[str, Any] | None, flat: Any, name: str) -> FeatureNormalizer | None:
        if pipeline is None:
            return None
        steps = lf.parse_pipeline(pipeline, f"{where} ({name})")
        found = [s for s in steps if s.name in lf.NORMALIZER_STEPS]
        if not found:
            return None
        return FeatureNormalizer.from_step(found[0], stats_from_lists(flat or {}))

    rename: dict[str, str] = {}
    for step in lf.parse_pipeline(fj.preprocessor or {"steps": []}, where):
        if step.name == lf.RENAME_STEP:
            rename.update(step.config.get("rename_map") or {})
    return Processors(
        rename,
        one(fj.preprocessor, norm.get("preprocessor"), lf.PREPROCESSOR),
        one(fj.postprocessor, norm.get("postprocessor"), lf.POSTPROCESSOR),
    )


def load_finetuned(
    path: str | Path,
    *,
    device: str | torch.device | None = None,
    expect_embodiment: Any = None,
    embodiment: str | None = None,
    seed: int = 0,
) -> Any:
    """The fine-tuned checkpoint ``path`` as a ``LeRobotACTPolicy`` / ``LeRobotDiffusionPolicy``."""
    from vlastack.pretrained.lerobot.act import ACTNetwork, ACTSpec
    from vlastack.pretrained.lerobot.diffusion import DiffusionNetwork, DiffusionSpec
    from vlastack.pretrained.lerobot.diffusion_policy import LeRobotDiffusionPolicy
    from vlastack.pretrained.lerobot.policy import LeRobotACTPolicy, no_embodiment

    del expect_embodiment
    given = Path(path)
    ckpt = given if (given / "config.json").is_file() else _checkpoint_dir(given)
    if ckpt is None:
        raise ConfigError(f"{given} holds no checkpoint")
    no_embodiment(ckpt, embodiment)
    cfg = lf.read_json(ckpt / "config.json")
    lr = (cfg.get("model") or {}).get("lerobot")
    if not isinstance(lr, dict) or lr.get("type") not in TYPES:
        raise ConfigError(
            f"{ckpt / 'config.json'}: 'model.lerobot' is missing or not an ACT / Diffusion "
            "record; the checkpoint was not written by `vlastack train --init-from`"
        )
    fj = lf.FolderJSON(lr["config"], lr["preprocessor"], lr.get("postprocessor"))
    procs = processors_from(fj, lf.read_json(ckpt / "normalization.json"), str(ckpt))
    emb_file = ckpt / "embodiment.json"
    emb = json.loads(emb_file.read_text()) if emb_file.is_file() else None
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if lr["type"] == "act":
        spec: Any = ACTSpec.from_config(fj.config)
        net = load_strict(lambda: ACTNetwork(spec), ckpt / lf.WEIGHTS, device)
        return LeRobotACTPolicy(
            net,
            spec,
            normalizer=procs.normalizer,
            unnormalizer=procs.unnormalizer,
            rename_map=procs.rename_map,
            checkpoint=str(ckpt),
            embodiment=emb,
            folder_json=fj,
        )
    spec = DiffusionSpec.from_config(fj.config)
    dnet = load_strict(lambda: DiffusionNetwork(spec), ckpt / lf.WEIGHTS, device)
    return LeRobotDiffusionPolicy(
        dnet, spec, procs, checkpoint=str(ckpt), seed=seed, embodiment=emb, folder_json=fj
    )
