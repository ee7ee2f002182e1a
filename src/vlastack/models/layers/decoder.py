"""The learned-query decoder: ``Block``s cross-attending to a context whose K/V are computed once.

Written here (instead of ``nn.TransformerDecoder``) because the heads need keys/values of the
context computed once per chunk and reused across denoising steps / decoding steps (π0's prefix
KV cache idea), and per-token KV caches for greedy autoregressive decoding. Plain modules: the
CPU fast form of these blocks is the native runner's (``vlastack.runners.native.decoder``).
"""

from __future__ import annotations

import torch
from torch import nn

from vlastack.models.layers.attention import KV, LayerKVCache
from vlastack.models.layers.block import Block


class CrossDecoder(nn.Module):
    """A stack of ``Block``s that cross-attend to a context whose K/V are computed once."""

    def __init__(
        self,
        width: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        cond_dim: int = 0,
        activation: str = "gelu",
    ) -> None:
        super().__init__()
        self.context_norm = nn.LayerNorm(width)
        self.blocks = nn.ModuleList(
            Block(width, num_heads, mlp_ratio, cross=True, cond_dim=cond_dim, activation=activation)
            for _ in range(depth)
        )
        self.final_norm = nn.LayerNorm(width)

    def context_kv(self, context: torch.Tensor) -> list[KV]:
        """Per-layer cross-attention K/V of the (already width-projected) context."""
        c = self.context_norm(context)
        out: list[KV] = []
        for b in self.blocks:
            assert isinstance(b, Block) and b.cross_attn is not None
            out.append(b.cross_attn.project_kv(c))
        return out

    def forward(
        self,
        x: torch.Tensor,
        kvs: list[KV],
        context_mask: torch.Tensor | None,
        self_mask: torch.Tensor | None = None,
        cond: torch.Tensor | None = None,
        caches: list[LayerKVCache] | None = None,
    ) -> torch.Tensor:
        """``context_mask`` (B, N) True = valid, or None when every context token is valid;
        ``caches`` (from ``new_caches``): incremental decoding, ``x`` the new tokens only."""
        cross_mask = context_mask[:, None, None, :] if context_mask is not None else None
        for i, blk in enumerate(self.blocks):
            x = blk(
                x, self_mask, kvs[i], cross_mask, cond, caches[i] if caches is not None else None
            )
        return self.final_norm(x)

    def new_caches(self) -> list[LayerKVCache]:
        """Empty per-layer self-attention caches for greedy decoding with ``forward``."""
        return [LayerKVCache() for _ in self.blocks]
