"""Smoothness of action sequences: mean squared jerk and jumps at chunk boundaries.

Jerk is the third time derivative, taken by third-order backward finite differences at step
``dt_s`` seconds: units are (action units)/s³, so mean squared jerk is (action units)²/s⁶. Used to
compare chunking/ensembling/RTC strategies (survey §smoothness; RTC 2506.07339 reports the same).
"""

from __future__ import annotations

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor


def _as_tensor(x: ArrayLike) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x), dtype=torch.float64)


def jerk(actions: ArrayLike, dt_s: float) -> torch.Tensor:
    """Finite-difference jerk along time (dim −2): (…, T, A) → (…, T−3, A), units/s³."""
    a = _as_tensor(actions)
    if a.shape[-2] < 4:
        raise ValueError(f"jerk needs at least 4 time steps, got {a.shape[-2]}")
    d3 = a[..., 3:, :] - 3 * a[..., 2:-1, :] + 3 * a[..., 1:-2, :] - a[..., :-3, :]
    return d3 / dt_s**3


def mean_squared_jerk(actions: ArrayLike, dt_s: float) -> torch.Tensor:
    """Mean over time and action dims of jerk², (…, T, A) → (…), units²/s⁶."""
    return jerk(actions, dt_s).pow(2).mean(dim=(-2, -1))


def chunk_boundary_jumps(actions: ArrayLike, boundaries: list[int] | torch.Tensor) -> torch.Tensor:
    """L2 norm of a[b] − a[b−1] at each boundary index b (first step of a new chunk), (…, K).

    A sequence executed chunk by chunk with ``execute_horizon`` k has boundaries k, 2k, …; a
    large jump there (relative to the typical step, see ``step_sizes``) is the discontinuity that
    temporal ensembling and RTC are meant to remove.
    """
    a = _as_tensor(actions)
    b = torch.as_tensor(boundaries, dtype=torch.long)
    if len(b) and (int(b.min()) < 1 or int(b.max()) >= a.shape[-2]):
        raise ValueError(f"boundary indices must lie in [1, {a.shape[-2] - 1}], got {b.tolist()}")
    return (a[..., b, :] - a[..., b - 1, :]).norm(dim=-1)


def step_sizes(actions: ArrayLike) -> torch.Tensor:
    """L2 norm of every consecutive difference, (…, T, A) → (…, T−1); baseline for jumps."""
    a = _as_tensor(actions)
    return (a[..., 1:, :] - a[..., :-1, :]).norm(dim=-1)
