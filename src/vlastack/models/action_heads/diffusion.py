"""Diffusion Policy head (Chi et al. 2303.04137): DDPM ε-prediction, DDIM or DDPM sampling.

Denoiser (``denoiser``): ``"transformer"`` (default), a small transformer over the H noisy action
tokens that cross-attends to the context and is FiLM-conditioned on [timestep embedding, pooled
context] (DP-T with DP-C's FiLM); or ``"unet"``, DP-C's 1-D temporal U-Net (``unet1d``) FiLM-
conditioned on [timestep embedding (sinusoid → MLP with Mish), pooled projected context]. Schedules
and steps are the pure functions of ``functional.noise_schedules`` / ``functional.diffusion_sampling``
(diffusers-equivalent); defaults are DP's: 100 train steps, squaredcos_cap_v2, clip_sample, and
DDIM with 10 inference steps. Context K/V are projected once per chunk, not once per step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vlastack.errors import ConfigError
from vlastack.functional.diffusion_sampling import q_sample, sample_loop
from vlastack.functional.flow_matching import sincos_time_embedding
from vlastack.functional.noise_schedules import make_alphas_cumprod
from vlastack.models.action_heads.base import ActionHead
from vlastack.models.action_heads.unet1d import ConditionalUnet1d
from vlastack.models.layers.config import config_from
from vlastack.models.layers.decoder import CrossDecoder
from vlastack.models.layers.masking import (
    fill_padded_actions,
    loss_weights,
    masked_mean,
    masked_mean_pool,
)


@dataclass
class DiffusionHeadConfig:
    width: int = 256
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 4.0
    num_train_timesteps: int = 100
    beta_schedule: str = "squaredcos_cap_v2"
    sampler: str = "ddim"
    num_inference_steps: int = 10
    clip_sample: bool = True
    # x̂0 is clipped to ±clip_range in normalized units: 1.0 with min-max normalized actions
    # (Diffusion Policy), 5.0 with mean-std ones (Octo's max_action).
    clip_range: float = 1.0
    denoiser: str = "transformer"  # or "unet" (DP-C); the fields below are the U-Net's
    down_dims: tuple[int, ...] = (64, 128, 256)  # Diffusion Policy's default: (256, 512, 1024)
    kernel_size: int = 5
    n_groups: int = 8
    step_embed_dim: int = 128
    film_scale: bool = True  # FiLM scale and bias (False: bias only)


class DiffusionHead(ActionHead):
    """ε-prediction DDPM over action chunks."""

    cuda_graph_noise = True
    export_kind = "diffusion"
    # bf16 eager vs float32 (tests/test_action_heads_bf16.py): 10 DDIM steps, each dividing by
    # √ᾱ_t (down to ~0.05): the largest drift of the heads, bounded by the x̂0 clip
    bf16_atol = 0.25
    suite_action_normalization = "min_max"  # x̂0 is clipped to [-1, 1] (Diffusion Policy)

    @classmethod
    def suite_kwargs(cls, size: dict[str, object], depth: int) -> dict[str, object]:
        return {**super().suite_kwargs(size, depth), "num_inference_steps": 10}

    def __init__(
        self,
        context_dim: int,
        action_dim: int,
        action_horizon: int,
        width: int = 256,
        depth: int = 4,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        num_train_timesteps: int = 100,
        beta_schedule: str = "squaredcos_cap_v2",
        sampler: str = "ddim",
        num_inference_steps: int = 10,
        clip_sample: bool = True,
        clip_range: float = 1.0,
        denoiser: str = "transformer",
        down_dims: tuple[int, ...] = (64, 128, 256),
        kernel_size: int = 5,
        n_groups: int = 8,
        step_embed_dim: int = 128,
        film_scale: bool = True,
    ) -> None:
        super().__init__(context_dim, action_dim, action_horizon, width)
        if denoiser not in ("transformer", "unet"):
            raise ConfigError(
                f"diffusion head: denoiser must be 'transformer' (DP-T) or 'unet' (DP-C), "
                f"got {denoiser!r}"
            )
        self.denoiser = denoiser
        if sampler not in ("ddim", "ddpm"):
            raise ConfigError(f"diffusion head: sampler must be 'ddim' or 'ddpm', got {sampler!r}")
        if not 1 <= num_inference_steps <= num_train_timesteps:
            raise ConfigError(
                f"diffusion head: num_inference_steps must be in [1, {num_train_timesteps}] "
                f"(num_train_timesteps), got {num_inference_steps}"
            )
        self.num_train_timesteps = num_train_timesteps
        self.sampler = sampler
        self.cuda_graph_blocker = (
            None
            if sampler == "ddim"
            else "DDPM sampling draws fresh noise at every step; use sampler='ddim'"
        )
        self.num_inference_steps = num_inference_steps
        if clip_range <= 0:
            raise ConfigError(f"diffusion head: clip_range must be > 0, got {clip_range}")
        self.clip_sample = clip_sample
        self.clip_range = float(clip_range)
        # what the sampler can output, in normalized units (checked against the data's stats)
        self.output_range = self.clip_range if clip_sample else None
        self.output_range_reason = "diffusion clips its x0 estimate, --model.head_kwargs.clip_range"
        self.beta_schedule = beta_schedule
        self.register_buffer(
            "alphas_cumprod",
            make_alphas_cumprod(beta_schedule, num_train_timesteps),
            persistent=False,
        )
        if denoiser == "unet":
            if step_embed_dim <= 0 or step_embed_dim % 2:
                raise ConfigError(
                    f"diffusion unet: step_embed_dim must be a positive even number, got "
                    f"{step_embed_dim}"
                )
            self.step_embed_dim = step_embed_dim
            d = step_embed_dim
            self.step_encoder = nn.Sequential(nn.Linear(d, 4 * d), nn.Mish(), nn.Linear(4 * d, d))
            self.unet = ConditionalUnet1d(
                action_dim, d + width, down_dims, kernel_size, n_groups, film_scale
            )
            self.unet.check_horizon(action_horizon)
            return
        self.action_in = nn.Linear(action_dim, width)
        self.pos_emb = nn.Parameter(torch.randn(action_horizon, width) * 0.02)
        self.time_mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.cond_mlp = nn.Sequential(nn.SiLU(), nn.Linear(2 * width, width))
        self.decoder = CrossDecoder(width, depth, num_heads, mlp_ratio, cond_dim=width)
        self.action_out = nn.Linear(width, action_dim)

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        """``.to(torch.bfloat16)`` casts every floating buffer, but the noise schedule is
        arithmetic, not a weight: bf16 would round ᾱ_t near 1 to 1.0 (its step below 1 is 2^-8)
        and every ᾱ to 3 digits. It stays float32 (recomputed, exact) on whatever device."""
        super()._apply(fn, recurse)
        abar = self.alphas_cumprod
        if abar.dtype in (torch.bfloat16, torch.float16):
            exact = make_alphas_cumprod(self.beta_schedule, self.num_train_timesteps)
            self.alphas_cumprod = exact.to(abar.device)
        return self

    def _prefix(self, context, context_mask):
        c = self.context_proj(context)
        if self.denoiser == "unet":  # the U-Net sees the context only through FiLM
            return None, masked_mean_pool(c, context_mask)
        return self.decoder.context_kv(c), masked_mean_pool(c, context_mask)

    def predict_noise(self, x_t, t, kvs, pooled, context_mask) -> torch.Tensor:
        """ε̂(x_t, t | context); ``t`` (B,) integer timesteps."""
        if self.denoiser == "unet":
            return self.unet(x_t, torch.cat([self._step_embedding(t, x_t.dtype), pooled], -1))
        temb = self.time_mlp(
            sincos_time_embedding(t.float(), self.width, 1.0, 10000.0).to(x_t.dtype)
        )
        cond = self.cond_mlp(torch.cat([temb, pooled], -1))
        h = self.decoder(self.action_in(x_t) + self.pos_emb, kvs, context_mask, cond=cond)
        return self.action_out(h)

    def _step_embedding(self, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """DP-C's diffusion-step encoder: sinusoid → Linear → Mish → Linear, (B,) → (B, d)."""
        e = sincos_time_embedding(t.float(), self.step_embed_dim, 1.0, 10000.0).to(dtype)
        return self.step_encoder(e)

    def loss(self, context, context_mask, actions, action_is_pad, action_dim_mask=None):
        self._check(context, context_mask, actions)
        B = actions.shape[0]
        x0 = fill_padded_actions(actions, action_is_pad)
        t = torch.randint(0, self.num_train_timesteps, (B,), device=actions.device)
        noise = torch.randn_like(x0)
        x_t = q_sample(x0, noise, t, self.alphas_cumprod)
        kvs, pooled = self._prefix(context, context_mask)
        err = F.mse_loss(
            self.predict_noise(x_t, t, kvs, pooled, context_mask), noise, reduction="none"
        )
        return masked_mean(err, loss_weights(action_is_pad, action_dim_mask, self.action_dim))

    @torch.no_grad()
    def sample_actions(
        self, context, context_mask, generator=None, num_inference_steps=None, noise=None
    ):
        """DDIM/DDPM from x_T = ``noise`` (B, H, A) if given, else drawn from ``generator``."""
        self._check(context, context_mask)
        B = context.shape[0]
        kvs, pooled = self._prefix(context, context_mask)
        x_T = noise if noise is not None else self.initial_noise(context, generator)

        def eps_fn(x: torch.Tensor, t: int) -> torch.Tensor:
            tt = torch.full((B,), t, device=x.device, dtype=torch.long)
            return self.predict_noise(x, tt, kvs, pooled, context_mask)

        return sample_loop(
            eps_fn,
            x_T,
            self.alphas_cumprod,
            num_inference_steps or self.num_inference_steps,
            self.sampler,
            self.clip_sample,
            generator,
            self.clip_range,
        )


def build(cfg=None, *, context_dim: int, action_dim: int, action_horizon: int) -> DiffusionHead:
    c = config_from(DiffusionHeadConfig, cfg)
    return DiffusionHead(context_dim, action_dim, action_horizon, **vars(c))
