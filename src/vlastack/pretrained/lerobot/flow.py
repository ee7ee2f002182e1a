"""Flow-matching pieces shared by the openpi-derived policies (pi0, pi0.5; SmolVLA uses the same
two): the sine-cosine time embedding, the forward-Euler sampler from t=1 (noise) to t=0, and
big_vision's attention-mask rule (prefix, then the action suffix) both build their masks with.

Numerics as LeRobot 0.6.1 (``policies/common/vla_utils.py: create_sinusoidal_pos_embedding``,
``policies/common/flow_matching.py: euler_integrate``, both copies of openpi's): the embedding is
computed in float64 (periods ``min_period * (max_period / min_period) ** linspace(0, 1, dim/2)``,
``[sin(2 pi t / p), cos(2 pi t / p)]``) and cast to the time's dtype by the caller; the sampler
uses ``dt = -1 / steps``, ``t = 1 + step * dt`` as a Python float made a float32 tensor, and
``x <- x + dt * v``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


def sinusoidal_time_embedding(
    time: torch.Tensor, dim: int, min_period: float, max_period: float
) -> torch.Tensor:
    """(B,) times -> (B, dim) float64 (float32 on devices without float64, as LeRobot)."""
    if dim % 2:
        raise ValueError(f"time embedding width {dim} must be even")
    dtype = torch.float32 if time.device.type == "mps" else torch.float64
    fraction = torch.linspace(0.0, 1.0, dim // 2, dtype=dtype, device=time.device)
    period = min_period * (max_period / min_period) ** fraction
    scaling = 1.0 / period * 2 * math.pi
    x = scaling[None, :] * time[:, None]
    return torch.cat([torch.sin(x), torch.cos(x)], dim=1)


def euler_sample(
    velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], noise: torch.Tensor, steps: int
) -> torch.Tensor:
    """Integrate ``velocity(x_t, t)`` from ``noise`` at t=1 to t=0 in ``steps`` Euler steps."""
    dt = -1.0 / steps
    x = noise
    for step in range(steps):
        t = torch.tensor(1.0 + step * dt, dtype=torch.float32, device=noise.device)
        x = x + dt * velocity(x, t.expand(noise.shape[0]))
    return x


def sample_time(
    batch: int,
    generator: torch.Generator | None = None,
    alpha: float = 1.5,
    beta: float = 1.0,
    scale: float = 0.999,
    offset: float = 0.001,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Training times ``Beta(alpha, beta) * scale + offset`` (LeRobot's ``sample_time_beta``,
    openpi's convention; LeRobot's config fields ``time_sampling_beta_*``). Drawn through
    ``torch._standard_gamma`` so a ``generator`` can seed it: Beta(a, b) = X / (X + Y) with
    X ~ Gamma(a), Y ~ Gamma(b)."""
    a = torch.full((batch,), alpha, dtype=torch.float32)
    b = torch.full((batch,), beta, dtype=torch.float32)
    if generator is None:
        x, y = torch._standard_gamma(a), torch._standard_gamma(b)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
            x, y = torch._standard_gamma(a), torch._standard_gamma(b)
    return (x / (x + y) * scale + offset).to(device)


def counts(mask: torch.Tensor) -> torch.Tensor:
    """A bool mask as int64 for ``cumsum`` / ``sum`` (what eager promotes it to anyway; ONNX's
    CumSum and ReduceSum take no bool); other dtypes unchanged."""
    return mask.to(torch.int64) if mask.dtype == torch.bool else mask


def pad_positions(pad: torch.Tensor) -> torch.Tensor:
    """(B, N) bool pad mask -> (B, N) int64 positions ``cumsum(pad) - 1`` (LeRobot's)."""
    return torch.cumsum(counts(pad), dim=1) - 1


def attention_2d(pad: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
    """(B, N) bool pad mask and (B, N) block starts -> (B, N, N) bool 'query may see key':
    both real and ``cumsum(blocks)[key] <= cumsum(blocks)[query]`` (LeRobot's
    ``make_att_2d_masks``, big_vision's rule: 0 joins the previous block, 1 starts one that
    earlier tokens cannot see)."""
    cum = torch.cumsum(counts(blocks), dim=1)
    return (cum[:, None, :] <= cum[:, :, None]) & (pad[:, None, :] & pad[:, :, None])


def suffix_attention(
    prefix_pad: torch.Tensor, blocks: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The action suffix's view of a prefilled prefix: (B, S) suffix block starts -> ((B, S,
    P + S) bool mask: every real prefix token, the suffix by ``attention_2d``; (B, S) positions,
    continuing after the prefix's real tokens)."""
    b, s = blocks.shape
    pad = torch.ones(b, s, dtype=torch.bool, device=blocks.device)
    prefix = prefix_pad[:, None, :].expand(b, s, prefix_pad.shape[1])
    full = torch.cat([prefix, attention_2d(pad, blocks)], dim=2)
    positions = counts(prefix_pad).sum(dim=-1)[:, None] + torch.cumsum(counts(pad), dim=1) - 1
    return full, positions
