"""The Gemma decoder stacks of LeRobot's pi0 / pi0.5 (PaliGemma's language model and the action
expert), with LeRobot's state-dict keys and numerics.

What is LeRobot-specific (``lerobot/policies/pi_gemma.py``, LeRobot 0.6.1) is written here:

* ``PiRMSNorm``: Gemma's RMSNorm (``x * rsqrt(mean(x^2) + eps) * (1 + weight)``, the variance in
  float32) or, with ``cond_dim`` (pi0.5's action expert), adaRMS: a ``dense`` Linear of the time
  condition gives ``scale, shift, gate``; the output is ``norm(x) * (1 + scale) + shift`` and the
  residual that follows adds ``gate * y`` instead of ``y``. Keys ``<norm>.weight`` or
  ``<norm>.dense.{weight,bias}``.
* ``GemmaBlock``: one decoder layer run on one tower's tokens while attending to keys/values that
  may include another tower's (the prefix KV of the PaliGemma pass, for the expert's denoising
  steps). Attention is transformers' eager Gemma attention written out (``q k^T * head_dim^-0.5
  + additive mask``, softmax in float32, grouped KV heads repeated), RoPE with Gemma's default
  ``rope_theta`` 10000 computed as ``GemmaRotaryEmbedding`` does (float32, ``cat(freqs, freqs)``)
  and applied with transformers' ``apply_rotary_pos_emb``; the MLP is transformers' ``GemmaMLP``
  (gelu_pytorch_tanh).

``GEMMA_VARIANTS`` are the widths/depths LeRobot (``get_gemma_config`` in
``policies/pi0/modeling_pi0.py``, itself from openpi ``gemma.py: get_config``) gives
``gemma_2b`` and ``gemma_300m``, plus the ``dummy`` / ``dummy_expert`` sizes the reduced fixtures
of ``shared/fixtures/lerobot_policies`` name (their README, "pi0": a patched LeRobot accepts them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from vlastack.errors import ConfigError

ROPE_THETA = 10000.0  # GemmaConfig default, not overridden by LeRobot
RMS_EPS = 1e-6  # GemmaConfig.rms_norm_eps default


@dataclass(frozen=True)
class GemmaSize:
    width: int
    depth: int
    mlp_dim: int
    num_heads: int
    num_kv_heads: int
    head_dim: int


GEMMA_VARIANTS = {
    # LeRobot 0.6.1 policies/pi0/modeling_pi0.py get_gemma_config (= openpi gemma.py get_config)
    "gemma_2b": GemmaSize(2048, 18, 16_384, 8, 1, 256),
    "gemma_300m": GemmaSize(1024, 18, 4096, 8, 1, 256),
    # the reduced sizes of shared/fixtures/lerobot_policies/{pi0,pi05} (README "pi0")
    "dummy": GemmaSize(64, 4, 128, 8, 1, 16),
    "dummy_expert": GemmaSize(32, 4, 64, 8, 1, 16),
}


def gemma_size(cfg_field: str, variant: object) -> GemmaSize:
    if not isinstance(variant, str) or variant not in GEMMA_VARIANTS:
        raise ConfigError(
            f"config.json '{cfg_field}' is {variant!r}; vlastack knows the Gemma variants "
            f"{', '.join(GEMMA_VARIANTS)} (LeRobot accepts gemma_2b / gemma_300m): use one of them"
        )
    return GEMMA_VARIANTS[variant]


def _gemma_mlp(size: GemmaSize) -> nn.Module:
    from transformers import GemmaConfig
    from transformers.models.gemma.modeling_gemma import GemmaMLP

    cfg = GemmaConfig(
        hidden_size=size.width, intermediate_size=size.mlp_dim, hidden_act="gelu_pytorch_tanh"
    )
    return GemmaMLP(cfg)


class PiRMSNorm(nn.Module):
    """Gemma RMSNorm, or adaRMS when ``cond_dim`` is given; ``forward`` returns (y, gate)."""

    def __init__(self, dim: int, cond_dim: int | None = None, eps: float = RMS_EPS) -> None:
        super().__init__()
        self.eps = eps
        self.cond_dim = cond_dim
        if cond_dim is None:
            self.weight = nn.Parameter(torch.zeros(dim))
        else:
            self.dense = nn.Linear(cond_dim, 3 * dim, bias=True)

    def forward(
        self, x: torch.Tensor, cond: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        var = torch.mean(torch.square(x.float()), dim=-1, keepdim=True)
        normed = x * torch.rsqrt(var + self.eps)
        if self.cond_dim is None:
            return (normed * (1.0 + self.weight.float())).type_as(x), None
        if cond is None:
            raise ValueError("adaRMS norm needs the time condition")
        mod = self.dense(cond)
        if x.ndim == 3:
            mod = mod.unsqueeze(1)
        scale, shift, gate = mod.chunk(3, dim=-1)
        normed = normed * (1 + scale.float()) + shift.float()
        return normed.to(x.dtype), gate.to(x.dtype)


def compute_dtype(layer: nn.Module) -> torch.dtype:
    """The dtype a linear layer computes in: its weight's, or float32 for a layer whose weight
    is no float parameter (an int8 layer of ``vlastack export quantize``: weight-only or torch.ao
    dynamic, whose ``weight`` is a buffer or a method)."""
    w = layer._parameters.get("weight")  # not ``.weight``: an int8 layer's property dequantizes
    return w.dtype if w is not None else torch.float32


def gated_residual(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor | None) -> torch.Tensor:
    return x + y if gate is None else x + y * gate


def rope_cos_sin(
    position_ids: torch.Tensor,
    head_dim: int,
    dtype: torch.dtype,
    freq_dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``GemmaRotaryEmbedding.forward`` for the default rope: (B, L, head_dim) cos and sin.
    ``freq_dtype`` bfloat16: the inverse frequencies rounded to bfloat16 first, as they are in
    LeRobot's bfloat16 model (its ``.to(bfloat16)`` casts the ``inv_freq`` buffer too)."""
    inv_freq = 1.0 / (
        ROPE_THETA
        ** (
            torch.arange(0, head_dim, 2, dtype=torch.int64).to(
                device=position_ids.device, dtype=torch.float
            )
            / head_dim
        )
    )
    inv_freq = inv_freq.to(freq_dtype)
    inv = inv_freq[None, :, None].float().expand(position_ids.shape[0], -1, 1)
    freqs = (inv @ position_ids[:, None, :].float()).transpose(1, 2)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


