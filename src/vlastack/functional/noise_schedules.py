"""DDPM noise schedules as pure functions (Ho et al. 2006.11239; Nichol & Dhariwal 2102.09672).

Conventions follow ``diffusers`` so that a checkpoint trained here samples the same with its
schedulers: index ``t`` runs 0..T-1, ``betas[t]`` is the noise added at step t, and
``alphas_cumprod[t] = prod_{s<=t} (1 - betas[s])`` (ᾱ_t). Diffusion Policy uses T=100 with
``squaredcos_cap_v2``; Octo uses the iDDPM ``cosine`` schedule (same closed form, s=0.008).
"""

from __future__ import annotations

import math

import torch

from vlastack.errors import ConfigError

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "cosine")


def cosine_alpha_bar(t_frac: torch.Tensor, s: float = 0.008) -> torch.Tensor:
    """iDDPM ᾱ(τ) = cos²(((τ + s)/(1 + s))·π/2) / cos²((s/(1+s))·π/2) for τ = t/T in [0, 1]."""
    f = torch.cos((t_frac + s) / (1 + s) * math.pi / 2) ** 2
    f0 = math.cos(s / (1 + s) * math.pi / 2) ** 2
    return f / f0


def make_betas(
    schedule: str,
    num_train_timesteps: int,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
    max_beta: float = 0.999,
) -> torch.Tensor:
    """β_0..β_{T-1} as float32 (T,).

    ``squaredcos_cap_v2`` (diffusers) and ``cosine`` (iDDPM/Octo) are both
    β_t = min(1 − ᾱ((t+1)/T)/ᾱ(t/T), max_beta); diffusers computes it in float64 scalars, we do
    the same so the two agree to float32 rounding. ``beta_start``/``beta_end`` only affect the
    linear schedules.
    """
    if num_train_timesteps < 1:
        raise ConfigError(f"num_train_timesteps must be >= 1, got {num_train_timesteps}")
    T = num_train_timesteps
    if schedule == "linear":
        return torch.linspace(beta_start, beta_end, T, dtype=torch.float32)
    if schedule == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float32) ** 2
    if schedule in ("squaredcos_cap_v2", "cosine"):
        steps = torch.arange(T + 1, dtype=torch.float64) / T
        abar = cosine_alpha_bar(steps)
        betas = (1 - abar[1:] / abar[:-1]).clamp(max=max_beta)
        return betas.to(torch.float32)
    raise ConfigError(
        f"unknown beta_schedule '{schedule}'. Known: {', '.join(BETA_SCHEDULES)}. "
        "Fix the diffusion head config field 'beta_schedule'."
    )


def alphas_cumprod_from_betas(betas: torch.Tensor) -> torch.Tensor:
    """ᾱ_t = Π_{s≤t}(1 − β_s), (T,)."""
    return torch.cumprod(1.0 - betas, dim=0)


def make_alphas_cumprod(schedule: str, num_train_timesteps: int, **kw: float) -> torch.Tensor:
    """Shortcut: ᾱ for a named schedule, float32 (T,)."""
    return alphas_cumprod_from_betas(make_betas(schedule, num_train_timesteps, **kw))
