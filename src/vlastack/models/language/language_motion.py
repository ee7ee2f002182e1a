"""Automatic "language motion" labels for RT-H (Belkhale et al. 2024, arXiv 2403.01823).

RT-H first predicts a short motion phrase ("move arm forward", "close gripper") and then the
action conditioned on it; the phrases are labelled automatically from the robot's own motion. Here
a window's label comes from its dominant action component: a gripper change larger than
``threshold`` wins, otherwise the translation/rotation dimension with the largest mean magnitude,
or "stop" when every component stays under ``threshold``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vlastack.errors import ConfigError

STOP = "stop"
# (positive, negative) phrases for the usual end-effector layout [x, y, z, roll, pitch, yaw, ...].
_DIM_PHRASES = [
    ("move arm forward", "move arm backward"),
    ("move arm left", "move arm right"),
    ("move arm up", "move arm down"),
    ("roll arm left", "roll arm right"),
    ("tilt arm up", "tilt arm down"),
    ("rotate arm left", "rotate arm right"),
]
_GRIPPER = (
    "close gripper",
    "open gripper",
)  # +1 = close, the LIBERO / Open X-Embodiment convention


def _phrases(dim: int, gripper_index: int | None) -> tuple[str, str]:
    if dim == gripper_index:
        return _GRIPPER
    if dim < len(_DIM_PHRASES):
        return _DIM_PHRASES[dim]
    return (f"move joint {dim} up", f"move joint {dim} down")


def _gripper(gripper_index: int | None, action_dim: int) -> int | None:
    if gripper_index is None:
        return None
    g = gripper_index % action_dim
    return g


def motion_vocabulary(action_dim: int, gripper_index: int | None = None) -> list[str]:
    """All phrases ``label_motions`` can return for this action layout; index 0 is "stop"."""
    g = _gripper(gripper_index, action_dim)
    vocab = [STOP]
    for d in range(action_dim):
        vocab.extend(_phrases(d, g))
    return vocab


def label_motions(
    actions: Any,
    threshold: float = 0.2,
    gripper_index: int | None = None,
    action_is_pad: Any = None,
    action_kind: str = "delta",
) -> list[str]:
    """Label each window of ``actions`` (B, H, A) or (H, A) with one motion phrase.

    ``action_kind="delta"``: the component's mean over the window is the motion; ``"absolute"``:
    its displacement from the first to the last valid step. Padded steps (``action_is_pad`` True)
    are ignored. Thresholds are in the units of ``actions`` (normalized units inside a VLA).
    """
    a = np.asarray(
        actions.detach().cpu() if hasattr(actions, "detach") else actions, dtype=np.float64
    )
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise ConfigError(f"label_motions expects actions (B, H, A) or (H, A), got shape {a.shape}")
    B, H, A = a.shape
    if action_kind not in ("delta", "absolute"):
        raise ConfigError(f"action_kind must be 'delta' or 'absolute', got '{action_kind}'")
    valid = np.ones((B, H), bool)
    if action_is_pad is not None:
        pad = np.asarray(
            action_is_pad.detach().cpu() if hasattr(action_is_pad, "detach") else action_is_pad,
            bool,
        )
        valid = ~pad.reshape(B, H)
    g = _gripper(gripper_index, A)
    labels = []
    for b in range(B):
        w = a[b][valid[b]] if valid[b].any() else a[b][:1]
        if g is not None and len(w) > 1:
            change = w[-1, g] - w[0, g]
            if abs(change) > threshold:
                labels.append(_GRIPPER[0] if change > 0 else _GRIPPER[1])
                continue
        motion = w.mean(0) if action_kind == "delta" else w[-1] - w[0]
        if g is not None:
            motion[g] = 0.0
        d = int(np.argmax(np.abs(motion)))
        if abs(motion[d]) <= threshold:
            labels.append(STOP)
        else:
            pos, neg = _phrases(d, g)
            labels.append(pos if motion[d] > 0 else neg)
    return labels
