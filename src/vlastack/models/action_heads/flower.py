"""FLOWER's flow transformer (Reuss et al. 2025, arXiv 2509.04996): rectified flow with global AdaLN.

What differs from π0's expert (``flow_matching.py``) and is therefore written here:

- **Global AdaLN**: one conditioning vector c (the flow time's embedding) goes through ONE shared
  controller, SiLU → Linear → (shift, scale, gate) for the self-attention norm and for the MLP norm,
  and those signals modulate every block's RMSNorms: x·(1 + scale) + shift, the residual branch
  gated by ``gate`` (DiT's adaLN, shared across layers: FLOWER's "Global-AdaLN", about 20 % fewer
  parameters than one modulation network per block). ``lora_dim > 0`` adds FLOWER's per-block
  low-rank modulation (SiLU → Linear(W, r) → Linear(r, 6W)) on top of the shared signals.
- **Cross-attention** to the VLM tokens (RMSNorm + Linear, FLOWER's ``cond_norm``/``cond_linear``),
  un-modulated, its K/V projected once per chunk and reused by every Euler step (π0's prefix cache
  idea; ``FlowPrefixCache`` holds them and the (B, 1, 1, N) key mask).
- **Causal self-attention** over the H action tokens (FLOWER's ``is_causal=True``).
- **Few steps**: 4 Euler steps by default; training times uniform (rectified flow; FLOWER's
  ``sampling_type: uniform``) and the chunk clipped to ``clip_range`` (FLOWER clamps to [-1, 1]).

What is the same is reused, one form each: the interpolation, target velocity and Euler loop
(``functional.flow_matching``, openpi convention t=1 noise, t=0 data, which FLOWER's
``rf_loss``/``sample_actions`` also use), the sin-cos time embedding, ``RMSNorm``, ``Attention``
and ``MLP``, and the loss / sampler / RTC guidance of ``FlowHead``.

Scaled-down differences, said plainly: a GELU MLP instead of SwiGLU, learned positions instead of
RoPE, no per-action-space encoders (one action space per checkpoint), no dropout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vlastack.errors import ConfigError
from vlastack.functional.flow_matching import sincos_time_embedding
from vlastack.models.action_heads.flow_matching import FlowHead, FlowPrefixCache, RMSNorm
from vlastack.models.layers.attention import KV, Attention
from vlastack.models.layers.config import config_from
from vlastack.models.layers.mlp import MLP

TIME_SAMPLING = {"uniform": 1.0, "beta": 1.5}  # Beta(α, 1): rectified flow's uniform, π0's


@dataclass
class FlowerHeadConfig:
    width: int = 256
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 4.0
    num_steps: int = 4  # FLOWER: 4 denoising steps on CALVIN and LIBERO
    lora_dim: int = 0  # > 0: per-block low-rank AdaLN on top of the global one (FLOWER: 256)
    causal: bool = True  # action tokens attend causally (FLOWER's DiT)
    time_sampling: str = "uniform"  # "uniform" (rectified flow, FLOWER) | "beta" (π0)
    clip_range: float | None = 1.0  # the chunk is clamped to ±clip_range; None: unbounded


class GlobalAdaLN(nn.Module):
    """The shared controller: c (B, C) → six (B, 1, W) signals, (shift, scale, gate) for the
    attention norm and the MLP norm, used by every block."""

    def __init__(self, cond_dim: int, width: int) -> None:
        super().__init__()
        self.proj = nn.Linear(cond_dim, 6 * width)
        # FLOWER zero-initialises it (adaLN-Zero); a small normal init keeps a gradient reaching
        # every block from the first step, as the π0.5 adaRMS projection here does
        nn.init.normal_(self.proj.weight, std=0.02)
        nn.init.zeros_(self.proj.bias)

    def forward(self, cond: torch.Tensor) -> list[torch.Tensor]:
        return list(self.proj(F.silu(cond)).unsqueeze(1).chunk(6, -1))


class FlowerBlock(nn.Module):
    """Modulated causal self-attention → cross-attention to the VLM tokens → modulated MLP."""

    def __init__(self, width: int, num_heads: int, mlp_ratio: float, lora_dim: int) -> None:
        super().__init__()
        self.norm1 = RMSNorm(width)
        self.self_attn = Attention(width, num_heads)
        self.cross_norm = RMSNorm(width)
        self.cross_attn = Attention(width, num_heads)
        self.norm2 = RMSNorm(width)
        self.mlp = MLP(width, int(width * mlp_ratio))
        self.lora = (
            nn.Sequential(nn.SiLU(), nn.Linear(width, lora_dim), nn.Linear(lora_dim, 6 * width))
            if lora_dim > 0
            else None
        )

    def forward(
        self,
        x: torch.Tensor,
        cross_kv: KV,
        cross_mask: torch.Tensor | None,
        self_mask: torch.Tensor | None,
        mods: list[torch.Tensor],
        cond: torch.Tensor,
    ) -> torch.Tensor:
        if self.lora is not None:
            local = self.lora(cond).unsqueeze(1).chunk(6, -1)
            mods = [m + d for m, d in zip(mods, local)]
        shift1, scale1, gate1, shift2, scale2, gate2 = mods
        h = self.norm1(x)[0] * (1 + scale1) + shift1
        x = x + gate1 * self.self_attn(h, self.self_attn.project_kv(h), self_mask)
        x = x + self.cross_attn(self.cross_norm(x)[0], cross_kv, cross_mask)
        h = self.norm2(x)[0] * (1 + scale2) + shift2
        return x + gate2 * self.mlp(h)


class FlowerHead(FlowHead):
    """FLOWER's flow transformer over the H action tokens, cross-attending to the context."""

    suite_action_normalization = "min_max"  # the chunk is clipped to [-1, 1]

    @classmethod
    def suite_kwargs(cls, size: dict[str, object], depth: int) -> dict[str, object]:
        return {**super().suite_kwargs(size, depth), "num_steps": 4}

    def __init__(
        self,
        context_dim: int,
        action_dim: int,
        action_horizon: int,
        width: int = 256,
        depth: int = 4,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        num_steps: int = 4,
        lora_dim: int = 0,
        causal: bool = True,
        time_sampling: str = "uniform",
        clip_range: float | None = 1.0,
    ) -> None:
        super().__init__(context_dim, action_dim, action_horizon, width)
        if num_steps < 1:
            raise ConfigError(f"flower head: num_steps must be >= 1, got {num_steps}")
        if time_sampling not in TIME_SAMPLING:
            raise ConfigError(
                f"flower head: time_sampling must be one of {sorted(TIME_SAMPLING)}, "
                f"got {time_sampling!r}"
            )
        if clip_range is not None and clip_range <= 0:
            raise ConfigError(f"flower head: clip_range must be > 0 or None, got {clip_range}")
        if lora_dim < 0:
            raise ConfigError(f"flower head: lora_dim must be >= 0, got {lora_dim}")
        self.num_steps = int(num_steps)
        self.time_alpha = TIME_SAMPLING[time_sampling]
        self.output_range = None if clip_range is None else float(clip_range)
        self.output_range_reason = "FLOWER clips its chunk, --model.head_kwargs.clip_range"
        self.context_norm = RMSNorm(width)
        self.action_in = nn.Linear(action_dim, width)
        self.pos_emb = nn.Parameter(torch.randn(action_horizon, width) * 0.02)
        self.time_mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.adaln = GlobalAdaLN(width, width)
        self.blocks = nn.ModuleList(
            FlowerBlock(width, num_heads, mlp_ratio, lora_dim) for _ in range(depth)
        )
        self.final_norm = RMSNorm(width)
        self.action_out = nn.Linear(width, action_dim)
        causal_mask = torch.ones(action_horizon, action_horizon, dtype=torch.bool).tril()
        self.register_buffer("self_mask", causal_mask if causal else None, persistent=False)

    def prefix_cache(
        self, context: torch.Tensor, context_mask: torch.Tensor, state: torch.Tensor | None = None
    ) -> FlowPrefixCache:
        self._check(context, context_mask)
        if state is not None:
            raise ConfigError(
                "flower head: it takes no state input of its own; the VLA passes state as a "
                "context token (state_dim)"
            )
        prefix = self.context_norm(self.context_proj(context))[0]
        kvs = []
        for blk in self.blocks:
            assert isinstance(blk, FlowerBlock)
            kvs.append(blk.cross_attn.project_kv(prefix))
        return FlowPrefixCache(kvs, context_mask[:, None, None, :], None)

    def velocity(self, x_t: torch.Tensor, t: torch.Tensor, cache: FlowPrefixCache) -> torch.Tensor:
        """v_θ(x_t, t) (B, H, A), t (B,) with 1 = noise."""
        cond = self.time_mlp(sincos_time_embedding(t, self.width, 4e-3, 4.0).to(x_t.dtype))
        mods = self.adaln(cond)  # once per evaluation, shared by every block
        x = self.action_in(x_t) + self.pos_emb
        for blk, kv in zip(self.blocks, cache.kvs):
            x = blk(x, kv, cache.mask, self.self_mask, mods, cond)
        return self.action_out(self.final_norm(x)[0])


def build(cfg=None, *, context_dim: int, action_dim: int, action_horizon: int) -> FlowerHead:
    c = config_from(FlowerHeadConfig, cfg)
    return FlowerHead(context_dim, action_dim, action_horizon, **vars(c))
