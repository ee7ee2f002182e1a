"""Building what the loop trains on from a recipe and ``--data``: datasets, normalizers, the
model sized for the data's embodiment, and the held-out windows."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from vlastack.embodiment import EmbodimentSpec
from vlastack.errors import ConfigError, DataError
from vlastack.training.config import DataSpec, TrainConfig, parse_data
from vlastack.training.fit_checks import check_action_range, check_recipe_fits
from vlastack.training.parts import Batch, TrainingParts, ValSet


def build_parts(cfg: TrainConfig) -> TrainingParts:
    """Dataset, normalizer and model from ``cfg.recipe`` and ``cfg.data``, checked to fit."""
    if not cfg.recipe:
        raise ConfigError("no recipe given; run `vlastack list recipes` and pass one by name")
    if not cfg.data:
        raise ConfigError("no dataset given; pass --data PATH (a vlastack / LeRobot v3 dataset)")
    specs = parse_data(cfg.data)
    if len(specs) > 1:
        return build_mixture_parts(cfg, specs)
    from vlastack.data.dataset import WindowedDataset, collate, split_episodes
    from vlastack.data.format import DatasetReader
    from vlastack.data.normalization import Normalizer
    from vlastack.models.vla import build_vla
    from vlastack.recipes import get_recipe

    root = Path(specs[0].path)
    reader = DatasetReader(root)
    emb = reader.embodiment or embodiment_from_features(reader)
    recipe = get_recipe(cfg.recipe, **cfg.model)
    vla_cfg = fit_model_config(recipe.model, emb)
    check_recipe_fits(cfg.recipe, vla_cfg, reader, emb)
    train_eps, val_eps = split_episodes(reader.num_episodes, cfg.val_fraction, cfg.seed)
    image_keys = [f"observation.images.{c}" for c in vla_cfg.cameras]
    windows = dict(
        obs_horizon=vla_cfg.obs_horizon,
        action_horizon=vla_cfg.action_horizon,
        image_keys=image_keys,
        image_size=tuple(vla_cfg.image_size) if image_keys else None,
    )
    train_ds = WindowedDataset(reader, episodes=train_eps, **windows)  # type: ignore[arg-type]
    val_ds = WindowedDataset(reader, episodes=val_eps, **windows) if val_eps else None  # type: ignore[arg-type]
    normalizer = Normalizer(
        reader.stats, recipe.normalization, source=str(root / "meta" / "stats.json")
    )
    model = build_vla(vla_cfg)
    check_action_range(model, recipe.normalization, reader.stats, str(root / "meta" / "stats.json"))
    if cfg.cache_vision_features and cfg.lora is None and model.vision is not None:
        from vlastack.training.feature_cache import cached_datasets, can_cache

        if "vision" in cfg.freeze:
            model.vision.requires_grad_(False)
        if can_cache(model):
            print("vision encoder is frozen: encoding every frame once (cache_vision_features)")
            both = cached_datasets(
                model, [train_ds] + ([val_ds] if val_ds is not None else []), progress=cfg.progress
            )
            train_ds, val_ds = both[0], (both[1] if val_ds is not None else None)  # type: ignore[assignment]
    return TrainingParts(
        model=model,
        train_dataset=train_ds,
        val_dataset=val_ds,
        normalizer=normalizer,
        embodiment=emb,
        model_config=vla_cfg.to_dict(),
        collate_fn=collate,
        tasks=list(reader.tasks),
        action_names=list(emb.action.names),
        uses_language=vla_cfg.language != "none",
        recipe_extra=dict(recipe.extra),
    )


def build_mixture_parts(cfg: TrainConfig, specs: list[DataSpec]) -> TrainingParts:
    """Several datasets (robots) in one training stream (data/mixture.py, as Octo and π0 do).

    Each member must fit the recipe on its own (cameras, language, state, horizons) and is
    normalized with its own stats; the model gets the largest state/action size and the union
    of cameras (by name; a member lacking one gets zero images). Sampling: explicit weights are
    each member's share of the samples; without them every window is equally likely (shares
    proportional to size, like concatenating the datasets). Held-out episodes are split per
    member and validated per member in that robot's units.
    """
    from functools import partial

    from torch.utils.data import ConcatDataset

    from vlastack.data.dataset import WindowedDataset, collate, split_episodes
    from vlastack.data.format import DatasetReader
    from vlastack.data.mixture import DatasetMixture, MixtureNormalizer, PaddedView
    from vlastack.data.normalization import Normalizer
    from vlastack.models.vla import build_vla
    from vlastack.recipes import get_recipe

    recipe = get_recipe(cfg.recipe, **cfg.model)
    names = member_names([s.path for s in specs])
    readers, embs = [], []
    for spec in specs:
        reader = DatasetReader(Path(spec.path))
        emb = reader.embodiment or embodiment_from_features(reader)
        try:
            own = fit_model_config(recipe.model, emb)
        except ConfigError as exc:
            raise ConfigError(f"{reader.root}: {exc}") from None
        check_recipe_fits(cfg.recipe, own, reader, emb)
        readers.append(reader)
        embs.append(emb)
    h, w = (int(x) for x in recipe.model.image_size)
    merged, resized = merge_embodiments(embs, (h, w))
    if resized:
        print(
            f"mixture: cameras differ in size ({', '.join(resized)}); every image is resized "
            f"to the recipe's {h}x{w} (set --model.image_size=H,W to choose)"
        )
    vla_cfg = fit_model_config(recipe.model, merged)
    all_keys = [f"observation.images.{c}" for c in vla_cfg.cameras]
    trains: list[Any] = []
    vals: list[Any] = []
    normalizers = []
    for reader in readers:
        keys = [k for k in all_keys if k in reader.camera_keys]
        windows: dict[str, Any] = dict(
            obs_horizon=vla_cfg.obs_horizon,
            action_horizon=vla_cfg.action_horizon,
            image_keys=keys,
            image_size=tuple(vla_cfg.image_size) if keys else None,
        )
        train_eps, val_eps = split_episodes(reader.num_episodes, cfg.val_fraction, cfg.seed)
        train_ds = WindowedDataset(reader, episodes=train_eps, **windows)
        if len(train_ds) == 0:
            raise DataError(
                f"{reader.root}: no training windows after holding out {len(val_eps)} episodes; "
                "add episodes, lower --val_fraction, or drop this dataset from --data"
            )
        trains.append(train_ds)
        vals.append(WindowedDataset(reader, episodes=val_eps, **windows) if val_eps else None)
        normalizers.append(
            Normalizer(
                reader.stats, recipe.normalization, source=str(reader.root / "meta" / "stats.json")
            )
        )
    model = build_vla(vla_cfg)
    for reader in readers:
        check_action_range(
            model, recipe.normalization, reader.stats, str(reader.root / "meta" / "stats.json")
        )
    if cfg.cache_vision_features and cfg.lora is None and model.vision is not None:
        from vlastack.training.feature_cache import cached_datasets, can_cache

        if "vision" in cfg.freeze:
            model.vision.requires_grad_(False)
        lacking = [n for n, r in zip(names, readers) if set(all_keys) - set(r.camera_keys)]
        if can_cache(model) and lacking:
            print(f"not caching vision features: {lacking} lack some of the cameras {all_keys}")
        elif can_cache(model):
            print("vision encoder is frozen: encoding every frame once (cache_vision_features)")
            for i in range(len(trains)):
                pair = [trains[i]] + ([vals[i]] if vals[i] is not None else [])
                both = cached_datasets(model, pair, progress=cfg.progress)
                trains[i], vals[i] = both[0], (both[1] if vals[i] is not None else None)
    explicit = all(s.weight is not None for s in specs)
    sizes = [len(t) for t in trains]
    weights = [float(s.weight) if s.weight is not None else float(n) for s, n in zip(specs, sizes)]
    mixture = DatasetMixture(
        list(zip(trains, weights)),
        pad_state_dim=vla_cfg.state_dim or None,
        pad_action_dim=vla_cfg.action_dim,
    )
    normalizer = MixtureNormalizer(
        normalizers,
        names,
        {"observation.state": mixture.state_dim, "action": mixture.action_dim},
    )
    tasks = sorted({t for r in readers for t in r.tasks if t.strip()})
    val_sets = [
        ValSet(
            name,
            PaddedView(mixture, val, i),
            normalizer.member(i),
            partial(collate_own_actions, action_dim=mixture.action_dims[i]),
            list(embs[i].action.names),
            tasks,
        )
        for i, (name, val) in enumerate(zip(names, vals))
        if val is not None and len(val)
    ]
    order = None
    if explicit:
        sampler = mixture.sampler(num_samples=len(mixture), seed=cfg.seed)

        def order(epoch: int) -> list[int]:
            sampler.set_epoch(epoch)
            return list(sampler)

    members = []
    print(f"mixture of {len(specs)} datasets ({'by weight' if explicit else 'by size'}):")
    for i, (name, reader, emb) in enumerate(zip(names, readers, embs)):
        share = float(mixture.weights[i])
        members.append(
            {
                "name": name,
                "dataset": str(reader.root),
                "weight": share,
                "train_windows": sizes[i],
                "state_dim": int(mixture.state_dims[i]),
                "action_dim": int(mixture.action_dims[i]),
                "cameras": [
                    c for c in vla_cfg.cameras if f"observation.images.{c}" in reader.camera_keys
                ],
                "embodiment": emb.to_dict(),
            }
        )
        print(
            f"  {name:<20} {share:6.1%} of samples  {sizes[i]:>7} windows  "
            f"state {mixture.state_dims[i]}/{mixture.state_dim}  "
            f"action {mixture.action_dims[i]}/{mixture.action_dim}  {reader.root}"
        )
    return TrainingParts(
        model=model,
        train_dataset=mixture,
        val_dataset=ConcatDataset([vs.dataset for vs in val_sets]) if val_sets else None,
        normalizer=normalizer,
        embodiment=embs[0],
        model_config=vla_cfg.to_dict(),
        collate_fn=collate,
        tasks=tasks,
        action_names=list(merged.action.names),
        uses_language=vla_cfg.language != "none",
        recipe_extra=dict(recipe.extra),
        val_sets=val_sets,
        epoch_indices=order,
        mixture={"default": names[0], "members": members},
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


def collate_own_actions(samples: list[Batch], action_dim: int) -> Batch:
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
