"""The pre-norm transformer block: self-attention, optional cross-attention with precomputed
keys/values, MLP, optional FiLM modulation."""

from __future__ import annotations

import torch
from torch import nn

from vlastack.models.layers.attention import KV, Attention, LayerKVCache
from vlastack.models.layers.mlp import MLP


class Block(nn.Module):
    """Pre-norm block: self-attention → optional cross-attention → MLP.

    With ``cond_dim`` each sub-layer's LayerNorm output is FiLM-modulated, x·(1+γ)+β, with γ, β
    from the conditioning vector (Perez et al. 1709.07871; DiT-style adaLN).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        cross: bool = False,
        cond_dim: int = 0,
        activation: str = "gelu",
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.self_attn = Attention(dim, num_heads)
        self.cross_attn = Attention(dim, num_heads) if cross else None
        self.norm2 = nn.LayerNorm(dim) if cross else None
        self.norm3 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, int(dim * mlp_ratio), activation=activation)
        n_mod = 3 if cross else 2
        self.film = nn.Linear(cond_dim, 2 * n_mod * dim) if cond_dim else None

    def forward(
        self,
        x: torch.Tensor,
        self_mask: torch.Tensor | None = None,
        cross_kv: KV | None = None,
        cross_mask: torch.Tensor | None = None,
        cond: torch.Tensor | None = None,
        cache: LayerKVCache | None = None,
    ) -> torch.Tensor:
        """``cache`` holds this layer's past self-attention K/V for incremental causal decoding:
        new K/V are appended and every new query sees all cached positions."""
        mods: list[torch.Tensor] = []
        if self.film is not None and cond is not None:
            mods = list(
                self.film(cond).unsqueeze(1).chunk(self.film.out_features // x.shape[-1], -1)
            )

        def mod(h: torch.Tensor, i: int) -> torch.Tensor:
            return h * (1 + mods[2 * i]) + mods[2 * i + 1] if mods else h

        h = mod(self.norm1(x), 0)
        kv = self.self_attn.project_kv(h)
        if cache is not None:
            kv = cache.append(*kv)
        x = x + self.self_attn(h, kv, self_mask)
        i = 1
        if self.cross_attn is not None and self.norm2 is not None:
            assert cross_kv is not None, "cross-attention block needs cross_kv"
            x = x + self.cross_attn(mod(self.norm2(x), i), cross_kv, cross_mask)
            i += 1
        return x + self.mlp(mod(self.norm3(x), i))
