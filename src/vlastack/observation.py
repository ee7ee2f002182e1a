"""What a robot sends a policy, resolved once: ``parse_observation`` turns a client's dict (any of
the key spellings real clients use) into a typed ``Observation``, and ``observation_batch`` turns
windows of them into the model's ``Batch`` (``vlastack.batch``: LeRobot keys, one spelling each).

Spellings accepted for camera ``<cam>``: ``observation.images.<cam>`` (LeRobot),
``observation/<cam>`` (openpi flat), ``images/<cam>`` or ``{"images": {<cam>: ...}}`` (openpi
nested), ``<cam>``; state: ``observation.state``, ``observation/state``, ``state``; instruction:
``task``, ``prompt`` (str, bytes or a one-element numpy array). Images are uint8 or float in
[0, 1], HWC or CHW. Nothing after ``parse_observation`` sees another spelling.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vlastack.batch import STATE as STATE_KEY
from vlastack.batch import TASK as TASK_KEY
from vlastack.batch import Batch, image_key, image_pad_key
from vlastack.errors import VlastackError

DEFAULT_MAX_PROMPT_CHARS = 1000  # instructions are a sentence; a 100 KB prompt is an attack


class ObservationError(VlastackError):
    """An observation sent to a policy is missing a key or has the wrong shape or dtype."""


@dataclass(frozen=True)
class Observation:
    """One observation in one spelling: ``images`` camera name -> float32 (3, H, W) in [0, 1] at
    the model's image size; ``state`` float32 (S,) (None when the policy reads no state);
    ``task`` the instruction."""

    images: dict[str, torch.Tensor]
    state: torch.Tensor | None
    task: str


def _keys(obs: Mapping[Any, Any]) -> list[str]:
    """The keys a client sent, for messages (str and bytes keys may be mixed)."""
    return sorted(repr(k) if isinstance(k, bytes) else str(k) for k in obs)[:16]


def camera_spellings(camera: str) -> list[str]:
    """The keys a client may send camera ``camera``'s frame under, most specific first: LeRobot's
    ``observation.images.<cam>``, openpi's flat ``observation/<cam>``, the nested ``images/<cam>``
    (``{"images": {cam: ...}}``) and the bare camera name."""
    return [image_key(camera), f"observation/{camera}", f"images/{camera}", camera]


def find_key(obs: Mapping[str, Any], candidates: list[str]) -> Any:
    """The value of the first of ``candidates`` present in ``obs`` (``a/b`` also looks inside a
    nested dict ``obs["a"]["b"]``); None when none is."""
    for key in candidates:
        if key in obs:
            return obs[key]
        if "/" in key:  # nested dict style, e.g. images/cam_high
            top, sub = key.split("/", 1)
            inner = obs.get(top)
            if isinstance(inner, Mapping) and sub in inner:
                return inner[sub]
    return None


def require_finite(arr: np.ndarray, name: str) -> None:
    """Raise ``ObservationError`` naming ``name`` when a float array holds a NaN or an Inf: a
    non-finite input would otherwise come back as a chunk of NaN actions."""
    if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
        bad = int(arr.size - np.isfinite(arr).sum())
        what = "NaN" if np.isnan(arr).any() else "Inf"
        raise ObservationError(
            f"observation {name!r} holds {bad} non-finite value(s) ({what}); send finite numbers "
            "(a NaN or Inf would make every action NaN)"
        )


def image_to_chw_float(img: Any, name: str, size: tuple[int, int]) -> torch.Tensor:
    """uint8 HWC or CHW (or float in [0, 1]) -> float32 (C, H, W) in [0, 1] resized to ``size``."""
    if not isinstance(img, (np.ndarray, list, tuple, torch.Tensor)):
        raise ObservationError(
            f"observation {name!r}: expected an image array (uint8 (H, W, 3) or (3, H, W)), "
            f"got a {type(img).__name__}"
        )
    arr = np.asarray(img)
    if arr.ndim != 3:
        raise ObservationError(
            f"observation {name!r}: expected an image of shape (H, W, 3) or (3, H, W), "
            f"got shape {arr.shape}"
        )
    if 0 in arr.shape:
        raise ObservationError(
            f"observation {name!r}: the image is empty (shape {arr.shape}); send a frame of at "
            "least 1x1 pixels"
        )
    if arr.shape[-1] in (1, 3) and arr.shape[0] not in (1, 3):
        arr = np.moveaxis(arr, -1, 0)
    elif arr.shape[0] not in (1, 3):
        raise ObservationError(
            f"observation {name!r}: expected 3 colour channels first or last, got shape {arr.shape}"
        )
    # torch.tensor copies: a frame the server unpacked is a read-only view of the request's
    # bytes, and the tensor must neither alias nor warn about it
    if arr.dtype == np.uint8:
        t = torch.tensor(arr, dtype=torch.float32).div_(255.0)
    elif np.issubdtype(arr.dtype, np.floating):
        require_finite(arr, name)
        t = torch.tensor(arr, dtype=torch.float32)
    else:
        raise ObservationError(
            f"observation {name!r}: expected uint8 (0-255) or float (0-1) pixels, got {arr.dtype}"
        )
    if t.shape[0] == 1:
        t = t.expand(3, -1, -1)
    if tuple(t.shape[-2:]) != tuple(size):
        t = F.interpolate(t[None], size=size, mode="bilinear", align_corners=False, antialias=True)[
            0
        ]
    return t


def parse_observation(
    obs: Mapping[str, Any],
    *,
    cameras: Sequence[str],
    state_dim: int,
    image_size: tuple[int, int],
    default_prompt: str = "",
    max_prompt_chars: int | None = DEFAULT_MAX_PROMPT_CHARS,
) -> Observation:
    """A client's observation dict -> ``Observation`` for a robot with these ``cameras`` and
    ``state_dim`` (0 = no state read). Raises ``ObservationError`` naming the missing key, a
    non-finite value, or a prompt longer than ``max_prompt_chars`` (None: no cap)."""
    if not isinstance(obs, Mapping):
        raise ObservationError(f"observation must be a dict, got {type(obs).__name__}")
    images: dict[str, torch.Tensor] = {}
    for cam in cameras:
        img = find_key(obs, camera_spellings(cam))
        if img is None:
            raise ObservationError(
                f"observation is missing camera {cam!r}: send it as "
                f"'{image_key(cam)}' (uint8 HWC); got keys {_keys(obs)}"
            )
        images[cam] = image_to_chw_float(img, cam, image_size)
    state = None
    if state_dim:
        st = find_key(obs, [STATE_KEY, "observation/state", "state"])
        if st is None:
            raise ObservationError(
                f"observation is missing '{STATE_KEY}' (float, {state_dim} values); "
                f"got keys {_keys(obs)}"
            )
        try:
            if isinstance(st, (str, bytes, Mapping)):
                raise TypeError
            arr = np.asarray(st, dtype=np.float32).reshape(-1)
        except (TypeError, ValueError):
            raise ObservationError(
                f"observation '{STATE_KEY}' must be an array of {state_dim} numbers, "
                f"got a {type(st).__name__}"
            ) from None
        require_finite(arr, STATE_KEY)
        if arr.shape[0] != state_dim:
            raise ObservationError(
                f"observation '{STATE_KEY}' has {arr.shape[0]} values, expected {state_dim}"
            )
        state = torch.from_numpy(arr.copy())
    prompt = find_key(obs, [TASK_KEY, "prompt"])
    if isinstance(prompt, bytes):
        prompt = prompt.decode(errors="replace")
    if isinstance(prompt, np.ndarray):
        prompt = str(prompt.item() if prompt.size == 1 else prompt)
    if prompt is None:
        prompt = default_prompt
    if not isinstance(prompt, str):
        raise ObservationError(
            f"observation '{TASK_KEY}' (the instruction) must be a string, got a "
            f"{type(prompt).__name__}"
        )
    if max_prompt_chars is not None and len(prompt) > max_prompt_chars:
        raise ObservationError(
            f"observation '{TASK_KEY}' (the instruction) is {len(prompt)} characters; at most "
            f"{max_prompt_chars} are accepted (raise max_prompt_chars, `vlastack serve "
            "--max-prompt-chars N`, for longer instructions)"
        )
    return Observation(images=images, state=state, task=prompt)


def observation_batch(
    windows: Sequence[Sequence[Observation]],
    *,
    image_size: tuple[int, int],
    model_state_dim: int = 0,
    pad_cameras: Sequence[str] = (),
    device: str | torch.device = "cpu",
) -> Batch:
    """B windows of T observations (oldest first) -> the model's ``Batch`` (``vlastack.batch``): ``observation.images.<cam>``
    (B, T, 3, H, W), ``observation.state`` (B, T, S), ``task`` list[str] (the newest frame's).

    A model trained on a mixture reads more than one robot sends: the state is zero-padded to
    ``model_state_dim`` and each of ``pad_cameras`` is a zero image flagged
    ``observation.images.<cam>_is_pad`` (B, T), as in training (data/mixture.py)."""
    first = windows[0][0]
    batch = Batch()

    def stack(get: Any) -> torch.Tensor:
        return torch.stack([torch.stack([get(o) for o in w]) for w in windows]).to(device)

    for cam in first.images:
        batch[image_key(cam)] = stack(lambda o, c=cam: o.images[c])
    S = first.state.shape[0] if first.state is not None else 0
    if S or model_state_dim:
        width = max(S, int(model_state_dim))

        def state(o: Observation) -> torch.Tensor:
            if o.state is not None and o.state.shape[0] == width:
                return o.state
            padded = torch.zeros(width)
            if o.state is not None:
                padded[: o.state.shape[0]] = o.state
            return padded

        batch[STATE_KEY] = stack(state)
    if pad_cameras:
        B, T = len(windows), len(windows[0])
        for cam in pad_cameras:
            batch[image_key(cam)] = torch.zeros(B, T, 3, *image_size, device=device)
            batch[image_pad_key(cam)] = torch.ones(B, T, dtype=torch.bool, device=device)
    batch[TASK_KEY] = [w[-1].task for w in windows]
    return batch


__all__ = [
    "DEFAULT_MAX_PROMPT_CHARS",
    "STATE_KEY",
    "TASK_KEY",
    "Observation",
    "ObservationError",
    "image_key",
    "image_to_chw_float",
    "observation_batch",
    "parse_observation",
    "require_finite",
]
