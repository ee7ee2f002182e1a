"""Fine-tuning an imported LeRobot ACT / Diffusion Policy: the folder as a training source, and
the fine-tuned run's checkpoint as a policy again (the ``lerobot_finetuned`` checkpoint format).

``training_source(folder)`` loads a LeRobot 0.6.1 ``pretrained_model`` folder into a
trainable model (``training.parts.TrainablePolicy``) and says what the training data must look
like: the checkpoint's cameras (key, C, H, W), state/env/action keys and sizes, how many
observation steps a sample holds and where its action window starts (ACT: 1 step, actions
``t .. t+chunk_size-1``; Diffusion: ``n_obs_steps`` steps, actions ``t-n_obs_steps+1 ..`` for
``horizon`` steps, as LeRobot's ``delta_timestamps`` for these policies), and its processors.
A LeRobot < 0.4 folder (no processor JSON) is refused: convert it with LeRobot's migration
script first (the export back needs the processor JSON).

Policy types plug in with ``register_fine_tunable(type, build, policy)``: ``build`` makes the
trainable model from the folder (``trainable.ACTTrainable`` / ``DiffusionTrainable`` here;
``vla_finetune`` / ``pi_finetune`` register SmolVLA / pi0 and pi0.5, with freeze groups
'vision', 'vlm' and 'expert', when imported: ``training.init_from`` and ``policy_formats`` do), ``policy`` rebuilds the inference
policy from a fine-tuned checkpoint. ``Built.processors`` replaces ``policy.read_processors``
for a type whose preprocessor has more steps (SmolVLA's tokenizer).

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
import math
from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass
class Built:
    """What a policy type's ``build`` gives: the trainable model (``training.parts.
    TrainablePolicy``), its spec (``image_keys``, ``image_shape``, ``state_key``, ``state_dim``,
    ``env_state_key``, ``action_key``, ``action_dim``), and the sample window: observation
    steps, where the action window starts relative to the observation, its length, and whether
    the single observation step is squeezed away (ACT reads (B, ...) inputs)."""

    model: nn.Module
    spec: Any
    obs_steps: int
    action_start: int
    action_steps: int
    squeeze_obs: bool = False
    processors: Any = None  # Processors-like; None: ``policy.read_processors`` (no tokenizer step)


@dataclass(frozen=True)
class FineTunable:
    """How one LeRobot policy type fine-tunes: ``build(path, config, device) -> Built`` and
    ``policy(folder_json, processors, checkpoint, device, embodiment, seed)`` -> the inference
    policy of its fine-tuned checkpoint."""

    build: Callable[[Path, dict[str, Any], Any], Built]
    policy: Callable[..., Any]


FINE_TUNABLE: dict[str, FineTunable] = {}


def register_fine_tunable(
    policy_type: str,
    build: Callable[[Path, dict[str, Any], Any], Built],
    policy: Callable[..., Any],
) -> None:
    """Let ``vlastack train --init-from`` fine-tune LeRobot folders of ``policy_type`` (the
    config.json ``type``); SmolVLA / pi0 modules register themselves the same way."""
    FINE_TUNABLE[policy_type] = FineTunable(build, policy)


@dataclass
class TrainingSource:
    """An imported folder ready to fine-tune (see the module docstring)."""

    path: Path
    policy_type: str
    model: nn.Module  # a training.parts.TrainablePolicy
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
    squeeze_obs: bool


def training_source(path: str | Path, device: str | torch.device = "cpu") -> TrainingSource:
    """Load the LeRobot folder ``path`` (a registered type) for fine-tuning."""
    path = Path(path)
    kind = lf.config_type(path)
    if kind not in FINE_TUNABLE or not (path / lf.WEIGHTS).is_file():
        raise ConfigError(
            f"--init-from {path}: not a LeRobot pretrained_model folder vlastack can fine-tune "
            f"(config.json type {kind!r}; fine-tuning supports {', '.join(FINE_TUNABLE)}, with "
            "config.json, model.safetensors and policy_preprocessor.json)"
        )
    if not (path / lf.PREPROCESSOR).is_file():
        raise ConfigError(
            f"--init-from {path}: a LeRobot < 0.4 folder (stats in model.safetensors, no "
            f"{lf.PREPROCESSOR}); convert it with LeRobot's "
            "processor/migrate_policy_normalization.py first, then fine-tune the converted folder"
        )
    cfg = lf.read_config(path, kind)
    built = FINE_TUNABLE[kind].build(path, cfg, device)
    procs = built.processors or read_processors(path, cfg)
    spec = built.spec
    return TrainingSource(
        path=path,
        policy_type=kind,
        model=built.model,
        spec=spec,
        folder_json=lf.read_folder_json(path, cfg),
        processors=procs,
        image_keys=list(spec.image_keys),
        image_shape=spec.image_shape,
        state_key=spec.state_key,
        state_dim=int(spec.state_dim or 0),
        env_state_key=spec.env_state_key,
        action_key=spec.action_key,
        action_dim=int(spec.action_dim),
        obs_steps=built.obs_steps,
        action_start=built.action_start,
        action_steps=built.action_steps,
        squeeze_obs=built.squeeze_obs,
    )


# ---- ACT and Diffusion Policy -----------------------------------------------------------------
def _build_act(path: Path, cfg: dict[str, Any], device: Any) -> Built:
    from vlastack.pretrained.lerobot.act import ACTNetwork, ACTSpec
    from vlastack.pretrained.lerobot.trainable import ACTTrainable

    spec = ACTSpec.from_config(cfg)
    net = load_strict(lambda: ACTNetwork(spec), path / lf.WEIGHTS, device)
    model = ACTTrainable(net, spec, float(cfg.get("kl_weight", 10.0)))
    return Built(model, spec, 1, 0, spec.chunk_size, squeeze_obs=True)


def _build_diffusion(path: Path, cfg: dict[str, Any], device: Any) -> Built:
    from vlastack.pretrained.lerobot.diffusion import DiffusionNetwork, DiffusionSpec
    from vlastack.pretrained.lerobot.trainable import DiffusionTrainable

    spec = DiffusionSpec.from_config(cfg)
    net = load_strict(lambda: DiffusionNetwork(spec), path / lf.WEIGHTS, device)
    model = DiffusionTrainable(
        net,
        spec,
        crop_is_random=bool(cfg.get("crop_is_random", True)),
        do_mask_loss_for_padding=bool(cfg.get("do_mask_loss_for_padding", False)),
    )
    return Built(model, spec, spec.n_obs_steps, 1 - spec.n_obs_steps, spec.horizon)


def _act_policy(
    fj: lf.FolderJSON, procs: Processors, ckpt: Path, device: Any, emb: Any, seed: int
) -> Any:
    from vlastack.pretrained.lerobot.act import ACTNetwork, ACTSpec
    from vlastack.pretrained.lerobot.policy import LeRobotACTPolicy

    del seed
    spec = ACTSpec.from_config(fj.config)
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


def _diffusion_policy(
    fj: lf.FolderJSON, procs: Processors, ckpt: Path, device: Any, emb: Any, seed: int
) -> Any:
    from vlastack.pretrained.lerobot.diffusion import DiffusionNetwork, DiffusionSpec
    from vlastack.pretrained.lerobot.diffusion_policy import LeRobotDiffusionPolicy

    spec = DiffusionSpec.from_config(fj.config)
    net = load_strict(lambda: DiffusionNetwork(spec), ckpt / lf.WEIGHTS, device)
    return LeRobotDiffusionPolicy(
        net, spec, procs, checkpoint=str(ckpt), seed=seed, embodiment=emb, folder_json=fj
    )


register_fine_tunable("act", _build_act, _act_policy)
register_fine_tunable("diffusion", _build_diffusion, _diffusion_policy)


def recomputed(
    norm: FeatureNormalizer,
    stats: dict[str, dict[str, Any]],
    key_map: dict[str, str],
    stats_file: str,
    dims: dict[str, int] | None = None,
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
        shapes = norm.stored_shapes.get(key, {n: () for n in needed})
        if dims and key in dims:  # a resized state / action: the dataset's size
            shapes = {n: ((dims[key],) if math.prod(sh) > 1 else sh) for n, sh in shapes.items()}
        for name, shape in shapes.items():
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


def finetuned_json(
    src: TrainingSource, rename: dict[str, str], dims: dict[str, int] | None = None
) -> lf.FolderJSON:
    """The source's JSON with ``rename`` (dataset key -> checkpoint key) added to the
    preprocessor's ``rename_observations_processor`` (so that clients may send the dataset's
    camera names, and LeRobot renames them the same way after the export), and ``dims``
    (feature key -> new size) written into config.json's features and the normalizer steps'."""
    pre = copy.deepcopy(src.folder_json.preprocessor)
    config = copy.deepcopy(src.folder_json.config)
    post = copy.deepcopy(src.folder_json.postprocessor)
    for key, dim in (dims or {}).items():
        for where in (
            config.get("input_features") or {},
            config.get("output_features") or {},
            *(
                (st.get("config") or {}).get("features") or {}
                for p in (pre, post)
                if p
                for st in p.get("steps", [])
            ),
        ):
            if key in where:
                where[key]["shape"] = [dim]
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
    return lf.FolderJSON(config, pre, post)


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
    """The fine-tuned checkpoint ``path`` as the policy its type's ``FineTunable.policy``
    builds (``LeRobotACTPolicy`` / ``LeRobotDiffusionPolicy``)."""
    from vlastack.pretrained.lerobot.policy import no_embodiment

    del expect_embodiment
    given = Path(path)
    ckpt = given if (given / "config.json").is_file() else _checkpoint_dir(given)
    if ckpt is None:
        raise ConfigError(f"{given} holds no checkpoint")
    no_embodiment(ckpt, embodiment)
    cfg = lf.read_json(ckpt / "config.json")
    lr = (cfg.get("model") or {}).get("lerobot")
    if not isinstance(lr, dict) or lr.get("type") not in FINE_TUNABLE:
        raise ConfigError(
            f"{ckpt / 'config.json'}: 'model.lerobot' is missing or of a type this vlastack "
            f"cannot load ({', '.join(FINE_TUNABLE)}); the checkpoint was not written by "
            "`vlastack train --init-from`, or by a newer vlastack"
        )
    fj = lf.FolderJSON(lr["config"], lr["preprocessor"], lr.get("postprocessor"))
    procs = processors_from(fj, lf.read_json(ckpt / "normalization.json"), str(ckpt))
    emb_file = ckpt / "embodiment.json"
    emb = json.loads(emb_file.read_text()) if emb_file.is_file() else None
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return FINE_TUNABLE[lr["type"]].policy(fj, procs, ckpt, device, emb, seed)


def _as_folder(ckpt: Path, model: dict[str, Any], out: Path) -> None:
    """The LeRobot folder the checkpoint stands for, at ``out``: the recorded JSON, the
    normalizer state files from normalization.json, and a link to the weights (LeRobot keys)."""
    from safetensors.torch import save_file

    from vlastack.pretrained.lerobot.trainable import stats_from_lists

    lr = model["lerobot"]
    norm = lf.read_json(ckpt / "normalization.json")
    out.mkdir()
    (out / lf.CONFIG).write_text(json.dumps(lr["config"], indent=4))
    try:
        (out / lf.WEIGHTS).symlink_to((ckpt / lf.WEIGHTS).resolve())
    except OSError:  # no symlinks here: copy
        import shutil

        shutil.copyfile(ckpt / lf.WEIGHTS, out / lf.WEIGHTS)
    for name, key in ((lf.PREPROCESSOR, "preprocessor"), (lf.POSTPROCESSOR, "postprocessor")):
        pipeline = lr.get(key)
        if pipeline is None:
            continue
        (out / name).write_text(json.dumps(pipeline, indent=2))
        for step in pipeline.get("steps", []):
            if step.get("registry_name") in lf.NORMALIZER_STEPS and step.get("state_file"):
                stats = stats_from_lists(norm.get(key) or {})
                flat = {f"{f}.{n}": t for f, per in stats.items() for n, t in per.items()}
                save_file(flat, str(out / step["state_file"]))


def describe_finetuned(path: Path) -> tuple[dict[str, Any], str]:
    """``vlastack inspect`` of a fine-tuned checkpoint: what ``describe`` says of the LeRobot
    folder it stands for (assembled in a temporary folder), with the checkpoint's own path and
    embodiment, plus where it was fine-tuned from, on what, and with whose stats."""
    import tempfile

    from vlastack.pretrained.lerobot.describe import describe_folder, format_text

    given = Path(path)
    ckpt = given if (given / "config.json").is_file() else _checkpoint_dir(given)
    if ckpt is None:
        raise ConfigError(f"{given} holds no checkpoint")
    model = lf.read_json(ckpt / "config.json").get("model") or {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "pretrained_model"
        _as_folder(ckpt, model, folder)
        info = describe_folder(folder, model["lerobot"]["type"], FORMAT_NAME)
    info["path"] = str(ckpt)
    info["client"]["serve"] = f"vlastack serve {ckpt}"
    if (ckpt / "embodiment.json").is_file():
        info["embodiment"] = json.loads((ckpt / "embodiment.json").read_text())
    keys = ("init_from", "dataset", "feature_map", "stats", "stats_source")
    fine = {k: model.get(k) for k in keys}
    info["fine_tuned"] = fine
    text = format_text(info) + (
        f"\n  fine-tuned from {fine['init_from']} on {fine['dataset']}; normalization stats: "
        f"{fine['stats']} ({fine['stats_source']}); export back with "
        f"`vlastack export lerobot {ckpt} --out DIR`"
    )
    return info, text
