"""``vlastack train --init-from FOLDER --data DIR``: fine-tune an imported policy (a LeRobot ACT
or Diffusion Policy ``pretrained_model`` folder, or a cached hub id) on a vlastack / LeRobot v3
dataset with the one training loop.

``build_init_from(cfg)`` returns the ``TrainingParts`` the loop trains, like ``build_parts`` does
for a recipe:

* the model is ``pretrained.lerobot.trainable`` (LeRobot 0.6.1's own training loss, freeze
  groups, LoRA target), its weights loaded from the folder;
* features are mapped through the embodiment specs (the checkpoint's from config.json, the
  dataset's from meta/embodiment.json or info.json): every checkpoint camera to the dataset
  camera of the same name, or to the one given by ``--camera_map=CKPT=DATA``, or, when both
  have exactly one camera, to that one; the state and action sizes must be equal. Anything
  else is a ConfigError naming the feature, both files and the fix. A dataset camera of another
  size is resized (bilinear, antialiased) to the checkpoint's, and the run says so;
* the windows are LeRobot's for that policy (``finetune.TrainingSource``: observation steps and
  where the action window starts; steps past either episode edge are padding);
* normalization (``--stats``): ``keep`` trains with the checkpoint's stats, ``recompute``
  replaces them with the dataset's meta/stats.json (same modes); the run prints which, and
  config.json records it (``model.stats``, ``model.stats_source``);
* the checkpoint is the ``lerobot_finetuned`` format (``pretrained.lerobot.finetune``), loaded
  back by ``eval``, ``serve``, ``Policy.from_checkpoint`` and ``export lerobot``.

Training defaults come from the folder's config.json as LeRobot trains these policies
(``init_defaults``): ``optimizer_lr``, ``optimizer_weight_decay``, ``optimizer_betas``,
``scheduler_warmup_steps`` and a cosine schedule where ``scheduler_name`` is cosine (ACT has
none: constant), gradient clipping at 10 (LeRobot's ``grad_clip_norm``); ``--key=value``
overrides them. One dataset only (no mixtures), no recipe and no ``--model.*`` overrides but
``--model.insulate_head=true`` (gradient insulation, for a model with an ``insulate`` switch:
SmolVLA, ``pretrained.lerobot.vla_finetune``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from vlastack.embodiment import EmbodimentSpec
from vlastack.errors import ConfigError
from vlastack.training.config import TrainConfig, parse_data
from vlastack.training.parts import TrainingParts

FORMAT = "lerobot_finetuned"


def init_defaults(folder: Path) -> dict[str, Any]:
    """LeRobot's training hyperparameters for the folder (see the module docstring)."""
    from vlastack.pretrained.lerobot.folder import CONFIG, read_json

    cfg = read_json(Path(folder) / CONFIG)
    out: dict[str, Any] = {"grad_clip": 10.0, "schedule": "constant", "warmup_steps": 0}
    if "optimizer_lr" in cfg:
        out["lr"] = float(cfg["optimizer_lr"])
    if "optimizer_weight_decay" in cfg:
        out["weight_decay"] = float(cfg["optimizer_weight_decay"])
    out["betas"] = tuple(float(b) for b in cfg.get("optimizer_betas") or (0.9, 0.999))
    if cfg.get("scheduler_name") == "cosine":
        out["schedule"] = "cosine"
        out["warmup_steps"] = int(cfg.get("scheduler_warmup_steps") or 0)
    return out


def _truthy(v: Any) -> bool:
    return str(v).strip().lower() in ("1", "true", "yes", "on")


def camera_entries(entries: list[str]) -> dict[str, str]:
    """``["top=front"]`` -> {"top": "front"} (checkpoint camera -> dataset camera)."""
    out: dict[str, str] = {}
    for e in entries:
        ckpt, sep, data = str(e).partition("=")
        if not sep or not ckpt.strip() or not data.strip():
            raise ConfigError(
                f"--camera_map entry {e!r} is not CKPT_CAMERA=DATASET_CAMERA "
                "(e.g. --camera_map=top=front,wrist=hand)"
            )
        out[_short(ckpt.strip())] = _short(data.strip())
    return out


def _short(name: str) -> str:
    return name.removeprefix("observation.images.")


