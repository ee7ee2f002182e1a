"""Linear products on the inference fast path: oneDNN's prepacked linear where the weight is
large enough to pay, vlastack's native kernels where built, plain ``F.linear`` otherwise; the
weight packs (``plan_linear``) and product functions (``plan_linear_fns``) the inference plans
hold and run."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from vlastack import native
from vlastack.models.common import cpu_bf16_kernels
from vlastack.models.layers.inference import derived, fast_inference
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


def _onednn_pays(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (
        x.device.type == "cpu"
        and weight.dtype == x.dtype
        and _onednn_dtype(x.dtype)
        and _onednn_shape(weight.shape[0], weight.shape[-1])
        and _mkldnn_linear_ops()
    )


# the activations fused into a product's epilogue: oneDNN's post-op (name, algorithm), and the
# plain op that follows F.linear where oneDNN is not used
_POST_OPS = {"gelu": ("gelu", "none"), "relu": ("relu", "")}


_ACT_FNS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"gelu": F.gelu, "relu": F.relu}


def packed_linear(
    owner: nn.Module,
    name: str,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    activation: str | None = None,
) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, then ``activation`` ("gelu", exact, or "relu") if given,
    with the weight reordered once into oneDNN's blocked layout and cached on ``owner`` until it
    changes. Inference only. At a chunk's small row counts (16 queries) MKL's sgemm re-packs the
    weight on every call; the prepacked kernel skips that and fuses the activation into the GEMM
    epilogue (~15-25% faster per GEMM here, same math up to float rounding). Falls back to the
    plain ops off-CPU or without oneDNN. On a float32 CPU with vlastack's native kernels
    (``vlastack.native``) the product runs there instead, from a pack cached the same way."""
    if x.dtype is torch.float32 and weight.dtype is torch.float32 and native.usable(weight):
        params = (weight,) if bias is None else (weight, bias)
        pack = derived(owner, name + "_native", params, lambda: native.pack_linear(weight, bias))
        return native.linear(x, pack, activation)
    if (
        _onednn_pays(x, weight)
        and (bias is None or bias.dtype == x.dtype)
        and (activation == "gelu" or x.numel() != x.shape[-1])  # one row: see plan_linear_fns
    ):
        rows = max(1, x.numel() // max(1, x.shape[-1]))
        packed = derived(
            owner,
            name,
            (weight,),
            lambda: torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), rows),
        )
        op, algorithm = _POST_OPS[activation] if activation else ("none", "")
        return torch.ops.mkldnn._linear_pointwise(x, packed, bias, op, (), algorithm)
    y = F.linear(x, weight, bias)
    return _ACT_FNS[activation](y) if activation else y


def fast_linear(lin: nn.Module, x: torch.Tensor, activation: str | None = None) -> torch.Tensor:
    """``lin(x)`` (then ``activation``) through ``packed_linear`` when ``lin`` is a plain
    ``nn.Linear``; int8 / BitLinear replacements run their own forward."""
    if type(lin) is nn.Linear:
        return packed_linear(lin, "_packed", x, lin.weight, lin.bias, activation)
    y = lin(x)
    return _ACT_FNS[activation](y) if activation else y


def linear(lin: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``lin(x)``, through the prepacked kernel when the fast path is on."""
    return fast_linear(lin, x) if fast_inference() else lin(x)


def _onednn_plan(t: torch.Tensor) -> bool:
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
    act = _ACT_FNS[activation]
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


def _plan_norm(n: nn.LayerNorm) -> tuple:
    return (
        None if n.weight is None else n.weight.detach(),
        None if n.bias is None else n.bias.detach(),
        n.eps,
    )
