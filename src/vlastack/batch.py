"""The model's batch, typed: ``Batch`` is a dict with LeRobot keys, one spelling of each.

Every batch a model reads is made in one of two places: ``observation.observation_batch`` (a
policy acting: windows of parsed observations) or ``data.dataset.collate`` (training and
validation: dataset windows), and every reader goes through a ``Batch``. A key that is not one
of the spellings below raises ``BatchKeyError`` naming it and the spelling meant, so a typo (or
a client's spelling that reached inside, e.g. ``state`` or ``prompt``) fails where it is made or
read instead of being silently absent. Plain dicts are accepted at the edges (``as_batch``:
``VLA.loss`` / ``VLA.sample_actions``, the training loop), so callers, the server's wire format
and checkpoints are unchanged.

Keys (B = batch, T = observation history, H = action horizon):

- ``observation.images.<cam>``: float (B, T, 3, H, W) in [0, 1]; ``observation.images.<cam>_is_pad``
  bool (B, T), a camera this sample lacks (mixtures);
- ``observation.state``: float (B, T, S) (``_is_pad`` bool (B, T): steps before the episode);
- ``observation.<name>`` (+ ``_is_pad``): any other vector feature of a dataset
  (``observation.environment_state``, ...);
- ``observation.image_features``: precomputed encoder outputs (``training.feature_cache``);
- ``task``: list[str], the instruction per sample;
- ``action`` (B, H, A), ``action_is_pad`` (B, H), ``action_dim_mask`` / ``state_dim_mask``
  (mixtures), ``dataset_index``, ``episode_index``, ``index``, ``frame_index``, ``timestamp``,
  ``task_index``.

A key outside this list that is not confusable with one of them (a plugin model's own field)
passes: what is refused is another spelling of a key above (an alias, a near miss by edit
distance, a camera under another prefix).
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from vlastack.errors import DataError

IMAGE_PREFIX = "observation.images."
STATE = "observation.state"
TASK = "task"
ACTION = "action"
ACTION_IS_PAD = "action_is_pad"
IMAGE_FEATURES = "observation.image_features"
PAD_SUFFIX = "_is_pad"

KEYS = frozenset(
    {
        STATE,
        STATE + PAD_SUFFIX,
        TASK,
        ACTION,
        ACTION_IS_PAD,
        "action_dim_mask",
        "state_dim_mask",
        IMAGE_FEATURES,
        "observation.environment_state",
        "observation.environment_state" + PAD_SUFFIX,
        "dataset_index",
        "episode_index",
        "index",
        "frame_index",
        "timestamp",
        "task_index",
    }
)
# spellings clients and other projects use, and the one a batch holds (observation.py accepts
# them from a client; inside a batch they are mistakes)
ALIASES = {
    "state": STATE,
    "observation/state": STATE,
    "observation.states": STATE,
    "prompt": TASK,
    "tasks": TASK,
    "instruction": TASK,
    "language_instruction": TASK,
    "actions": ACTION,
    "action_pad": ACTION_IS_PAD,
    "actions_is_pad": ACTION_IS_PAD,
}
_WRONG_IMAGE_PREFIXES = ("observation.image.", "observation/", "images/", "observation.images/")


class BatchKeyError(DataError):
    """A batch key that is not one of ``vlastack.batch``'s spellings (not a ``KeyError``: a
    caller catching a missing key must not swallow a misspelled one)."""


def image_key(camera: str) -> str:
    """The batch key of a camera's frames: ``observation.images.<camera>``."""
    return IMAGE_PREFIX + camera


def image_pad_key(camera: str) -> str:
    return image_key(camera) + PAD_SUFFIX