class GemmaAttentionWeights(nn.Module):
    """The four projections (LeRobot keys ``self_attn.{q,k,v,o}_proj.weight``, no biases)."""

    def __init__(self, size: GemmaSize) -> None:
        super().__init__()
        inner = size.num_heads * size.head_dim
        self.q_proj = nn.Linear(size.width, inner, bias=False)
        self.k_proj = nn.Linear(size.width, size.num_kv_heads * size.head_dim, bias=False)
        self.v_proj = nn.Linear(size.width, size.num_kv_heads * size.head_dim, bias=False)
        self.o_proj = nn.Linear(inner, size.width, bias=False)


def eager_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scaling: float
) -> torch.Tensor:
    """(B, H, L, D) queries over (B, KVH, S, D) keys/values -> (B, L, H, D); transformers'
    ``eager_attention_forward`` of Gemma (additive mask, float32 softmax)."""
    rep = q.shape[1] // k.shape[1]
    if rep > 1:
        b, kvh, s, d = k.shape
        k = k[:, :, None].expand(b, kvh, rep, s, d).reshape(b, kvh * rep, s, d)
        v = v[:, :, None].expand(b, kvh, rep, s, d).reshape(b, kvh * rep, s, d)
    w = torch.matmul(q, k.transpose(2, 3)) * scaling
    if mask is not None:
        w = w + mask
    w = nn.functional.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype)
    return torch.matmul(w, v).transpose(1, 2).contiguous()


