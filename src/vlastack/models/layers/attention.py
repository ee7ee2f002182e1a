"""Multi-head attention whose keys/values are projected once and reused (a context's K/V over a
chunk's denoising / decoding steps, π0's prefix KV cache idea), per-layer self-attention KV
caches for greedy autoregressive decoding, and the attention masks' helpers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vlastack.errors import ConfigError

KV = tuple[torch.Tensor, torch.Tensor]  # (B, heads, N, head_dim) each


class LayerKVCache:
    """One layer's self-attention K/V of the tokens decoded so far (greedy autoregressive
    decoding), in buffers that grow by doubling: appending copies only the new tokens. (A
    ``torch.cat`` of the whole past per token was 39 ms, 7%, of a 112-token chunk.)"""

    def __init__(self) -> None:
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None
        self.n = 0

    def append(self, k: torch.Tensor, v: torch.Tensor) -> KV:
        """Add (B, heads, T, hd) keys/values; returns every position's so far (views)."""
        n0, n1 = self.n, self.n + k.shape[2]
        if self.k is None or self.v is None or n1 > self.k.shape[2]:
            cap = max(n1, 16, 0 if self.k is None else 2 * self.k.shape[2])
            B, H, _, hd = k.shape
            nk, nv = k.new_empty(B, H, cap, hd), v.new_empty(B, H, cap, hd)
            if self.k is not None and self.v is not None and n0:
                nk[:, :, :n0] = self.k[:, :, :n0]
                nv[:, :, :n0] = self.v[:, :, :n0]
            self.k, self.v = nk, nv
        self.k[:, :, n0:n1] = k
        self.v[:, :, n0:n1] = v
        self.n = n1
        return self.k[:, :, :n1], self.v[:, :, :n1]


def sdpa(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``F.scaled_dot_product_attention``, except bf16 under autograd on a CPU, which runs in
    float32: PyTorch's CPU flash-attention backward is 2.6-5.4x slower in bf16 than in float32
    at these heads' sizes (ACT's 8x4x20x16: 2.33 vs 0.43 ms; BENCHMARKS.md), and float32 is the
    more precise of the two."""
    if (
        q.dtype == torch.bfloat16
        and q.device.type == "cpu"
        and torch.is_grad_enabled()
        and (q.requires_grad or k.requires_grad or v.requires_grad)
    ):
        with torch.autocast("cpu", enabled=False):
            o = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask)
        return o.to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class Attention(nn.Module):
    """Multi-head attention whose keys/values may be projected once and reused."""

    def __init__(self, dim: int, num_heads: int, kv_dim: int | None = None) -> None:
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"width {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(kv_dim or dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, D) → (B, heads, N, hd)
        B, N, _ = x.shape
        return x.view(B, N, self.num_heads, self.head_dim).transpose(1, 2)

    def project_kv(self, x: torch.Tensor) -> KV:
        k, v = self.kv(x).chunk(2, dim=-1)
        return self._split(k), self._split(v)

    def project_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, KV]:
        """Self-attention q and (k, v) of ``x`` (the native runner runs them as one product)."""
        return self._split(self.q(x)), self.project_kv(x)

    def attend(self, q: torch.Tensor, kv: KV, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Split queries q (B, heads, L, hd) → output projection (B, L, D)."""
        o = sdpa(q, kv[0], kv[1], mask)
        B, _, L, _ = o.shape
        o = o.transpose(1, 2).reshape(B, L, -1)
        return self.out(o)

    def forward(self, x: torch.Tensor, kv: KV, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, L, D) queries; kv from ``project_kv``; mask broadcastable to (B, 1, L, N), True=attend."""
        q = self.q(x)
        return self.attend(self._split(q), kv, mask)


def causal_mask(length: int, device: torch.device) -> torch.Tensor:
    return torch.ones(length, length, dtype=torch.bool, device=device).tril()
