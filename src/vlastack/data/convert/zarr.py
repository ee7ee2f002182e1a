"""Diffusion Policy replay-buffer zarr -> vlastack LeRobot-v3 dataset.

Layout (Chi et al. 2023, ``diffusion_policy/common/replay_buffer.py``): every frame of every
episode concatenated in ``data/<key>`` arrays (``img``, ``state``, ``action``, ``keypoint`` for
PushT; ``camera_<i>``, ``robot_eef_pose`` for real robots) and ``meta/episode_ends`` holding the
exclusive end index of each episode.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vlastack.data.convert import EpisodeArrays, missing_key, to_uint8_images, write_dataset
from vlastack.errors import DataError, require


def _open(path: Path) -> Any:
    zarr = require("zarr", "convert", "reading Diffusion Policy zarr replay buffers")
    if not path.exists():
        raise DataError(f"{path}: no such zarr store")
    try:
        return zarr.open_group(str(path), mode="r")
    except Exception as exc:  # zarr raises several types for a non-store path
        raise DataError(f"{path}: not a readable zarr group ({exc})") from None


def _is_image(arr: Any) -> bool:
    return len(arr.shape) == 4 and arr.shape[-1] in (1, 3, 4)


def zarr_info(path: Path) -> dict[str, Any]:
    root = _open(path)
    groups = set(root.group_keys())
    for g in ("data", "meta"):
        if g not in groups:
            raise missing_key(
                str(path), g, groups, "a Diffusion Policy replay buffer has data/ and meta/"
            )
    data, meta = root["data"], root["meta"]
    if "episode_ends" not in set(meta.array_keys()):
        raise missing_key(f"{path}/meta", "episode_ends", meta.array_keys())
    keys = sorted(data.array_keys())
    return {
        "keys": keys,
        "shapes": {k: tuple(data[k].shape) for k in keys},
        "image_keys": [k for k in keys if _is_image(data[k])],
        "episode_ends": np.asarray(meta["episode_ends"][:], dtype=np.int64),
    }


def iter_zarr(
    path: Path,
    *,
    state_key: str = "state",
    action_key: str = "action",
    image_keys: Sequence[str] | None = None,
    task: str = "",
) -> tuple[int, Iterator[EpisodeArrays], dict[str, Any]]:
    info = zarr_info(path)
    keys = info["keys"]
    for k in (state_key, action_key):
        if k not in keys:
            raise missing_key(f"{path}/data", k, keys, "pass --state-key / --action-key")
    i_keys = list(image_keys) if image_keys is not None else info["image_keys"]
    for k in i_keys:
        if k not in keys:
            raise missing_key(f"{path}/data", k, keys, "fix --image-keys")
    ends = info["episode_ends"]
    n_frames = info["shapes"][action_key][0]
    if len(ends) == 0:
        raise DataError(f"{path}/meta/episode_ends is empty; the buffer holds no episodes")
    if np.any(np.diff(ends) <= 0) or ends[0] <= 0 or ends[-1] > n_frames:
        raise DataError(
            f"{path}/meta/episode_ends must increase strictly and end at most at the number of "
            f"frames ({n_frames}); got {ends[:5].tolist()}...{ends[-1]}"
        )
    for k in [state_key, *i_keys]:
        if info["shapes"][k][0] < ends[-1]:
            raise DataError(
                f"{path}/data/{k} has {info['shapes'][k][0]} frames but episode_ends reaches "
                f"{ends[-1]}; the store is truncated"
            )
    instruction = task or path.stem.replace("_", " ")

    def gen() -> Iterator[EpisodeArrays]:
        data = _open(path)["data"]
        start = 0
        for i, end in enumerate(ends.tolist()):
            where = f"{path}: episode {i} (frames {start}:{end})"
            state = np.asarray(data[state_key][start:end], dtype=np.float32)
            action = np.asarray(data[action_key][start:end], dtype=np.float32)
            images = {k: to_uint8_images(np.asarray(data[k][start:end]), where, k) for k in i_keys}
            yield EpisodeArrays(
                state=state.reshape(len(state), -1),
                action=action.reshape(len(action), -1),
                images=images,
                task=instruction,
                source=where,
            )
            start = end

    return len(ends), gen(), info


def convert_zarr(
    src: str | Path,
    dst: str | Path,
    *,
    fps: float = 10.0,
    robot_type: str = "diffusion_policy",
    state_key: str = "state",
    action_key: str = "action",
    image_keys: Sequence[str] | None = None,
    task: str = "",
    action_kind: str = "absolute",
    use_videos: bool = True,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Convert a Diffusion Policy zarr replay buffer (PushT default: 10 Hz) into ``dst``."""
    src = Path(src)
    total, episodes, _ = iter_zarr(
        src, state_key=state_key, action_key=action_key, image_keys=image_keys, task=task
    )
    return write_dataset(
        episodes,
        dst,
        fps=fps,
        robot_type=robot_type,
        total=total,
        action_kind=action_kind,
        use_videos=use_videos,
        overwrite=overwrite,
        progress=progress,
        description=f"converted from Diffusion Policy zarr {src.name}",
    )
