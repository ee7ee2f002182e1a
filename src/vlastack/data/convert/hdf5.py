"""HDF5 episodes (robomimic / LIBERO and ALOHA layouts) -> vlastack LeRobot-v3 dataset.

robomimic (Mandlekar et al. 2021): one file, ``data/demo_<i>/{obs/<key>, actions}``, optional
``mask/<split>`` demo lists, ``data.attrs['env_args']`` JSON; LIBERO adds
``data.attrs['problem_info']['language_instruction']``. ALOHA (Zhao et al. 2023, ACT): one file per
episode with ``/observations/qpos``, ``/observations/images/<cam>`` and ``/action``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vlastack.data.convert import EpisodeArrays, missing_key, to_uint8_images, write_dataset
from vlastack.errors import DataError, require

Layout = Literal["auto", "robomimic", "aloha"]
DEFAULT_FPS = {"robomimic": 20.0, "aloha": 50.0}  # robomimic control_freq 20; ALOHA DT = 0.02 s
ALOHA_JOINTS = [
    "waist",
    "shoulder",
    "elbow",
    "forearm_roll",
    "wrist_angle",
    "wrist_rotate",
    "gripper",
]
ALOHA_NAMES = [f"{side}_{j}" for side in ("left", "right") for j in ALOHA_JOINTS]


def _h5py() -> Any:
    return require("h5py", "convert", "reading HDF5 episodes")


def _natural_key(name: str) -> tuple[Any, ...]:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def _camera_name(key: str) -> str:
    for suffix in ("_image", "_rgb"):
        if key.endswith(suffix) and len(key) > len(suffix):
            return key[: -len(suffix)]
    return key


def _attr_str(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def detect_layout(path: Path) -> str:
    h5py = _h5py()
    files = _aloha_files(path) if path.is_dir() else [path]
    if not files:
        raise DataError(f"{path}: folder holds no .hdf5/.h5 files")
    with h5py.File(files[0], "r") as f:
        if "data" in f and any(k.startswith("demo") for k in f["data"]):
            return "robomimic"
        if "observations" in f and "action" in f:
            return "aloha"
        raise DataError(
            f"{files[0]}: neither robomimic (data/demo_*) nor ALOHA (/observations, /action) "
            f"layout; top-level keys are {sorted(f.keys())}"
        )


# ---- robomimic -------------------------------------------------------------------------
def robomimic_info(path: Path) -> dict[str, Any]:
    """Demo names, default state/image keys, task and env name of a robomimic file."""
    h5py = _h5py()
    with h5py.File(path, "r") as f:
        if "data" not in f:
            raise missing_key(str(path), "data", f.keys(), "a robomimic file has data/demo_<i>")
        data = f["data"]
        demos = sorted((k for k in data if k.startswith("demo")), key=_natural_key)
        if not demos:
            raise missing_key(f"{path}:data", "demo_0", data.keys())
        obs = data[demos[0]].get("obs")
        if obs is None:
            raise missing_key(f"{path}:data/{demos[0]}", "obs", data[demos[0]].keys())
        image_keys = sorted(k for k in obs if obs[k].ndim == 4)
        state_keys = sorted(k for k in obs if obs[k].ndim == 2 and obs[k].dtype != np.uint8)
        env_name, task = "", ""
        if "env_args" in data.attrs:
            try:
                env_name = json.loads(_attr_str(data.attrs["env_args"])).get("env_name", "")
            except json.JSONDecodeError:
                env_name = ""
        if "problem_info" in data.attrs:  # LIBERO
            try:
                pi = json.loads(_attr_str(data.attrs["problem_info"]))
                task = str(pi.get("language_instruction", "")).strip()
            except json.JSONDecodeError:
                task = ""
        masks = sorted(f["mask"].keys()) if "mask" in f else []
    return {
        "demos": demos,
        "image_keys": image_keys,
        "state_keys": state_keys,
        "env_name": env_name,
        "task": task,
        "masks": masks,
    }


def iter_robomimic(
    path: Path,
    *,
    state_keys: Sequence[str] | None = None,
    image_keys: Sequence[str] | None = None,
    action_key: str = "actions",
    filter_key: str | None = None,
    task: str | None = None,
) -> tuple[list[str], Iterator[EpisodeArrays], dict[str, Any]]:
    """(demo names, episode iterator, info) for a robomimic/LIBERO HDF5 file."""
    h5py = _h5py()
    info = robomimic_info(path)
    demos = info["demos"]
    if filter_key is not None:
        with h5py.File(path, "r") as f:
            if "mask" not in f or filter_key not in f["mask"]:
                have = sorted(f["mask"].keys()) if "mask" in f else []
                raise missing_key(f"{path}:mask", filter_key, have, "pick one of these filters")
            wanted = {_attr_str(x) for x in f["mask"][filter_key][()]}
        demos = [d for d in demos if d in wanted]
    s_keys = list(state_keys) if state_keys else info["state_keys"]
    i_keys = list(image_keys) if image_keys is not None else info["image_keys"]
    if not s_keys:
        raise DataError(f"{path}: no low-dimensional obs keys to use as state; pass --state-keys")
    instruction = task if task is not None else (info["task"] or info["env_name"] or path.stem)

    def gen() -> Iterator[EpisodeArrays]:
        with h5py.File(path, "r") as f:
            for demo in demos:
                g = f["data"][demo]
                where = f"{path}:data/{demo}"
                if action_key not in g:
                    raise missing_key(where, action_key, g.keys(), "pass --action-key")
                obs = g.get("obs")
                if obs is None:
                    raise missing_key(where, "obs", g.keys())
                parts = []
                for k in s_keys:
                    if k not in obs:
                        raise missing_key(f"{where}/obs", k, obs.keys(), "fix --state-keys")
                    arr = np.asarray(obs[k][()], dtype=np.float32)
                    parts.append(arr.reshape(len(arr), -1))
                images = {}
                for k in i_keys:
                    if k not in obs:
                        raise missing_key(f"{where}/obs", k, obs.keys(), "fix --image-keys")
                    images[_camera_name(k)] = to_uint8_images(obs[k][()], where, k)
                action = np.asarray(g[action_key][()], dtype=np.float32)
                yield EpisodeArrays(
                    state=np.concatenate(parts, axis=1),
                    action=action.reshape(len(action), -1),
                    images=images,
                    task=instruction,
                    source=where,
                )

    # Per-dim state names say which obs key each dim came from.
    names: list[str] = []
    with h5py.File(path, "r") as f:
        obs0 = f["data"][demos[0]]["obs"] if demos else None
        for k in s_keys:
            if obs0 is None or k not in obs0:
                continue
            width = int(np.prod(obs0[k].shape[1:]))
            names += [k] if width == 1 else [f"{k}_{i}" for i in range(width)]
    info = {**info, "state_names": names or None, "task": instruction}
    return demos, gen(), info


# ---- ALOHA -----------------------------------------------------------------------------
def _aloha_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = [p for p in path.iterdir() if p.suffix in (".hdf5", ".h5")]
    return sorted(files, key=lambda p: _natural_key(p.name))


def _decode_compressed(frames: np.ndarray, where: str) -> np.ndarray:
    """ALOHA real-robot files store JPEG bytes zero-padded to one length per frame."""
    pil = require("PIL.Image", "convert", "decoding ALOHA compressed images")
    import io

    return np.stack(
        [np.asarray(pil.open(io.BytesIO(row.tobytes())).convert("RGB")) for row in frames]
    )


def iter_aloha(
    path: Path,
    *,
    image_keys: Sequence[str] | None = None,
    state_key: str = "observations/qpos",
    action_key: str = "action",
    task: str | None = None,
) -> tuple[list[Path], Iterator[EpisodeArrays], dict[str, Any]]:
    h5py = _h5py()
    files = _aloha_files(path)
    if not files:
        raise DataError(f"{path}: folder holds no .hdf5/.h5 files")
    with h5py.File(files[0], "r") as f:
        imgs = f.get("observations/images")
        cams = sorted(imgs.keys()) if imgs is not None else []
    i_keys = list(image_keys) if image_keys is not None else cams
    instruction = task if task is not None else path.stem.replace("_", " ")

    def gen() -> Iterator[EpisodeArrays]:
        for p in files:
            with h5py.File(p, "r") as f:
                where = str(p)
                for k in (state_key, action_key):
                    if k not in f:
                        parent = k.rsplit("/", 1)[0] if "/" in k else ""
                        have = f[parent].keys() if parent and parent in f else f.keys()
                        raise missing_key(where, k, have)
                images = {}
                for cam in i_keys:
                    k = f"observations/images/{cam}"
                    if k not in f:
                        have = f["observations/images"].keys() if "observations/images" in f else []
                        raise missing_key(where, k, have, "fix --image-keys")
                    raw = f[k][()]
                    if raw.ndim == 2 and raw.dtype == np.uint8:
                        raw = _decode_compressed(raw, where)
                    images[cam] = to_uint8_images(raw, where, k)
                action = np.asarray(f[action_key][()], dtype=np.float32)
                state = np.asarray(f[state_key][()], dtype=np.float32)
                yield EpisodeArrays(
                    state=state.reshape(len(state), -1),
                    action=action.reshape(len(action), -1),
                    images=images,
                    task=instruction,
                    source=where,
                )

    return files, gen(), {"task": instruction}


# ---- entry point -----------------------------------------------------------------------
def convert_hdf5(
    src: str | Path,
    dst: str | Path,
    *,
    layout: Layout = "auto",
    fps: float | None = None,
    robot_type: str | None = None,
    state_keys: Sequence[str] | None = None,
    image_keys: Sequence[str] | None = None,
    action_key: str | None = None,
    filter_key: str | None = None,
    task: str | None = None,
    action_kind: str = "absolute",
    use_videos: bool = True,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Convert a robomimic/LIBERO file or an ALOHA file/folder at ``src`` into ``dst``."""
    src = Path(src)
    if not src.exists():
        raise DataError(f"{src}: no such file or folder")
    kind = detect_layout(src) if layout == "auto" else layout
    state_names: list[str] | None = None
    gripper: int | None = None
    if kind == "robomimic":
        if src.is_dir():
            raise DataError(f"{src}: a robomimic dataset is one .hdf5 file, not a folder")
        demos, episodes, info = iter_robomimic(
            src,
            state_keys=state_keys,
            image_keys=image_keys,
            action_key=action_key or "actions",
            filter_key=filter_key,
            task=task,
        )
        total = len(demos)
        state_names = info["state_names"]
        default_robot = info["env_name"] or "robomimic"
    elif kind == "aloha":
        files, episodes, info = iter_aloha(
            src, image_keys=image_keys, action_key=action_key or "action", task=task
        )
        total = len(files)
        default_robot = "aloha"
    else:
        raise DataError(f"unknown HDF5 layout {kind!r}; choose 'auto', 'robomimic' or 'aloha'")

    # ALOHA's 14-dim joint vectors have known names; grippers are dims 6 and 13.
    action_names = None
    if kind == "aloha":
        with _h5py().File(_aloha_files(src)[0], "r") as f:
            if f["action"].shape[-1] == 14:
                state_names = action_names = list(ALOHA_NAMES)
                gripper = 6
    return write_dataset(
        episodes,
        dst,
        fps=fps or DEFAULT_FPS[kind],
        robot_type=robot_type or default_robot,
        total=total,
        state_names=state_names,
        action_names=action_names,
        action_kind=action_kind,
        gripper_index=gripper,
        use_videos=use_videos,
        overwrite=overwrite,
        progress=progress,
        description=f"converted from {kind} HDF5 {src.name}",
    )
