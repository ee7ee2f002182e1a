"""Converters from the formats users have (robomimic/ALOHA HDF5, Diffusion Policy zarr, RLDS).

Each converter yields ``EpisodeArrays`` and ``write_dataset`` turns them into a vlastack
LeRobot-v3 dataset with an embodiment spec, so every source format goes through one writer.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vlastack.embodiment import CameraSpec, EmbodimentSpec, VectorSpec
from vlastack.errors import DataError


@dataclass
class EpisodeArrays:
    """One episode in memory: images (N, H, W, C) uint8 per camera, state (N, S), action (N, A)."""

    state: np.ndarray
    action: np.ndarray
    images: dict[str, np.ndarray] = field(default_factory=dict)
    task: str = ""
    source: str = ""  # e.g. "demo.hdf5:data/demo_3", for error messages

    def validate(self) -> None:
        n = len(self.action)
        if n == 0:
            raise DataError(f"{self.source}: episode has no frames; drop it from the source")
        if self.action.ndim != 2 or self.state.ndim != 2:
            raise DataError(
                f"{self.source}: state {self.state.shape} and action {self.action.shape} must be "
                "2-D (frames, dims); flatten them or pick other keys"
            )
        if len(self.state) != n:
            raise DataError(
                f"{self.source}: state has {len(self.state)} frames but action has {n}; "
                "the source episode is truncated"
            )
        for cam, img in self.images.items():
            if len(img) != n:
                raise DataError(
                    f"{self.source}: camera {cam!r} has {len(img)} frames but action has {n}"
                )
            if img.ndim != 4 or img.shape[-1] not in (1, 3, 4):
                raise DataError(
                    f"{self.source}: camera {cam!r} has shape {img.shape}; expected "
                    "(frames, height, width, channels) with channels last"
                )


def missing_key(source: str, key: str, available: Iterable[str], hint: str = "") -> DataError:
    """The error for a key that is not in a file: names it and lists what is there."""
    have = sorted(available)
    msg = f"{source}: no {key!r}; it has {have}"
    if hint:
        msg += f". {hint}"
    return DataError(msg)


def to_uint8_images(x: np.ndarray, source: str, key: str) -> np.ndarray:
    """Images stored as float 0–1, float 0–255 or uint8 -> uint8 (N, H, W, C)."""
    if x.dtype == np.uint8:
        return x
    if not np.issubdtype(x.dtype, np.floating) and not np.issubdtype(x.dtype, np.integer):
        raise DataError(f"{source}: images {key!r} have dtype {x.dtype}; expected uint8 or float")
    xf = x.astype(np.float32)
    if np.issubdtype(x.dtype, np.floating) and xf.size and float(np.nanmax(xf)) <= 1.0:
        xf = xf * 255.0
    return np.clip(np.rint(xf), 0, 255).astype(np.uint8)


def default_names(prefix: str, n: int) -> list[str]:
    return [f"{prefix}_{i}" for i in range(n)]


def build_embodiment(
    first: EpisodeArrays,
    *,
    robot_type: str,
    fps: float,
    state_names: Sequence[str] | None = None,
    action_names: Sequence[str] | None = None,
    action_kind: str = "absolute",
    gripper_index: int | None = None,
    description: str = "",
) -> EmbodimentSpec:
    s_dim, a_dim = first.state.shape[1], first.action.shape[1]
    s_names = list(state_names) if state_names else default_names("state", s_dim)
    a_names = list(action_names) if action_names else default_names("action", a_dim)
    if len(s_names) != s_dim or len(a_names) != a_dim:
        raise DataError(
            f"{first.source}: {len(s_names)} state names for {s_dim} dims / {len(a_names)} "
            f"action names for {a_dim} dims; give one name per dimension"
        )
    spec = EmbodimentSpec(
        robot_type=robot_type,
        cameras=[
            CameraSpec(cam, int(img.shape[1]), int(img.shape[2]), int(img.shape[3]))
            for cam, img in first.images.items()
        ],
        state=VectorSpec(s_names),
        action=VectorSpec(a_names, kind=action_kind, gripper_index=gripper_index),  # type: ignore[arg-type]
        control_hz=float(fps),
        description=description,
    )
    spec.validate(first.source or "converter")
    return spec


def prepare_destination(dst: str | Path, overwrite: bool) -> Path:
    dst = Path(dst)
    if dst.exists() and any(dst.iterdir()):
        if not overwrite:
            raise DataError(
                f"{dst}: destination exists and is not empty; choose another DST or pass "
                "--overwrite"
            )
        if not (dst / "meta" / "info.json").exists():
            raise DataError(
                f"{dst}: refusing to overwrite a folder that is not a dataset (no meta/info.json)"
            )
        shutil.rmtree(dst)
    return dst


def write_dataset(
    episodes: Iterable[EpisodeArrays],
    dst: str | Path,
    *,
    fps: float,
    robot_type: str,
    total: int | None = None,
    state_names: Sequence[str] | None = None,
    action_names: Sequence[str] | None = None,
    action_kind: str = "absolute",
    gripper_index: int | None = None,
    use_videos: bool = True,
    overwrite: bool = False,
    progress: bool = True,
    description: str = "",
) -> Path:
    """Write ``episodes`` as a vlastack LeRobot-v3 dataset at ``dst``; returns ``dst``."""
    from tqdm.auto import tqdm

    from vlastack.data.layout import Feature
    from vlastack.data.writer import DatasetWriter

    dst = prepare_destination(dst, overwrite)
    # The format needs a task per frame; sources without language get the robot's name.
    fallback_task = robot_type.replace("_", " ")
    writer: Any = None
    spec: EmbodimentSpec | None = None
    bar = tqdm(
        episodes, total=total, desc=f"converting to {dst.name}", unit="ep", disable=not progress
    )
    for ep in bar:
        ep.validate()
        if writer is None:
            spec = build_embodiment(
                ep,
                robot_type=robot_type,
                fps=fps,
                state_names=state_names,
                action_names=action_names,
                action_kind=action_kind,
                gripper_index=gripper_index,
                description=description,
            )
            features: dict[str, Any] = {
                f"observation.images.{cam}": Feature(
                    "video" if use_videos else "image",
                    tuple(img.shape[1:]),
                    names=["height", "width", "channels"],
                )
                for cam, img in ep.images.items()
            }
            features["observation.state"] = Feature(
                "float32", (ep.state.shape[1],), names=spec.state.names
            )
            features["action"] = Feature("float32", (ep.action.shape[1],), names=spec.action.names)
            writer = DatasetWriter.create(
                dst,
                fps=int(round(fps)),
                features=features,
                robot_type=robot_type,
                embodiment=spec,
                use_videos=use_videos,
            )
        assert spec is not None
        _check_consistent(ep, spec)
        state = ep.state.astype(np.float32, copy=False)
        action = ep.action.astype(np.float32, copy=False)
        for t in range(len(action)):
            frame: dict[str, Any] = {"observation.state": state[t], "action": action[t]}
            for cam, img in ep.images.items():
                frame[f"observation.images.{cam}"] = img[t]
            writer.add_frame(frame, task=ep.task or fallback_task)
        writer.save_episode()
    if writer is None:
        raise DataError("the source holds no episodes (check the filter / mask you selected)")
    writer.finalize()
    return dst


def _check_consistent(ep: EpisodeArrays, spec: EmbodimentSpec) -> None:
    if ep.state.shape[1] != spec.state.dim or ep.action.shape[1] != spec.action.dim:
        raise DataError(
            f"{ep.source}: state/action dims {ep.state.shape[1]}/{ep.action.shape[1]} differ "
            f"from the first episode's {spec.state.dim}/{spec.action.dim}; one dataset holds "
            "one robot, convert the others separately and mix them with DatasetMixture"
        )
    cams = {c.name: (c.height, c.width, c.channels) for c in spec.cameras}
    mine = {cam: tuple(img.shape[1:]) for cam, img in ep.images.items()}
    if cams != mine:
        raise DataError(
            f"{ep.source}: cameras {mine} differ from the first episode's {cams}; "
            "every episode must have the same cameras and image sizes"
        )
