"""Building what the loop trains on from a recipe and ``--data``: one way, for one dataset or
several (as Octo and π0 train on several robots).

Each dataset is read and checked to fit the recipe on its own (cameras, language, state,
horizons), split into training and held-out episodes, windowed, and normalized with its own
stats; the model is built for the datasets' merged embodiment (largest state/action, the union
of cameras). The members are then put together: several become one padded ``DatasetMixture``
validated per member in each robot's units (``val/<name>/...``); a mixture of one is that
dataset itself, so its checkpoint stays a single-robot checkpoint (its own normalization.json,
no ``mixture`` in config.json, ``val/action_mse``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vlastack.embodiment import EmbodimentSpec
from vlastack.errors import ConfigError, DataError
from vlastack.training.config import DataSpec, TrainConfig, parse_data
from vlastack.training.fit_checks import check_action_range, check_recipe_fits
from vlastack.training.parts import TrainingParts, ValSet


@dataclass
class Member:
    """One dataset of ``--data``, fitted to the recipe (``train`` / ``val`` set by ``add_windows``)."""

    name: str
    spec: DataSpec
    reader: Any  # data.format.DatasetReader
    embodiment: EmbodimentSpec
    train: Any = None  # training windows (or their cached vision features)
    val: Any = None  # held-out windows; None when no episode is held out
    normalizer: Any = None  # data.normalization.Normalizer from this dataset's stats
    held_out_episodes: int = 0

    @property
    def stats_path(self) -> str:
        return str(self.reader.root / "meta" / "stats.json")


def build_parts(cfg: TrainConfig) -> TrainingParts:
    """Datasets, normalizers and model from ``cfg.recipe`` and ``cfg.data``, checked to fit
    (``--init-from`` builds with ``init_from.build_init_from`` instead)."""
    if not cfg.recipe:
        raise ConfigError("no recipe given; run `vlastack list recipes` and pass one by name")
    if not cfg.data:
        raise ConfigError("no dataset given; pass --data PATH (a vlastack / LeRobot v3 dataset)")
    from vlastack.data.dataset import collate
    from vlastack.models.vla import build_vla
    from vlastack.recipes import get_recipe

    specs = parse_data(cfg.data)
    recipe = get_recipe(cfg.recipe, **cfg.model)
    names = member_names([s.path for s in specs])
    members = [
        read_member(cfg.recipe, recipe.model, n, s, cfg.video_backend) for n, s in zip(names, specs)
    ]
    if not cfg.allow_image_shape_mismatch:
        for m in members:
            check_image_shapes(m.reader)
    h, w = (int(x) for x in recipe.model.image_size)
    merged, resized = merge_embodiments([m.embodiment for m in members], (h, w))
    if resized:
        print(
            f"mixture: cameras differ in size ({', '.join(resized)}); every image is resized "
            f"to the recipe's {h}x{w} (set --model.image_size=H,W to choose)"
        )
    vla_cfg = fit_model_config(recipe.model, merged)
    for m in members:
        add_windows(m, cfg, vla_cfg, recipe.normalization)
    model = build_vla(vla_cfg)
    for m in members:
        check_action_range(model, recipe.normalization, m.reader.stats, m.stats_path)
    if cfg.cache_vision_features and cfg.lora is None and model.vision is not None:
        cache_vision_features(cfg, model, members, vla_cfg.cameras)
    parts = TrainingParts(
        model=model,
        train_dataset=members[0].train,
        val_dataset=members[0].val,
        normalizer=members[0].normalizer,
        embodiment=members[0].embodiment,
        model_config=vla_cfg.to_dict(),
        collate_fn=collate,
        tasks=list(members[0].reader.tasks),
        action_names=list(merged.action.names),
        uses_language=vla_cfg.language != "none",
        recipe_extra=dict(recipe.extra),
    )
    # A mixture of one is that dataset: unpadded, its own normalizer, one held-out set.
    return parts if len(members) == 1 else as_mixture(parts, members, vla_cfg, cfg.seed)


def read_member(
    recipe_name: str, model_cfg: Any, name: str, spec: DataSpec, video_backend: str = "pyav"
) -> Member:
    """Open one dataset and check that the recipe, sized for it alone, can learn from it."""
    from vlastack.data.format import DatasetReader

    reader = DatasetReader(Path(spec.path), video_backend=video_backend)
    emb = reader.embodiment or embodiment_from_features(reader)
    try:
        own = fit_model_config(model_cfg, emb)
    except ConfigError as exc:
        raise ConfigError(f"{reader.root}: {exc}") from None
    check_recipe_fits(recipe_name, own, reader, emb)
    return Member(name, spec, reader, emb)


def check_image_shapes(reader: Any) -> None:
    """Each camera's first frame decodes at the shape ``info.json`` declares (``vlastack data
    doctor``'s check, on one frame): a mismatch means the metadata and the files disagree, and
    resizing to the model's image size would hide it."""
    import numpy as np

    if not reader.num_episodes:
        return
    for cam in reader.camera_keys:
        want = tuple(int(s) for s in reader.features[cam].shape)
        got = tuple(reader.decode_frames(cam, 0, np.array([0])).shape[1:])
        if got != want:
            raise ConfigError(
                f"{reader.root}: camera {cam!r} decodes to frames of shape {got}, but "
                f"meta/info.json declares {want}; run `vlastack data doctor {reader.root}` and "
                "fix the metadata or the videos, or pass --allow_image_shape_mismatch=true to "
                "train anyway (frames are resized to the model's image size)"
            )


