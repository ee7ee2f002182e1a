"""The native runner's form of the observation trunk (``nn.TransformerEncoder``,
models/trunk.py): ``EncoderPlan``, per layer LayerNorm parameters and weight packs run by one
loop of raw tensor ops, and ``native_trunk``, the callable the runner puts in the VLA's
``trunk_runner`` slot.

torch's own fast path for these layers runs every product through MKL's plain sgemm, which
re-packs each weight per call: at 3 tokens and width 256 one layer took 0.45-0.76 ms on one core
of the AVX2 EPYC, ~90% of it in the four GEMMs. The plan runs the same math from packs made
once (native kernels, or oneDNN's prepacked kernel where it pays, the activation fused into
the first FFN product). Built for frozen weights: rebuild the runner after they change.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from vlastack import native
from vlastack.models.trunk import encoder_forward
from vlastack.runners.native.linear import onednn_plan, plan_linear, plan_linear_fns, plan_norm


def native_trunk(trunk: nn.Module) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``encoder_forward(trunk, x, mask)`` as a callable: the trunk's ``EncoderPlan`` where it
    supports the layers, the module itself otherwise."""
    if not EncoderPlan.supports(trunk):
        return lambda x, mask: encoder_forward(trunk, x, mask)
    assert isinstance(trunk, nn.TransformerEncoder)
    plan = EncoderPlan(trunk)

    def run(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return plan.run(x, None if bool(mask.all()) else mask[:, None, None, :])

    return run


_ACTIVATIONS = {1: "relu", 2: "gelu"}  # TransformerEncoderLayer.activation_relu_or_gelu


class EncoderPlan:
    """Per layer: LayerNorm parameters and weight packs (in-projection, out-projection, FFN);
    run by one loop of raw tensor ops. Pre-norm and post-norm layers, ReLU or GELU."""

    def __init__(self, trunk: nn.TransformerEncoder) -> None:
        layers = list(trunk.layers)
        first = layers[0]
        self.onednn = onednn = onednn_plan(first.linear1.weight)
        self.native = native.usable(first.linear1.weight)  # every pack a NativeLinear
        self.act = _ACTIVATIONS[first.activation_relu_or_gelu]
        self.lin, self.ffn_in = plan_linear_fns(onednn, self.act)
        self.norm_first = first.norm_first
        self.heads = first.self_attn.num_heads
        self.layers = [
            (
                plan_norm(lyr.norm1),
                plan_linear(lyr.self_attn.in_proj_weight, lyr.self_attn.in_proj_bias, onednn),
                plan_linear(lyr.self_attn.out_proj.weight, lyr.self_attn.out_proj.bias, onednn),
                plan_norm(lyr.norm2),
                plan_linear(lyr.linear1.weight, lyr.linear1.bias, onednn),
                plan_linear(lyr.linear2.weight, lyr.linear2.bias, onednn),
            )
            for lyr in layers
        ]
        norm = trunk.norm
        self.final_norm = plan_norm(norm) if isinstance(norm, nn.LayerNorm) else None

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