class GemmaBlock(nn.Module):
    """One PiGemma decoder layer (keys ``self_attn.*``, ``mlp.*``, ``input_layernorm.*``,
    ``post_attention_layernorm.*``)."""

    def __init__(self, size: GemmaSize, cond_dim: int | None = None) -> None:
        super().__init__()
        self.size = size
        self.self_attn = GemmaAttentionWeights(size)
        self.mlp: Any = _gemma_mlp(size)  # transformers' GemmaMLP
        self.input_layernorm = PiRMSNorm(size.width, cond_dim)
        self.post_attention_layernorm = PiRMSNorm(size.width, cond_dim)

    def qkv(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cond: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Pre-norm and projections; q and k rotated. Returns q, k, v (B, heads, L, D), gate."""
        from transformers.models.gemma.modeling_gemma import apply_rotary_pos_emb

        h, gate = self.input_layernorm(x, cond)
        shape = (*h.shape[:-1], -1, self.size.head_dim)
        a = self.self_attn
        q = a.q_proj(h).view(shape).transpose(1, 2)
        k = a.k_proj(h).view(shape).transpose(1, 2)
        v = a.v_proj(h).view(shape).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1)
        return q, k, v, gate

    def finish(
        self,
        x: torch.Tensor,
        attn: torch.Tensor,
        gate: torch.Tensor | None,
        cond: torch.Tensor | None,
    ) -> torch.Tensor:
        """o_proj of the attention output (B, L, H*D), gated residual, post-norm, MLP."""
        out = self.self_attn.o_proj(attn.to(compute_dtype(self.self_attn.o_proj)))
        x = gated_residual(x, out, gate)
        h, gate2 = self.post_attention_layernorm(x, cond)
        if compute_dtype(self.mlp.up_proj) == torch.bfloat16:
            h = h.to(torch.bfloat16)
        return gated_residual(x, self.mlp(h), gate2)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        past: tuple[torch.Tensor, torch.Tensor] | None = None,
        cond: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """``x`` (B, L, width) attending to ``past`` keys/values (prefix first) and its own.
        Returns the layer output and this call's (k, v) (rotated), for a KV cache."""
        q, k, v, gate = self.qkv(x, cos, sin, cond)
        keys = k if past is None else torch.cat([past[0], k], dim=-2)
        values = v if past is None else torch.cat([past[1], v], dim=-2)
        attn = eager_attention(q, keys, values, mask, self.size.head_dim**-0.5)
        attn = attn.reshape(*x.shape[:-1], -1).contiguous()
        return self.finish(x, attn, gate, cond), (k, v)


class GemmaStack(nn.Module):
    """``layers`` + final ``norm`` (keys ``layers.N.*``, ``norm.*``) and, for PaliGemma's
    language model, ``embed_tokens`` (scaled by sqrt(width) as transformers'
    ``GemmaTextScaledWordEmbedding``)."""

    def __init__(
        self, size: GemmaSize, vocab_size: int | None = None, cond_dim: int | None = None
    ) -> None:
        super().__init__()
        self.size = size
        if vocab_size is not None:
            self.embed_tokens = nn.Embedding(vocab_size, size.width)
        self.layers = nn.ModuleList([GemmaBlock(size, cond_dim) for _ in range(size.depth)])
        self.norm = PiRMSNorm(size.width, cond_dim)
        self.rope_freq_dtype = torch.float32  # bfloat16 after Pi0Network.set_precision

    @property
    def blocks(self) -> list[GemmaBlock]:
        return cast(list[GemmaBlock], list(self.layers))

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        w = self.embed_tokens.weight
        return self.embed_tokens(ids) * torch.tensor(self.size.width**0.5).to(w.dtype)

    def prefill(
        self, x: torch.Tensor, position_ids: torch.Tensor, mask: torch.Tensor
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The KV cache of ``x`` through every layer. The last layer's output (its MLP, the
        final norm) is not needed: only its keys/values are, so it stops after them."""
        if compute_dtype(self.blocks[0].self_attn.q_proj) == torch.bfloat16:
            x = x.to(torch.bfloat16)
        cos, sin = rope_cos_sin(position_ids, self.size.head_dim, x.dtype, self.rope_freq_dtype)
        cache = []
        for i, layer in enumerate(self.blocks):
            if i == len(self.layers) - 1:
                _, k, v, _ = layer.qkv(x, cos, sin, None)
                cache.append((k, v))
                break
            x, kv = layer(x, cos, sin, mask, None, None)
            cache.append(kv)
        return cache

    def decode(
        self,
        x: torch.Tensor,
        position_ids: torch.Tensor,
        mask: torch.Tensor,
        cache: list[tuple[torch.Tensor, torch.Tensor]],
        cond: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``x`` through every layer attending to ``cache`` (one entry per layer) and itself;
        final norm applied."""
        if compute_dtype(self.blocks[0].self_attn.q_proj) == torch.bfloat16:
            x = x.to(torch.bfloat16)
        cos, sin = rope_cos_sin(position_ids, self.size.head_dim, x.dtype, self.rope_freq_dtype)
        for layer, past in zip(self.blocks, cache, strict=True):
            x, _ = layer(x, cos, sin, mask, past, cond)
        out, _ = self.norm(x, cond)
        return out
