"""Flow-matching math of π0 (Black et al. 2410.24164) in the openpi convention.

Convention (openpi ``pi0.py``, "opposite of the pi0 paper"): **t = 1 is noise, t = 0 is data**.
x_t = t·ε + (1−t)·A, the target velocity is u = dx_t/dt = ε − A, and sampling integrates
dx/dt = v from t=1 to t=0 with Euler steps dt = −1/num_steps.
Training times are Beta(1.5, 1)·0.999 + 0.001 (weights noisy times; never exactly 0).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch


def sample_time(
    batch_size: int,
    generator: torch.Generator | None = None,
    alpha: float = 1.5,
    scale: float = 0.999,
    offset: float = 0.001,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """t = Beta(alpha, 1)·scale + offset, (B,).

    Beta(α, 1) has CDF x^α, so it is sampled exactly by inverse CDF u^(1/α); unlike
    ``torch.distributions.Beta`` this honours a ``torch.Generator`` (seeded determinism).
    """
    u = torch.rand(batch_size, generator=generator, device=device)
    return u.pow(1.0 / alpha) * scale + offset


def interpolate(actions: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = t·ε + (1−t)·A with ``t`` (B,) broadcast over (B, H, A)."""
    tb = t.reshape(-1, *([1] * (actions.dim() - 1)))
    return tb * noise + (1 - tb) * actions


def target_velocity(actions: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """u = ε − A (constant along the straight path)."""
    return noise - actions


@functools.lru_cache(maxsize=32)
def _angular_freqs(
    dim: int, min_period: float, max_period: float, device: torch.device | None = None
) -> torch.Tensor:
    # cached: rebuilding this float64 linspace was ~10% of a small expert's Euler step on CPU;
    # per device, so a GPU step copies nothing from the host (CUDA-graph capture forbids it)
    if device is not None and device.type != "cpu":
        return _angular_freqs(dim, min_period, max_period).to(device)
    frac = torch.linspace(0.0, 1.0, dim // 2, dtype=torch.float64)
    return 2 * math.pi / (min_period * (max_period / min_period) ** frac)


def sincos_time_embedding(
    t: torch.Tensor, dim: int, min_period: float = 4e-3, max_period: float = 4.0
) -> torch.Tensor:
    """openpi ``posemb_sincos``: (B,) → (B, dim) = [sin(2π t/p_k), cos(2π t/p_k)], k < dim/2.

    Periods are geometric from ``min_period`` to ``max_period`` (π0: 4e-3 and 4.0).
    """
    if dim % 2:
        raise ValueError(f"time embedding dim must be even, got {dim}")
    freqs = _angular_freqs(dim, float(min_period), float(max_period), t.device)
    angle = t.to(torch.float64)[:, None] * freqs[None, :]
    return torch.cat([angle.sin(), angle.cos()], dim=-1).to(torch.float32)


def time_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype of a sampler's times: float32 at least, whatever ``x``'s. A bf16 time is off by
    up to 2^-9 (0.9 -> 0.8984), a large fraction of π0's shortest embedding period (4e-3), which
    scrambles the time embedding; openpi and LeRobot keep the time in float32 too."""
    return torch.promote_types(x.dtype, torch.float32)


def euler_integrate(
    velocity_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x1: torch.Tensor,
    num_steps: int = 10,
) -> torch.Tensor:
    """Integrate dx/dt = v(x, t) from t=1 (x1 = noise) to t=0 with ``num_steps`` Euler steps.

    ``velocity_fn(x, t)`` gets ``t`` as a (B,) tensor (``time_dtype``: at least float32). Steps are at t = 1, 1−1/n, …, 1/n, the same
    grid as openpi's ``while t >= -dt/2`` loop, but counted so float drift cannot add a step.
    """
    dt = -1.0 / num_steps
    x = x1
    B = x1.shape[0]
    tdtype = time_dtype(x1)
    for k in range(num_steps):
        t = torch.full((B,), 1.0 + k * dt, device=x1.device, dtype=tdtype)
        x = x + dt * velocity_fn(x, t)
    return x
