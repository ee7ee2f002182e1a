"""The observation trunk: ``nn.TransformerEncoder`` layers over the token prefix, and its
inference plan.

A policy's trunk is a few ``nn.TransformerEncoderLayer`` over a short token prefix (ACT's
observation encoder, Octo's transformer, the demo's 2-layer trunk). torch's own fast path for
these layers runs every product through MKL's plain sgemm, which re-packs each weight per call:
at 3 tokens and width 256 one layer took 0.45-0.76 ms on one core of the AVX2 EPYC, ~90% of
it in the four GEMMs. ``EncoderPlan`` runs the same math from weight packs made once (oneDNN's
prepacked kernel where it pays, ReLU or GELU fused into the first FFN product), the way
``layers.decoder.DecoderPlan`` does for the heads' decoders, and falls back to the module
wherever it does not support the layer. Written by hand for the same reason as ``DecoderPlan``
(no library offers it for eager mode); see BENCHMARKS.md for the numbers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vlastack import native
from vlastack.models.layers.inference import derived, fast_inference, plan_params
from vlastack.models.layers.linear import _onednn_plan, _plan_norm, plan_linear, plan_linear_fns


def build_trunk(width: int, heads: int, layers: int) -> nn.TransformerEncoder:
    """Pre-norm transformer encoder layers (FFN 4·width, ReLU, no dropout) over (B, N, width)."""
    layer = nn.TransformerEncoderLayer(
        width, heads, 4 * width, dropout=0.0, batch_first=True, norm_first=True
    )
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


def encoder_forward(trunk: nn.Module, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``trunk(x, src_key_padding_mask=~mask)``; ``mask`` (B, N) True = a real token. On the
    inference fast path (autograd off) a supported trunk runs as an ``EncoderPlan``."""
    if fast_inference():
        plan = _plan(trunk)
        if plan is not None:
            return plan.run(x, None if bool(mask.all()) else mask[:, None, None, :])
    return trunk(x, src_key_padding_mask=~mask)


def _plan(trunk: nn.Module) -> EncoderPlan | None:
    params = plan_params(trunk, "plan_params", lambda: [trunk], lambda: EncoderPlan.supports(trunk))
    if params is None:
        return None
    assert isinstance(trunk, nn.TransformerEncoder)  # what EncoderPlan.supports checked
    return derived(trunk, "_plan", params, lambda: EncoderPlan(trunk))


_ACTIVATIONS = {1: "relu", 2: "gelu"}  # TransformerEncoderLayer.activation_relu_or_gelu