def add_windows(m: Member, cfg: TrainConfig, vla_cfg: Any, modes: dict[str, str]) -> None:
    """The member's training and held-out windows, with the cameras it has, and its normalizer."""
    from vlastack.data.dataset import WindowedDataset, split_episodes
    from vlastack.data.normalization import Normalizer
    from vlastack.models.foresight import future_offset

    keys = [f"observation.images.{c}" for c in vla_cfg.cameras]
    keys = [k for k in keys if k in m.reader.camera_keys]
    windows: dict[str, Any] = dict(
        obs_horizon=vla_cfg.obs_horizon,
        action_horizon=vla_cfg.action_horizon,
        image_keys=keys,
        image_size=tuple(vla_cfg.image_size) if keys else None,
        future_offset=future_offset(vla_cfg),  # CoT-VLA subgoal / world model target frame
    )
    train_eps, val_eps = split_episodes(m.reader.num_episodes, cfg.val_fraction, cfg.seed)
    m.train = WindowedDataset(m.reader, episodes=train_eps, **windows)
    m.val = WindowedDataset(m.reader, episodes=val_eps, **windows) if val_eps else None
    m.held_out_episodes = len(val_eps)
    m.normalizer = Normalizer(m.reader.stats, modes, source=m.stats_path)


def cache_vision_features(
    cfg: TrainConfig, model: Any, members: list[Member], cameras: list[str]
) -> None:
    """With a frozen vision encoder, every member's frames encoded once (feature_cache)."""
    from vlastack.training.feature_cache import cached_datasets, can_cache

    if "vision" in cfg.freeze:
        model.vision.requires_grad_(False)
    if not can_cache(model):
        return
    keys = [f"observation.images.{c}" for c in cameras]
    lacking = [m.name for m in members if set(keys) - set(m.reader.camera_keys)]
    if lacking:
        print(f"not caching vision features: {lacking} lack some of the cameras {keys}")
        return
    print("vision encoder is frozen: encoding every frame once (cache_vision_features)")
    for m in members:
        both = cached_datasets(
            model, [m.train] + ([m.val] if m.val is not None else []), progress=cfg.progress
        )
        m.train, m.val = both[0], (both[1] if m.val is not None else None)


def as_mixture(
    parts: TrainingParts, members: list[Member], vla_cfg: Any, seed: int
) -> TrainingParts:
    """``parts`` of the first member widened to all: one padded stream, per-member normalization
    and validation, and the members recorded in the checkpoint.

    Sampling: explicit weights are each member's share of the samples; without them every
    window is equally likely (shares proportional to size, like concatenating the datasets).
    """
    from functools import partial

    from torch.utils.data import ConcatDataset

    from vlastack.data.mixture import DatasetMixture, MixtureNormalizer, PaddedView

    for m in members:
        if len(m.train) == 0:
            raise DataError(
                f"{m.reader.root}: no training windows after holding out "
                f"{m.held_out_episodes} episodes; "
                "add episodes, lower --val_fraction, or drop this dataset from --data"
            )
    explicit = all(m.spec.weight is not None for m in members)
    sizes = [len(m.train) for m in members]
    weights = [
        float(m.spec.weight) if m.spec.weight is not None else float(n)
        for m, n in zip(members, sizes)
    ]
    mixture = DatasetMixture(
        list(zip([m.train for m in members], weights)),
        pad_state_dim=vla_cfg.state_dim or None,
        pad_action_dim=vla_cfg.action_dim,
    )
    names = [m.name for m in members]
    normalizer = MixtureNormalizer(
        [m.normalizer for m in members],
        names,
        {"observation.state": mixture.state_dim, "action": mixture.action_dim},
    )
    tasks = sorted({t for m in members for t in m.reader.tasks if t.strip()})
    val_sets = [
        ValSet(
            m.name,
            PaddedView(mixture, m.val, i),
            normalizer.member(i),
            partial(collate_own_actions, action_dim=mixture.action_dims[i]),
            list(m.embodiment.action.names),
            tasks,
        )
        for i, m in enumerate(members)
        if m.val is not None and len(m.val)
    ]
    order = None
    if explicit:
        sampler = mixture.sampler(num_samples=len(mixture), seed=seed)

        def order(epoch: int) -> list[int]:
            sampler.set_epoch(epoch)
            return list(sampler)

    print(f"mixture of {len(members)} datasets ({'by weight' if explicit else 'by size'}):")
    records = []
    for i, m in enumerate(members):
        share = float(mixture.weights[i])
        records.append(
            {
                "name": m.name,
                "dataset": str(m.reader.root),
                "weight": share,
                "train_windows": sizes[i],
                "state_dim": int(mixture.state_dims[i]),
                "action_dim": int(mixture.action_dims[i]),
                "cameras": [
                    c for c in vla_cfg.cameras if f"observation.images.{c}" in m.reader.camera_keys
                ],
                "embodiment": m.embodiment.to_dict(),
            }
        )
        print(
            f"  {m.name:<20} {share:6.1%} of samples  {sizes[i]:>7} windows  "
            f"state {mixture.state_dims[i]}/{mixture.state_dim}  "
            f"action {mixture.action_dims[i]}/{mixture.action_dim}  {m.reader.root}"
        )
    return dataclasses.replace(
        parts,
        train_dataset=mixture,
        val_dataset=ConcatDataset([vs.dataset for vs in val_sets]) if val_sets else None,
        normalizer=normalizer,
        tasks=tasks,
        val_sets=val_sets,
        epoch_indices=order,
        mixture={"default": names[0], "members": records},
    )


