"""Flow-matching pieces shared by LeRobot's openpi-derived VLAs (SmolVLA; pi0/pi0.5 use the same
conventions): the sinusoidal time embedding, the prefix/causal attention-mask rule and the
Euler sampler. Pure functions, no parameters.

Facts from LeRobot 0.6.1 ``policies/common/vla_utils.py`` and ``policies/common/flow_matching.py``
(both say they copy openpi):

* ``sinusoidal_time_embedding(t, dim, min_period, max_period)``: ``fraction = linspace(0, 1,
  dim // 2)`` and ``period = min_period * (max_period / min_period) ** fraction`` in float64 (on
  CPU/CUDA; LeRobot falls back to float32 on MPS only), ``x = 2 pi / period * t``, output
  ``cat(sin x, cos x)``; the caller casts it to its dtype.
* ``attention_2d(pad, ar)``: token ``q`` may attend token ``k`` when both are real (``pad``) and
  ``cumsum(ar)[k] <= cumsum(ar)[q]`` (big_vision's ``make_attn_mask``): ``ar = 0`` joins the
  previous block, ``ar = 1`` starts a new one that earlier tokens cannot see.
* ``euler_sample(velocity, noise, steps)``: ``dt = -1 / steps``; for ``k = 0..steps-1`` the time
  is the Python float ``1 + k * dt`` (a float32 tensor of shape (B,)) and ``x <- x + dt * v(x, t)``;
  starts from the noise at t = 1, ends at t = 0 (the actions).

Verified through the SmolVLA golden tests (tests/test_pretrained_lerobot_smolvla.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


def sinusoidal_time_embedding(
    time: torch.Tensor, dim: int, min_period: float, max_period: float
) -> torch.Tensor:
    """(B,) times -> (B, dim) float64 (float32 on MPS) sine/cosine embedding."""
    if dim % 2:
        raise ValueError(f"time embedding width {dim} must be even")
    if time.ndim != 1:
        raise ValueError(f"time must have shape (batch,), got {tuple(time.shape)}")
    dtype = torch.float32 if time.device.type == "mps" else torch.float64
    fraction = torch.linspace(0.0, 1.0, dim // 2, dtype=dtype, device=time.device)
    period = min_period * (max_period / min_period) ** fraction
    scale = 1.0 / period * 2 * math.pi
    x = scale[None, :] * time[:, None]
    return torch.cat([torch.sin(x), torch.cos(x)], dim=1)


def attention_2d(pad: torch.Tensor, ar: torch.Tensor) -> torch.Tensor:
    """(B, N) bool pad mask and (B, N) block starts -> (B, N, N) bool 'query may see key'."""
    cumsum = torch.cumsum(ar, dim=1)
    blocks = cumsum[:, None, :] <= cumsum[:, :, None]
    return blocks & (pad[:, None, :] * pad[:, :, None])


def euler_sample(
    velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    noise: torch.Tensor,
    steps: int,
) -> torch.Tensor:
    """Integrate ``dx/dt = velocity(x, t)`` from t = 1 (``noise``) to t = 0 in ``steps`` steps."""
    dt = -1.0 / steps
    x = noise
    for k in range(steps):
        t = torch.tensor(1.0 + k * dt, dtype=torch.float32, device=noise.device)
        x = x + dt * velocity(x, t.expand(noise.shape[0]))
    return x