@functools.lru_cache(maxsize=4096)
def _meant(key: str) -> str | None:
    """The spelling ``key`` most likely stands for; None when ``key`` is one."""
    if key in KEYS:
        return None
    if key.startswith(IMAGE_PREFIX):
        return None if len(key) > len(IMAGE_PREFIX) else image_key("<camera>")
    if key in ALIASES:
        return ALIASES[key]
    for wrong in _WRONG_IMAGE_PREFIXES:
        if key.startswith(wrong) and len(key) > len(wrong):
            rest = key[len(wrong) :]
            return STATE if rest == "state" else image_key(rest)
    close = difflib.get_close_matches(key, sorted(KEYS), n=1, cutoff=0.85)
    if close:
        return close[0]
    if key in ("observation.", "observation.images"):
        return image_key("<camera>")
    # another vector feature of a dataset (observation.<name>), or a key of a plugin's own
    # (a TrainablePolicy reading its dataset's fields): not confusable with a batch key
    return None


def check_key(key: Any) -> None:
    """Raise ``BatchKeyError`` naming ``key`` when it is not one of the batch spellings."""
    if not isinstance(key, str):
        raise BatchKeyError(f"batch key {key!r} is a {type(key).__name__}; keys are strings")
    meant = _meant(key)
    if meant is None:
        return
    raise BatchKeyError(
        f"batch key '{key}' is another spelling of a vlastack batch key; did you mean '{meant}'? "
        "(one spelling per key: vlastack.batch)"
    )


class Batch(dict[str, Any]):
    """A model batch: a dict whose keys are checked when set and when read (``check_key``), with
    typed accessors for what models read. Pickles and copies as a dict does."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for k in self:
            check_key(k)

    def __setitem__(self, key: str, value: Any) -> None:
        check_key(key)
        super().__setitem__(key, value)

    def __getitem__(self, key: str) -> Any:
        check_key(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        check_key(key)
        return super().__contains__(key)

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        check_key(key)
        return super().get(key, default)

    def setdefault(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        check_key(key)
        return super().setdefault(key, default)

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        for k, v in dict(*args, **kwargs).items():
            self[k] = v

    def copy(self) -> Batch:
        return Batch(self)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Batch, (dict(self),))

    # ---- typed reads (None when the batch has no such entry)
    @property
    def task(self) -> list[str] | None:
        return super().get(TASK)

    @property
    def state(self) -> torch.Tensor | None:
        return super().get(STATE)

    @property
    def action(self) -> torch.Tensor | None:
        return super().get(ACTION)

    @property
    def action_is_pad(self) -> torch.Tensor | None:
        return super().get(ACTION_IS_PAD)

    @property
    def cameras(self) -> list[str]:
        """Camera names with frames in this batch, in insertion order."""
        return [
            k[len(IMAGE_PREFIX) :]
            for k in self
            if k.startswith(IMAGE_PREFIX) and not k.endswith(PAD_SUFFIX)
        ]

    def image(self, camera: str) -> torch.Tensor | None:
        return super().get(image_key(camera))

    def image_is_pad(self, camera: str) -> torch.Tensor | None:
        return super().get(image_pad_key(camera))

    def map(self, fn: Any, keys: Iterable[str] | None = None) -> Batch:
        """A new batch with ``fn`` applied to the tensors (of ``keys``, default all)."""
        want = set(self) if keys is None else set(keys)
        return Batch(
            {k: fn(v) if k in want and isinstance(v, torch.Tensor) else v for k, v in self.items()}
        )


def as_batch(batch: Mapping[str, Any]) -> Batch:
    """``batch`` as a ``Batch`` (itself when it is one): the edge where plain dicts come in."""
    if isinstance(batch, Batch):
        return batch
    if not isinstance(batch, Mapping):
        raise DataError(f"a batch must be a dict of LeRobot keys, got a {type(batch).__name__}")
    return Batch(batch)


__all__ = [
    "ACTION",
    "ACTION_IS_PAD",
    "ALIASES",
    "IMAGE_FEATURES",
    "IMAGE_PREFIX",
    "KEYS",
    "STATE",
    "TASK",
    "Batch",
    "BatchKeyError",
    "as_batch",
    "check_key",
    "image_key",
    "image_pad_key",
]