def member_names(paths: list[str]) -> list[str]:
    """A short unique name per dataset: its folder name, suffixed -2, -3 on a clash."""
    out: list[str] = []
    for p in paths:
        base = Path(p).resolve().name or "dataset"
        name, k = base, 2
        while name in out:
            name, k = f"{base}-{k}", k + 1
        out.append(name)
    return out


def merge_embodiments(
    embs: list[EmbodimentSpec], image_size: tuple[int, int]
) -> tuple[EmbodimentSpec, list[str]]:
    """One spec the model can be built for: largest state/action, the union of camera names.

    Cameras of one size keep it; when sizes differ all get ``image_size`` and the differing
    ``name HxW`` are returned so the caller can say so.
    """
    from vlastack.embodiment import CameraSpec, VectorSpec

    if len(embs) == 1:
        return embs[0], []  # nothing to merge (fit_model_config resizes cameras of mixed sizes)
    cams: dict[str, CameraSpec] = {}
    for e in embs:
        for c in e.cameras:
            cams.setdefault(c.name, c)
    sizes = {(c.height, c.width) for e in embs for c in e.cameras}
    resized: list[str] = []
    if len(sizes) > 1:
        resized = sorted({f"{c.name} {c.height}x{c.width}" for e in embs for c in e.cameras})
        h, w = image_size
        cams = {n: dataclasses.replace(c, height=h, width=w) for n, c in cams.items()}

    def widest(vecs: list[VectorSpec]) -> VectorSpec:
        big = max(vecs, key=lambda v: v.dim)
        grips = {v.gripper_index for v in vecs}
        return VectorSpec(list(big.names), gripper_index=grips.pop() if len(grips) == 1 else None)

    merged = EmbodimentSpec(
        robot_type="+".join(dict.fromkeys(e.robot_type for e in embs)),
        cameras=list(cams.values()),
        state=widest([e.state for e in embs]),
        action=widest([e.action for e in embs]),
        control_hz=embs[0].control_hz,
    )
    return merged, resized


def collate_own_actions(samples: list[dict[str, Any]], action_dim: int) -> dict[str, Any]:
    """Collate a member's held-out windows and cut ``action`` back to that robot's size, so
    open-loop errors are per real dimension in its units (the model input stays padded)."""
    from vlastack.data.dataset import collate

    batch = collate(samples)
    batch["action"] = batch["action"][..., :action_dim]
    batch["action_dim_mask"] = batch["action_dim_mask"][..., :action_dim]
    return batch


def fit_model_config(model_cfg: Any, emb: EmbodimentSpec) -> Any:
    """The recipe's model config with the dataset's sizes (``config_for_embodiment``).

    Cameras of different sizes are all resized to the recipe's image_size by the dataset.
    """
    from vlastack.models.vla import config_for_embodiment

    if len({(c.height, c.width) for c in emb.cameras}) > 1:
        h, w = model_cfg.image_size
        emb = dataclasses.replace(
            emb, cameras=[dataclasses.replace(c, height=h, width=w) for c in emb.cameras]
        )
    return config_for_embodiment(model_cfg, emb)


def embodiment_from_features(reader: Any) -> EmbodimentSpec:
    """An embodiment read off info.json features, for datasets without meta/embodiment.json."""
    from vlastack.embodiment import CameraSpec, VectorSpec

    feats = reader.features
    for key in ("action",):
        if key not in feats:
            raise DataError(f"{reader.root}/meta/info.json: no '{key}' feature; cannot train")

    def vec(key: str) -> VectorSpec:
        f = feats.get(key)
        if f is None:
            return VectorSpec(["none"])
        n = int(np.prod(f.shape)) if f.shape else 1
        names = list(f.names) if f.names and len(f.names) == n else [f"{key}_{i}" for i in range(n)]
        return VectorSpec(names)

    cams = []
    for k in reader.camera_keys:
        h, w, c = feats[k].shape
        cams.append(CameraSpec(k.removeprefix("observation.images."), int(h), int(w), int(c)))
    return EmbodimentSpec(
        robot_type=str(reader.info.get("robot_type") or "unknown"),
        cameras=cams,
        state=vec("observation.state"),
        action=vec("action"),
        control_hz=float(reader.fps),
    )
