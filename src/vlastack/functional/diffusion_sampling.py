"""DDPM forward noising and DDPM / DDIM reverse steps for ε-prediction, as pure functions.

Numerically the same as diffusers' ``DDPMScheduler`` (variance ``fixed_small``) and
``DDIMScheduler`` (``timestep_spacing="leading"``, ``set_alpha_to_one=True``, η=0), which Diffusion
Policy (Chi et al. 2303.04137) uses; written as functions so the sampler loop is one readable
``for`` and needs no scheduler object state. Timesteps are integer indices into ``alphas_cumprod``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from vlastack.functional.noise import randn


def _bcast(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a (B,) or scalar tensor to broadcast against ``like`` (B, ...)."""
    return x.reshape(x.shape + (1,) * (like.dim() - x.dim()))


def q_sample(
    x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, alphas_cumprod: torch.Tensor
) -> torch.Tensor:
    """x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε for integer timesteps ``t`` (B,)."""
    abar = _bcast(alphas_cumprod.to(x0.device)[t], x0)
    return abar.sqrt() * x0 + (1 - abar).sqrt() * noise


def inference_timesteps(num_train_timesteps: int, num_inference_steps: int) -> list[int]:
    """diffusers "leading" spacing: step k·(T // n) for k = n−1..0 (T=100, n=10 → 90, 80, …, 0)."""
    ratio = num_train_timesteps // num_inference_steps
    return [k * ratio for k in range(num_inference_steps - 1, -1, -1)]


def _alpha_prev(alphas_cumprod: torch.Tensor, t_prev: int) -> torch.Tensor:
    # set_alpha_to_one=True: the step past t=0 lands on clean data (ᾱ=1).
    # ones_like, not new_tensor(1.0): no host-to-device copy (CUDA-graph capture forbids one)
    return alphas_cumprod[t_prev] if t_prev >= 0 else torch.ones_like(alphas_cumprod[0])


def predict_x0(
    x_t: torch.Tensor, eps: torch.Tensor, t: int, alphas_cumprod: torch.Tensor
) -> torch.Tensor:
    """x̂0 = (x_t − √(1−ᾱ_t)·ε̂) / √ᾱ_t."""
    abar = alphas_cumprod[t]
    return (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()


def ddim_step(
    x_t: torch.Tensor,
    eps: torch.Tensor,
    t: int,
    t_prev: int,
    alphas_cumprod: torch.Tensor,
    clip_sample: bool = False,
    clip_range: float = 1.0,
) -> torch.Tensor:
    """Deterministic DDIM (η=0) step t → t_prev: √ᾱ_prev·x̂0 + √(1−ᾱ_prev)·ε̂.

    As in diffusers, clipping applies to x̂0 only (to ±``clip_range``, diffusers'
    ``clip_sample_range``); ε̂ is kept (``use_clipped_model_output=False``).
    """
    x0 = predict_x0(x_t, eps, t, alphas_cumprod)
    if clip_sample:
        x0 = x0.clamp(-clip_range, clip_range)
    abar_prev = _alpha_prev(alphas_cumprod, t_prev)
    return abar_prev.sqrt() * x0 + (1 - abar_prev).sqrt() * eps


def ddpm_step(
    x_t: torch.Tensor,
    eps: torch.Tensor,
    t: int,
    t_prev: int,
    alphas_cumprod: torch.Tensor,
    clip_sample: bool = True,
    generator: torch.Generator | None = None,
    clip_range: float = 1.0,
) -> torch.Tensor:
    """Ancestral DDPM step t → t_prev: posterior mean of q(x_prev | x_t, x̂0) + σ·z (fixed_small).

    With t_prev = t − 1 this is the textbook step; a larger stride is diffusers' strided DDPM.
    Noise ``z ~ N(0, I)`` is drawn from ``generator`` (none at t = 0).
    """
    abar_t = alphas_cumprod[t]
    abar_prev = _alpha_prev(alphas_cumprod, t_prev)
    alpha_t = abar_t / abar_prev
    beta_t = 1 - alpha_t
    x0 = predict_x0(x_t, eps, t, alphas_cumprod)
    if clip_sample:
        x0 = x0.clamp(-clip_range, clip_range)
    mean = (abar_prev.sqrt() * beta_t / (1 - abar_t)) * x0 + (
        alpha_t.sqrt() * (1 - abar_prev) / (1 - abar_t)
    ) * x_t
    if t > 0:
        var = ((1 - abar_prev) / (1 - abar_t) * beta_t).clamp(min=1e-20)
        z = randn(x_t.shape, generator, x_t.device, x_t.dtype)
        mean = mean + var.sqrt() * z
    return mean


def sample_loop(
    eps_fn: Callable[[torch.Tensor, int], torch.Tensor],
    x_T: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    num_inference_steps: int,
    sampler: str = "ddim",
    clip_sample: bool = True,
    generator: torch.Generator | None = None,
    clip_range: float = 1.0,
) -> torch.Tensor:
    """Run the reverse chain from x_T with ``eps_fn(x_t, t) -> ε̂`` and return x̂_0.

    ``sampler`` is ``"ddim"`` (deterministic) or ``"ddpm"`` (ancestral); both visit
    ``inference_timesteps(T, num_inference_steps)``.
    """
    alphas_cumprod = alphas_cumprod.to(x_T.device)
    T = alphas_cumprod.shape[0]
    ts = inference_timesteps(T, num_inference_steps)
    ratio = T // num_inference_steps
    x = x_T
    for t in ts:
        eps = eps_fn(x, t)
        if sampler == "ddim":
            x = ddim_step(x, eps, t, t - ratio, alphas_cumprod, clip_sample, clip_range)
        elif sampler == "ddpm":
            x = ddpm_step(x, eps, t, t - ratio, alphas_cumprod, clip_sample, generator, clip_range)
        else:
            raise ValueError(f"sampler must be 'ddim' or 'ddpm', got {sampler!r}")
    return x
