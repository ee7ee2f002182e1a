"""Real-time chunking math (Black, Galliker & Levine 2506.07339; REFERENCE.md §3.6).

Guided flow sampling that keeps a new action chunk consistent with the actions committed while
it is computed: the soft prefix mask W over the chunk's steps, the guidance weight schedule, and
the ΠGDM-guided Euler sampler. Openpi convention (t = 1 noise, t = 0 data; see
``functional.flow_matching``). Used by the flow-matching head (``sample_actions_guided``) and the
serving runtime's toy (``serving.runtime.guided_flow_sample``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from vlastack.errors import ConfigError
from vlastack.functional.flow_matching import time_dtype


def prefix_weights(
    inference_delay: int, prefix_horizon: int, action_horizon: int, schedule: str = "exp"
) -> np.ndarray:
    """RTC soft mask W over the H positions (§3.6): 1 for i < d (frozen: executes during inference),
    decaying (linear, or exp: w·(e^w−1)/(e−1)) until ``prefix_horizon`` (= H − s, the end of the
    previous chunk), 0 after. ``schedule`` ∈ {"exp", "linear", "ones", "zeros"}; returns (H,)."""
    end = max(0, min(prefix_horizon, action_horizon))
    start = max(0, min(inference_delay, end))
    i = np.arange(action_horizon, dtype=np.float64)
    if schedule == "ones":
        w = np.ones(action_horizon)
    elif schedule == "zeros":
        w = (i < start).astype(np.float64)
    elif schedule in ("linear", "exp"):
        # 1 up to start-1, then linearly down to 1/(end-start+1) at end-1.
        w = np.clip((start - 1 - i) / (end - start + 1) + 1, 0.0, 1.0)
        if schedule == "exp":
            w = np.minimum(w * np.expm1(w) / (math.e - 1), 1.0)  # exact 1 on the frozen prefix
    else:
        raise ConfigError(f"unknown RTC schedule {schedule!r}; choose exp, linear, ones or zeros")
    return np.where(i >= end, 0.0, w)


def guidance_weight(t: float, max_guidance_weight: float) -> float:
    """min(c · 1/r², β) of RTC, written in the kinetix time τ = 1 − t (τ=0 noise, τ=1 data)."""
    tau = 1.0 - t
    if tau <= 0.0 or tau >= 1.0:
        return max_guidance_weight
    inv_r2 = (tau**2 + (1 - tau) ** 2) / (1 - tau) ** 2
    c = (1 - tau) / tau
    return min(c * inv_r2, max_guidance_weight)


def guided_euler_sample(
    velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    noise: torch.Tensor,
    target: torch.Tensor,
    weights: torch.Tensor,
    num_steps: int,
    max_guidance_weight: float = 5.0,
) -> torch.Tensor:
    """Euler flow sampling from t=1 (``noise`` (B, H, A)) to t=0 with RTC's ΠGDM guidance.

    ``velocity(x_t, t (B,)) -> v`` is one network evaluation (differentiable in ``x_t``);
    ``target`` (B, H, A) the committed actions Y (normalized like the model's actions, any value
    where the weight is 0); ``weights`` broadcastable to it, e.g. (1, H, 1) from
    ``prefix_weights``. With ``max_guidance_weight=0`` this is plain Euler sampling.

    Convention: kinetix writes Â = x + (1−τ)·v_k with v_k pointing to data; with t = 1 − τ and the
    openpi velocity v = −v_k this is Â = x − t·v, and the guided kinetix velocity v_k + w·g becomes
    v − w·g, where g = (∂Â/∂x)ᵀ[(Y − Â)·W] is one vector-Jacobian product through the network.
    Every step evaluates the network with autograd on (also unguided ones, which skip the VJP), so
    a network whose inference shortcuts switch on without autograd runs one path throughout.
    """
    x = noise
    B = x.shape[0]
    dt = -1.0 / num_steps
    for k in range(num_steps):
        t = 1.0 + k * dt
        t_vec = torch.full((B,), t, dtype=time_dtype(x), device=x.device)
        gw = guidance_weight(t, max_guidance_weight)
        with torch.enable_grad():
            if gw == 0.0:
                v = velocity(x.detach(), t_vec).detach()
            else:
                x_in = x.detach().requires_grad_(True)
                v = velocity(x_in, t_vec)
                a_hat = x_in - t * v  # one-step estimate of the clean chunk
                err = (target - a_hat) * weights
                (g,) = torch.autograd.grad(a_hat, x_in, grad_outputs=err.detach())
                v = v.detach() - gw * g
        x = (x + dt * v).detach()
    return x


__all__ = ["guidance_weight", "guided_euler_sample", "prefix_weights"]