def map_features(
    src: Any,
    ckpt_emb: EmbodimentSpec,
    emb: EmbodimentSpec,
    camera_map: dict[str, str],
    info_file: Path,
) -> tuple[dict[str, str], list[str]]:
    """(checkpoint key -> dataset key for every observation input, notes to print)."""
    config_file = src.path / "config.json"
    data_cams = [c.name for c in emb.cameras]
    ckpt_cams = [c.name for c in ckpt_emb.cameras]
    unknown = sorted(set(camera_map) - set(ckpt_cams))
    if unknown:
        raise ConfigError(
            f"--camera_map names {unknown}, which {config_file} input_features does not have "
            f"(its cameras: {ckpt_cams})"
        )
    key_map: dict[str, str] = {}
    notes: list[str] = []
    for cam in ckpt_emb.cameras:
        data = camera_map.get(cam.name)
        if data is None and cam.name in data_cams:
            data = cam.name
        if data is None and len(ckpt_cams) == 1 and len(data_cams) == 1:
            data = data_cams[0]
            notes.append(
                f"camera: the checkpoint's only camera {cam.name!r} <- the dataset's "
                f"only camera {data!r}"
            )
        if data is None or data not in data_cams:
            missing = data if data is not None else cam.name
            raise ConfigError(
                f"feature 'observation.images.{cam.name}' of {config_file} has no dataset "
                f"camera: {info_file} has no camera {missing!r} (it has {data_cams or 'none'}); "
                f"map one with --camera_map={cam.name}=DATASET_CAMERA, or fine-tune on a "
                "dataset recorded with that camera"
            )
        have = emb.camera(data)
        if (have.height, have.width) != (cam.height, cam.width):
            notes.append(
                f"camera {data!r}: {have.height}x{have.width} frames resized to the "
                f"checkpoint's {cam.height}x{cam.width}"
            )
        key_map[f"observation.images.{cam.name}"] = f"observation.images.{data}"
    for what, ckpt_dim, data_dim in (
        ("state", src.state_dim, emb.state.dim),
        ("action", src.action_dim, emb.action.dim),
    ):
        key = "observation.state" if what == "state" else src.action_key
        most = int(getattr(src.spec, f"max_{what}_dim", 0) or 0)
        if ckpt_dim and ckpt_dim != data_dim and 0 < data_dim <= most:
            notes.append(
                f"{what}: the dataset's {data_dim} dims replace the checkpoint's {ckpt_dim} "
                f"(the network zero-pads to max_{what}_dim {most})"
            )
            continue
        if ckpt_dim and ckpt_dim != data_dim:
            raise ConfigError(
                f"feature {key!r}: {config_file} has size {ckpt_dim}, {info_file} has "
                f"{data_dim}; fine-tuning keeps the checkpoint's {what} layout, so fine-tune "
                f"a checkpoint trained for this robot ({data_dim}-d {what}), or convert the "
                f"dataset's {what} to the checkpoint's {ckpt_dim} dims first"
            )
    if src.state_key:
        key_map[src.state_key] = "observation.state"
    if src.env_state_key:
        raise ConfigError(
            f"feature {src.env_state_key!r} of {config_file} (an environment state) cannot be "
            f"fed from {info_file}: fine-tuning supports camera + state inputs"
        )
    return key_map, notes


def resized_features(src: Any, emb: EmbodimentSpec) -> dict[str, int]:
    """Checkpoint key -> the dataset's size, for the state / action whose size differs (a VLA
    that zero-pads to ``max_state_dim`` / ``max_action_dim``; ``map_features`` allowed it)."""
    out: dict[str, int] = {}
    if src.state_key and src.state_dim and src.state_dim != emb.state.dim:
        out[src.state_key] = int(emb.state.dim)
    if src.action_dim != emb.action.dim:
        out[src.action_key] = int(emb.action.dim)
    return out