class EncoderPlan:
    """Per layer: LayerNorm parameters and weight packs (in-projection, out-projection, FFN);
    run by one loop of raw tensor ops. Pre-norm and post-norm layers, ReLU or GELU."""

    def __init__(self, trunk: nn.TransformerEncoder) -> None:
        layers = list(trunk.layers)
        first = layers[0]
        self.onednn = onednn = _onednn_plan(first.linear1.weight)
        self.native = native.usable(first.linear1.weight)  # every pack a NativeLinear
        self.act = _ACTIVATIONS[first.activation_relu_or_gelu]
        self.lin, self.ffn_in = plan_linear_fns(onednn, self.act)
        self.norm_first = first.norm_first
        self.heads = first.self_attn.num_heads
        self.layers = [
            (
                _plan_norm(lyr.norm1),
                plan_linear(lyr.self_attn.in_proj_weight, lyr.self_attn.in_proj_bias, onednn),
                plan_linear(lyr.self_attn.out_proj.weight, lyr.self_attn.out_proj.bias, onednn),
                _plan_norm(lyr.norm2),
                plan_linear(lyr.linear1.weight, lyr.linear1.bias, onednn),
                plan_linear(lyr.linear2.weight, lyr.linear2.bias, onednn),
            )
            for lyr in layers
        ]
        norm = trunk.norm
        self.final_norm = _plan_norm(norm) if isinstance(norm, nn.LayerNorm) else None

    @staticmethod
    def supports(trunk: nn.Module) -> bool:
        if type(trunk) is not nn.TransformerEncoder or not len(trunk.layers):
            return False
        if trunk.norm is not None and type(trunk.norm) is not nn.LayerNorm:
            return False
        norm_first = trunk.layers[0].norm_first
        act = trunk.layers[0].activation_relu_or_gelu
        for lyr in trunk.layers:
            sa = lyr.self_attn
            if not (
                type(lyr) is nn.TransformerEncoderLayer
                and lyr.norm_first == norm_first
                and lyr.activation_relu_or_gelu == act
                and act in _ACTIVATIONS
                and (act != 2 or getattr(lyr.activation, "approximate", "none") == "none")
                and type(sa) is nn.MultiheadAttention
                and sa.batch_first
                and sa._qkv_same_embed_dim
                and sa.in_proj_bias is not None
                and sa.bias_k is None
                and not sa.add_zero_attn
                # int8 / BitLinear swaps replace these: their own forward must run
                and type(sa.out_proj)
                in (nn.Linear, nn.modules.linear.NonDynamicallyQuantizableLinear)
                and type(lyr.linear1) is nn.Linear
                and type(lyr.linear2) is nn.Linear
                and type(lyr.norm1) is nn.LayerNorm
                and type(lyr.norm2) is nn.LayerNorm
            ):
                return False
        return True

    def run(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        """``attn_mask`` (B, 1, 1, N) True = attend, or None for all keys."""
        if self.native and x.dtype is torch.float32 and not x.requires_grad:
            return self._run_native(x, attn_mask)
        lin, ffn_in, ln = self.lin, self.ffn_in, torch.layer_norm
        B, T, D = x.shape
        H = self.heads
        hd = D // H
        shape = (D,)
        attend = F.scaled_dot_product_attention
        for n1, qkv, out, n2, f1, f2 in self.layers:
            h = ln(x, shape, n1[0], n1[1], n1[2]) if self.norm_first else x
            t = lin(h, qkv).view(B, T, 3, H, hd).permute(2, 0, 3, 1, 4)
            a = attend(t[0], t[1], t[2], attn_mask=attn_mask)
            x = x + lin(a.transpose(1, 2).reshape(B, T, D), out)
            if not self.norm_first:
                x = ln(x, shape, n1[0], n1[1], n1[2])
            h = ln(x, shape, n2[0], n2[1], n2[2]) if self.norm_first else x
            x = x + lin(ffn_in(h, f1), f2)
            if not self.norm_first:
                x = ln(x, shape, n2[0], n2[1], n2[2])
        return self._final(x)

    def _final(self, x: torch.Tensor) -> torch.Tensor:
        n = self.final_norm
        return x if n is None else torch.layer_norm(x, (x.shape[-1],), n[0], n[1], n[2])

    def _run_native(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        """``run`` with vlastack's native kernels, as ``DecoderPlan._run_native``: residual adds
        and the activation inside the products, attention straight from the in-projection's
        output."""
        nl, attend, ln = native.linear, native.self_attention, torch.layer_norm
        B, T, D = x.shape
        H = self.heads
        shape = (D,)
        key_mask = native.key_mask_bytes(attn_mask, B)
        nln = native.ln_linear
        for n1, qkv, out, n2, f1, f2 in self.layers:
            t = nln(x, n1, qkv) if self.norm_first else nl(x, qkv)
            x = nl(attend(t, H, key_mask), out, None, x)
            if not self.norm_first:
                x = ln(x, shape, n1[0], n1[1], n1[2])
            h = nln(x, n2, f1, self.act) if self.norm_first else nl(x, f1, self.act)
            x = nl(h, f2, None, x)
            if not self.norm_first:
                x = ln(x, shape, n2[0], n2[1], n2[2])
        return self._final(x)
