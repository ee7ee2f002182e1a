"""Perceiver resampler: a fixed number of learned latents cross-attend to the input tokens.

Compresses any number of visual tokens to ``num_latents`` (Flamingo, Alayrac et al. 2022; IDEFICS),
so the backbone's prefix length does not grow with image resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class PerceiverConfig:
    num_latents: int = 16
    depth: int = 1
    num_heads: int = 4
    mlp_ratio: int = 2


class _CrossBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim)
        )

    def forward(self, latents: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        q = self.norm_q(latents)
        # Flamingo lets latents attend to [tokens, latents] so they can also exchange information.
        kv = torch.cat([self.norm_kv(tokens), q], dim=1)
        latents = latents + self.attn(q, kv, kv, need_weights=False)[0]
        return latents + self.mlp(self.norm_mlp(latents))


class PerceiverResampler(nn.Module):
    """(B, N, D_in) -> (B, num_latents, D_out)."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        num_latents: int = 16,
        depth: int = 1,
        num_heads: int = 4,
        mlp_ratio: int = 2,
    ) -> None:
        super().__init__()
        self.inp = nn.Linear(in_dim, out_dim)
        self.latents = nn.Parameter(torch.randn(num_latents, out_dim) * 0.02)
        self.blocks = nn.ModuleList(
            _CrossBlock(out_dim, num_heads, mlp_ratio) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.inp(tokens)
        lat = self.latents.unsqueeze(0).expand(x.shape[0], -1, -1)
        for block in self.blocks:
            lat = block(lat, x)
        return self.norm(lat)


def build(cfg: PerceiverConfig, in_dim: int, out_dim: int) -> PerceiverResampler:
    return PerceiverResampler(
        in_dim, out_dim, cfg.num_latents, cfg.depth, cfg.num_heads, cfg.mlp_ratio
    )