def build_init_from(cfg: TrainConfig) -> TrainingParts:
    """The imported policy, its dataset windows and normalizer (see the module docstring)."""
    import vlastack.pretrained.lerobot.pi_finetune  # noqa: F401  (registers pi0, pi05)
    import vlastack.pretrained.lerobot.vla_finetune  # noqa: F401  (registers smolvla)
    from vlastack.data.dataset import WindowedDataset, collate, split_episodes
    from vlastack.data.format import DatasetReader
    from vlastack.policy_formats import resolve_checkpoint_arg
    from vlastack.pretrained.lerobot.finetune import finetuned_json, recomputed, training_source
    from vlastack.pretrained.lerobot.policy import folder_embodiment
    from vlastack.pretrained.lerobot.trainable import LeRobotBatchNormalizer
    from vlastack.training.build import embodiment_from_features

    if cfg.recipe:
        raise ConfigError(
            f"--init-from trains the imported policy; drop the recipe name {cfg.recipe!r} "
            "(a recipe builds a new model instead)"
        )
    others = sorted(set(cfg.model) - {"insulate_head"})
    if others:
        raise ConfigError(
            f"--model.* overrides ({others}) do not apply with --init-from: the architecture "
            "is the checkpoint's (only --model.insulate_head, gradient insulation, does)"
        )
    specs = parse_data(cfg.data) if cfg.data else []
    if len(specs) != 1:
        raise ConfigError(
            "--init-from fine-tunes on one dataset: pass exactly one --data PATH "
            f"(got {len(specs)})"
        )
    folder = resolve_checkpoint_arg(cfg.init_from)
    src = training_source(folder)
    if _truthy(cfg.model.get("insulate_head", False)):
        if not hasattr(src.model, "insulate"):
            raise ConfigError(
                f"--model.insulate_head: a LeRobot {src.policy_type} has no VLM for the action "
                "head to be insulated from; drop the flag"
            )
        setattr(src.model, "insulate", True)  # noqa: B010
        print("gradient insulation: the action expert reads the VLM's keys/values detached")
    reader = DatasetReader(Path(specs[0].path), video_backend=cfg.video_backend)
    emb = reader.embodiment or embodiment_from_features(reader)
    info_file = reader.root / "meta" / "info.json"
    ckpt_dict = folder_embodiment(folder, src.folder_json.config, src.policy_type)
    if ckpt_dict is None:
        raise ConfigError(f"{folder / 'config.json'}: no STATE input; fine-tuning needs one")
    ckpt_emb = EmbodimentSpec.from_dict(ckpt_dict, str(folder / "config.json"))
    key_map, notes = map_features(src, ckpt_emb, emb, camera_entries(cfg.camera_map), info_file)
    for n in notes:
        print(n)
    image_keys = [key_map[k] for k in src.image_keys]
    shape = src.image_shape or ()
    image_size = tuple(int(d) for d in shape[1:]) if src.image_keys else None
    windows: dict[str, Any] = dict(
        obs_horizon=src.obs_steps,
        action_horizon=src.action_steps,
        action_offset=src.action_start,
        image_keys=image_keys,
        image_size=image_size,
    )
    train_eps, val_eps = split_episodes(reader.num_episodes, cfg.val_fraction, cfg.seed)
    train_ds = WindowedDataset(reader, episodes=train_eps, **windows)
    val_ds = WindowedDataset(reader, episodes=val_eps, **windows) if val_eps else None

    procs = src.processors
    norm, unnorm = procs.normalizer, procs.unnormalizer
    stats_file = reader.root / "meta" / "stats.json"
    resized = resized_features(src, emb)
    if resized:
        if cfg.stats != "recompute" or not hasattr(src.model, "resize_features"):
            raise ConfigError(
                f"the dataset's sizes {resized} differ from {folder / 'config.json'}'s; the "
                "checkpoint's stats do not fit them: pass --stats=recompute (the dataset's "
                f"{stats_file})"
            )
        vla: Any = src.model
        vla.resize_features(emb.state.dim, emb.action.dim)
    if cfg.stats == "recompute":
        data_keys = {**key_map, src.action_key: "action"}
        if norm is not None:
            norm = recomputed(norm, reader.stats, data_keys, str(stats_file), resized)
        if unnorm is not None:
            unnorm = recomputed(unnorm, reader.stats, data_keys, str(stats_file), resized)
        stats_source = str(stats_file)
        print(f"normalization stats: recomputed from the dataset ({stats_file})")
    else:
        stats_source = str(folder)
        print(
            f"normalization stats: kept from the checkpoint ({folder}); --stats=recompute "
            "uses the dataset's instead"
        )
    normalizer = LeRobotBatchNormalizer(
        norm,
        unnorm,
        key_map,
        squeeze_obs=src.squeeze_obs,
        action_key=src.action_key,
        stats_source=stats_source,
    )
    rename = {d: c for c, d in key_map.items() if c != d}
    fj = finetuned_json(src, rename, resized)
    print(
        f"fine-tuning LeRobot {src.policy_type} from {folder} on {reader.root}: "
        f"{len(train_ds)} training windows, {len(val_ds) if val_ds else 0} held out"
    )
    model_config = {
        "lerobot": {
            "type": src.policy_type,
            "config": fj.config,
            "preprocessor": fj.preprocessor,
            "postprocessor": fj.postprocessor,
        },
        "init_from": str(folder),
        "dataset": str(reader.root),
        "feature_map": key_map,
        "stats": cfg.stats,
        "stats_source": stats_source,
    }
    spec = src.spec
    execute = int(getattr(spec, "n_action_steps", src.action_steps))
    return TrainingParts(
        model=src.model,
        train_dataset=train_ds,
        val_dataset=val_ds,
        normalizer=normalizer,
        embodiment=dataclasses.replace(emb),
        model_config=model_config,
        collate_fn=collate,
        tasks=list(reader.tasks),
        action_names=list(emb.action.names),
        uses_language=False,
        recipe_extra={"execute_horizon": execute},
        checkpoint_format=FORMAT,
    )
