"""The native runner's linear products: vlastack's native kernels where built (float32 CPU),
oneDNN's prepacked linear where the weight is large enough to pay (bfloat16, or no native
build), plain ``F.linear`` otherwise; the weight packs (``plan_linear``) and product functions
(``plan_linear_fns``) the runner's plans hold and run."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from vlastack import native
from vlastack.models.common import cpu_bf16_kernels
from vlastack.native import NativeLinear


def _mkldnn_linear_ops() -> bool:
    """oneDNN's prepacked linear (what inductor's CPU freezing pass emits) is in this build."""
    global _MKLDNN_LINEAR
    if _MKLDNN_LINEAR is None:
        ops = torch.ops.mkldnn
        _MKLDNN_LINEAR = bool(
            torch.backends.mkldnn.is_available()
            and hasattr(ops, "_reorder_linear_weight")
            and hasattr(ops, "_linear_pointwise")
        )
    return _MKLDNN_LINEAR


_MKLDNN_LINEAR: bool | None = None


def _onednn_dtype(dtype: torch.dtype) -> bool:
    """oneDNN's prepacked linear runs this dtype on this CPU: float32 always; bfloat16 only where
    the CPU has bf16 kernels, else its reorder raises (seen on an AVX2-only EPYC)."""
    return dtype == torch.float32 or (dtype == torch.bfloat16 and cpu_bf16_kernels())


# oneDNN's prepacked call has ~15-40 µs of fixed overhead (it sets up a primitive descriptor on
# every call); MKL's plain sgemm has ~5 µs but re-packs the weight each time. So a layer goes to
# oneDNN only if its weight is large enough for the pack to pay. Measured at batch-1 shapes on
# one core, 16 rows unless noted, µs oneDNN / MKL:
# - AVX-512 EPYC: 7 outputs × K 256: 28 / 9; 64 × 320: 33 / 15; 128 × 256: 39 / 25; 128 × 1280
#   (8 rows): 63 / 62; 256 × 640 (4 rows): 46 / 46; 256 × 1280 (4 rows): 63 / 93; 256 × 256:
#   ~equal hot and oneDNN ~10 µs ahead with the weights out of cache (ACT's decoder streaming).
# - AVX2-only EPYC (16 weights cycling): 256 × 7: 42 / 10; 256 × 128: 58 / 33; 256 × 256:
#   101 / 72; 256 × 512: 120 / 117; 384 × 384: 129 / 129; 512 × 256: 140 / 165; 768 × 256:
#   178 / 227; 1024 × 256: 237 / 317.
# Hence the cut, in weight elements: 256² and up with AVX-512, 512 × 256 and up without.
def _onednn_min_weight() -> int:
    global _ONEDNN_MIN_WEIGHT
    if _ONEDNN_MIN_WEIGHT is None:
        avx512 = torch.backends.cpu.get_cpu_capability().startswith("AVX512")
        _ONEDNN_MIN_WEIGHT = 65_536 if avx512 else 131_072
    return _ONEDNN_MIN_WEIGHT


_ONEDNN_MIN_WEIGHT: int | None = None


def _onednn_shape(out_features: int, in_features: int) -> bool:
    return out_features * in_features >= _onednn_min_weight()


# the activations fused into a product's epilogue: oneDNN's post-op (name, algorithm), and the
# plain op that follows F.linear where oneDNN is not used
_POST_OPS = {"gelu": ("gelu", "none"), "relu": ("relu", "")}


ACT_FNS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"gelu": F.gelu, "relu": F.relu}


def onednn_plan(t: torch.Tensor) -> bool:
    """Plans built from weights like ``t`` use oneDNN's prepacked linear."""
    return t.device.type == "cpu" and _onednn_dtype(t.dtype) and _mkldnn_linear_ops()


def plan_linear(
    weight: torch.Tensor, bias: torch.Tensor | None, onednn: bool, rows: int = 16
) -> tuple:
    """A linear layer's weight as a plan holds it: (weight, bias), or (oneDNN-prepacked weight,
    bias, weight) where the pack pays (see ``_onednn_shape``; the plain weight serves one-row
    calls); run it with the plan's ``lin``. A float32 CPU weight becomes a ``NativeLinear``
    where vlastack's native kernels are built (``vlastack.native``), whatever ``onednn`` says."""
    weight, bias = weight.detach(), None if bias is None else bias.detach()
    if native.usable(weight):
        return native.pack_linear(weight, bias)
    if onednn and _onednn_shape(weight.shape[0], weight.shape[-1]):
        w = weight.contiguous()
        return (torch.ops.mkldnn._reorder_linear_weight(w, rows), bias, w)
    return (weight, bias)


def plan_linear_fns(onednn: bool, activation: str = "gelu") -> tuple[Callable, Callable]:
    """``lin(x, pack)`` and ``lin_act(x, pack)`` (then ``activation``: "gelu", exact, or
    "relu", fused into oneDNN's product where the layer has a pack) for packs made by
    ``plan_linear``."""
    act = ACT_FNS[activation]
    nl = native.linear

    def lin(x: torch.Tensor, wb: tuple) -> torch.Tensor:
        if type(wb) is NativeLinear:
            return nl(x, wb)
        return F.linear(x, wb[0], wb[1])

    def lin_act(x: torch.Tensor, wb: tuple) -> torch.Tensor:
        if type(wb) is NativeLinear:
            return nl(x, wb, activation)
        return act(F.linear(x, wb[0], wb[1]))

    if not onednn:
        return lin, lin_act
    lp = torch.ops.mkldnn._linear_pointwise.default  # the overload: no per-call lookup
    op, algorithm = _POST_OPS[activation]

    # One row (a decoding step) is a GEMV: streaming the weight is the cost, oneDNN's pack buys
    # nothing and its fixed overhead shows, so MKL runs it from the plain weight. 16 weights
    # cycling, one row, µs MKL / oneDNN on an AVX2 EPYC: 256 × 256 28 / 47, 256 × 1024 80 /
    # 117, 1024 × 256 118 / 108 (BENCHMARKS.md). Not with the activation: oneDNN fuses it, and
    # torch's exact GELU alone costs ~20 µs on 1,024 values on that CPU.
    def lin_packed(x: torch.Tensor, wb: tuple) -> torch.Tensor:
        if type(wb) is NativeLinear:
            return nl(x, wb)
        if wb[0].layout is torch.strided:  # a small layer left to MKL
            return F.linear(x, wb[0], wb[1])
        if x.numel() == x.shape[-1]:
            return F.linear(x, wb[2], wb[1])
        return lp(x, wb[0], wb[1], "none", (), "")

    def lin_act_packed(x: torch.Tensor, wb: tuple) -> torch.Tensor:
        if type(wb) is NativeLinear:
            return nl(x, wb, activation)
        if wb[0].layout is torch.strided:
            return act(F.linear(x, wb[0], wb[1]))
        return lp(x, wb[0], wb[1], op, (), algorithm)

    return lin_packed, lin_act_packed


def plan_norm(n: nn.LayerNorm) -> tuple:
    return (
        None if n.weight is None else n.weight.detach(),
        None if n.bias is None else n.bias.detach(),
        n.eps,
    )


def plain_linears(module: nn.Module) -> bool:
    """Every linear layer under ``module`` is a plain ``nn.Linear``: the packs stack raw
    weights, which would bypass int8 / BitLinear replacements (their own forward must run)."""
    return all(type(m) is nn.Linear for m in module.modules() if hasattr(m, "in_features"))
