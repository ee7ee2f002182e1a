"""RLDS / Open X-Embodiment episodes -> vlastack LeRobot-v3 dataset (extra ``[rlds]``).

RLDS (Ramos et al. 2021) stores each episode as a ``steps`` sequence of ``{observation: {...},
action, language_instruction, is_first, is_last, ...}``; Open X-Embodiment (2023) publishes its
datasets in this form as TFDS folders. Reading needs ``tensorflow-datasets`` (and tensorflow),
which install here but weigh ~1.8 GB, so they are an optional extra.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vlastack.data.convert import EpisodeArrays, missing_key, to_uint8_images, write_dataset
from vlastack.errors import DataError, MissingExtraError

DEFAULT_FPS = 10.0  # RLDS stores no rate; most Open X-Embodiment datasets are 3–15 Hz
TASK_KEYS = ("language_instruction", "natural_language_instruction", "instruction")


def _text(v: Any) -> str:
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="replace")
    if isinstance(v, np.ndarray) and v.shape == ():
        return _text(v.item())
    return str(v)


def _flatten_action(a: Any, prefix: str = "action") -> tuple[np.ndarray, list[str]]:
    """An action vector, or a dict of arrays (RT-1's world_vector, rotation_delta, ...)."""
    if isinstance(a, Mapping):
        parts, names = [], []
        for k in sorted(a):
            v, n = _flatten_action(a[k], k)
            parts.append(v)
            names += n
        return np.concatenate(parts), names
    v = np.asarray(a, dtype=np.float32).reshape(-1)
    return v, [prefix] if v.size == 1 else [f"{prefix}_{i}" for i in range(v.size)]


def _is_image(v: Any) -> bool:
    return (
        isinstance(v, np.ndarray)
        and v.ndim == 3
        and v.dtype == np.uint8
        and v.shape[-1] in (1, 3, 4)
    )


def episode_from_steps(
    steps: Sequence[Mapping[str, Any]],
    *,
    source: str,
    state_key: str | None = None,
    image_keys: Sequence[str] | None = None,
    task: str | None = None,
) -> tuple[EpisodeArrays, list[str], list[str]]:
    """Numpy RLDS steps -> (episode, state names, action names)."""
    if not steps:
        raise DataError(f"{source}: episode has no steps")
    obs0 = steps[0].get("observation")
    if not isinstance(obs0, Mapping):
        raise missing_key(source, "observation", steps[0].keys())
    if "action" not in steps[0]:
        raise missing_key(source, "action", steps[0].keys())
    cams = (
        list(image_keys)
        if image_keys is not None
        else sorted(k for k, v in obs0.items() if _is_image(v))
    )
    if state_key is not None:
        if state_key not in obs0:
            raise missing_key(f"{source}/observation", state_key, obs0.keys(), "fix --state-key")
        s_keys = [state_key]
    elif "state" in obs0:
        s_keys = ["state"]
    else:
        s_keys = sorted(
            k
            for k, v in obs0.items()
            if isinstance(v, np.ndarray) and v.ndim <= 1 and np.issubdtype(v.dtype, np.floating)
        )
    if not s_keys:
        raise DataError(
            f"{source}: no float vector in observation {sorted(obs0)} to use as state; "
            "pass --state-key"
        )
    for k in cams:
        if k not in obs0:
            raise missing_key(f"{source}/observation", k, obs0.keys(), "fix --image-keys")
    states: list[np.ndarray] = []
    actions: list[np.ndarray] = []
    a_names: list[str] = []
    for st in steps:
        obs = st["observation"]
        states.append(np.concatenate([np.asarray(obs[k], np.float32).reshape(-1) for k in s_keys]))
        a, a_names = _flatten_action(st["action"])
        actions.append(a)
    s_names = []
    for k in s_keys:
        n = int(np.asarray(obs0[k]).size)
        s_names += [k] if n == 1 else [f"{k}_{i}" for i in range(n)]
    images = {
        k: to_uint8_images(np.stack([np.asarray(st["observation"][k]) for st in steps]), source, k)
        for k in cams
    }
    instruction = task
    if instruction is None:
        for holder in (steps[0], obs0):
            for k in TASK_KEYS:
                if k in holder:
                    instruction = _text(holder[k]).strip()
                    break
            if instruction is not None:
                break
    ep = EpisodeArrays(
        state=np.stack(states),
        action=np.stack(actions),
        images=images,
        task=instruction or "",
        source=source,
    )
    return ep, s_names, a_names


def _load_tfds(src: Path, split: str) -> tuple[Any, int | None]:
    try:
        import tensorflow_datasets as tfds
    except ImportError as exc:
        raise MissingExtraError("tensorflow-datasets", "rlds", "reading RLDS datasets") from exc
    try:
        builder = tfds.builder_from_directory(str(src))
    except Exception as exc:  # tfds raises assorted errors for a folder without dataset_info.json
        raise DataError(
            f"{src}: not a TFDS/RLDS dataset folder ({exc}); point at the version folder that "
            "holds dataset_info.json, e.g. .../bridge/0.1.0"
        ) from None
    if split not in builder.info.splits:
        raise missing_key(str(src), f"split {split!r}", list(builder.info.splits), "pass --split")
    total = builder.info.splits[split].num_examples
    return builder.as_dataset(split=split), total


def iter_rlds(
    src: Path,
    *,
    split: str = "train",
    state_key: str | None = None,
    image_keys: Sequence[str] | None = None,
    task: str | None = None,
    max_episodes: int | None = None,
) -> tuple[int | None, Iterator[EpisodeArrays], dict[str, Any]]:
    ds, total = _load_tfds(src, split)
    if max_episodes is not None:
        ds = ds.take(max_episodes)
        total = min(total, max_episodes) if total is not None else max_episodes
    names: dict[str, Any] = {}

    def gen() -> Iterator[EpisodeArrays]:
        for i, episode in enumerate(ds):
            steps: Iterable[Mapping[str, Any]] = episode["steps"].as_numpy_iterator()
            ep, s_names, a_names = episode_from_steps(
                list(steps),
                source=f"{src}:{split}[{i}]",
                state_key=state_key,
                image_keys=image_keys,
                task=task,
            )
            names.setdefault("state", s_names)
            names.setdefault("action", a_names)
            yield ep

    return total, gen(), names


def convert_rlds(
    src: str | Path,
    dst: str | Path,
    *,
    split: str = "train",
    fps: float | None = None,
    robot_type: str | None = None,
    state_key: str | None = None,
    image_keys: Sequence[str] | None = None,
    task: str | None = None,
    action_kind: str = "absolute",
    max_episodes: int | None = None,
    use_videos: bool = True,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Convert an RLDS dataset folder (a TFDS version folder) into ``dst``."""
    src = Path(src)
    if not src.exists():
        raise DataError(f"{src}: no such folder")
    total, episodes, _ = iter_rlds(
        src,
        split=split,
        state_key=state_key,
        image_keys=image_keys,
        task=task,
        max_episodes=max_episodes,
    )
    return write_dataset(
        episodes,
        dst,
        fps=fps or DEFAULT_FPS,
        robot_type=robot_type or src.parent.name or "rlds",
        total=total,
        action_kind=action_kind,
        use_videos=use_videos,
        overwrite=overwrite,
        progress=progress,
        description=f"converted from RLDS {src}",
    )
