"""Quantized models: int8 linear layers and BitVLA ternary weights, swapped into a built VLA.

int8: per-output-channel symmetric weights (``int8_per_channel``), run by ``torch.ao`` dynamic
quantization or the hand-written weight-only ``Int8Linear``; ``fake_quantize_int8_`` rounds float
weights onto that grid (what a quantized checkpoint stores). Ternary: BitNet b1.58 (Ma et al.
2402.17764; BitVLA 2506.07530) ``BitLinear`` swaps and the weights to store so that a
``BitLinear`` reproduces them exactly. ``apply_quantization`` rebuilds, on a model with loaded
weights, the structure a checkpoint's ``config.json["quantization"]`` section records: what
``Policy.from_checkpoint`` runs. Writing such checkpoints is ``export.quantize``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from vlastack.errors import ConfigError
from vlastack.models.bitlinear import BitLinear, ternarize_, ternary_quantize

METHODS = ("int8", "ternary")
INT8_BACKENDS = ("auto", "dynamic", "weight_only")
# Model parts (attributes of VLA); "state" is the state projection, "head" also covers the RT-H
# motion classifier and the auxiliary bins layer, which live at the top level of the VLA.
PARTS = ("vision", "language", "projector", "trunk", "state", "head")
DEFAULT_PARTS: dict[str, tuple[str, ...]] = {
    "int8": PARTS,
    # BitVLA keeps the LM embeddings / output head in full precision; post-training ternarizing a
    # model trained in fp32 costs accuracy, so by default only the policy's own layers are swapped.
    "ternary": ("vision", "projector", "trunk", "head"),
}
# Child modules never swapped for int8: ``Block`` reads ``film.weight`` as a tensor, and an LM's
# output head stays in full precision (as BitNet/BitVLA keep it).
INT8_SKIP = ("film", "lm_head")

_PART_ATTRS: dict[str, tuple[str, ...]] = {
    "vision": ("vision",),
    "language": ("language", "lang_proj"),
    "projector": ("projector",),
    "trunk": ("trunk",),
    "state": ("state_proj",),
    "head": ("head", "motion_classifier", "aux_bins"),
}


# ---- int8 --------------------------------------------------------------------------------------


def int8_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8: ``weight ≈ q * scale[:, None]``, q in [-127, 127].

    The grid is its own fixed point: quantizing ``q * scale`` again returns the same q and scale,
    so a checkpoint can store the dequantized values and be re-quantized exactly on load.
    """
    w = weight.detach().float()
    scale = w.abs().amax(dim=1).clamp_min(1e-12) / 127.0  # (out,)
    q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scale


class Int8Linear(nn.Module):
    """Weight-only int8 linear (per-channel scale), activations stay float.

    Written by hand as the fallback when ``torch.ao`` dynamic quantization is unavailable (it is
    deprecated in torch 2.x); uses ATen's ``_weight_int8pack_mm`` CPU kernel where it exists.
    """

    weight_int8: torch.Tensor
    weight_scale: torch.Tensor

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.register_buffer(
            "weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8)
        )
        self.register_buffer("weight_scale", torch.ones(out_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    @classmethod
    def from_linear(cls, layer: nn.Linear) -> Int8Linear:
        new = cls(layer.in_features, layer.out_features, bias=layer.bias is not None)
        q, scale = int8_per_channel(layer.weight)
        new.weight_int8.copy_(q)
        new.weight_scale.copy_(scale)
        if layer.bias is not None and new.bias is not None:
            new.bias.data.copy_(layer.bias.detach().float())
        return new.to(layer.weight.device)

    @property
    def weight(self) -> torch.Tensor:
        """Dequantized (out, in) weight, for code that reads ``.weight`` of a linear layer."""
        return self.weight_int8.float() * self.weight_scale[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        if x2.device.type == "cpu" and x2.dtype == torch.float32 and _HAS_INT8PACK:
            y = torch._weight_int8pack_mm(x2.contiguous(), self.weight_int8, self.weight_scale)
        else:
            y = x2 @ self.weight.to(x2.dtype).t()
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per-channel"


_HAS_INT8PACK = hasattr(torch, "_weight_int8pack_mm")


def _ao_dynamic_linear() -> Any:
    """``torch.ao.nn.quantized.dynamic.Linear`` (fbgemm int8 GEMM) or None when unavailable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torch.ao.nn.quantized.dynamic import Linear as DynLinear
    except ImportError:
        return None
    if "fbgemm" not in torch.backends.quantized.supported_engines and (
        "x86" not in torch.backends.quantized.supported_engines
    ):
        return None
    return DynLinear


def _dynamic_from_linear(layer: nn.Linear, dyn_cls: Any) -> nn.Module:
    """An ao dynamic int8 Linear whose int8 weight is exactly ``int8_per_channel(layer.weight)``."""
    q, scale = int8_per_channel(layer.weight)
    with warnings.catch_warnings():
        # torch marks quantized tensors deprecated in 2.x; the kernels still ship in 2.13.
        warnings.simplefilter("ignore")
        qweight = torch._make_per_channel_quantized_tensor(
            q, scale.double(), torch.zeros_like(scale, dtype=torch.long), 0
        )
        new = dyn_cls(layer.in_features, layer.out_features, dtype=torch.qint8)
        bias = layer.bias.detach().float() if layer.bias is not None else None
        new.set_weight_bias(qweight, bias)
    return new


def is_int8_linear(module: nn.Module) -> bool:
    """True for the int8 linears ``quantize_dynamic_int8`` installs (either backend)."""
    dyn = _ao_dynamic_linear()
    return isinstance(module, Int8Linear) or (dyn is not None and isinstance(module, dyn))


def resolve_int8_backend(backend: str = "auto") -> str:
    """``auto`` → ``dynamic`` (torch.ao, int8 activations too) if it works here, else ``weight_only``."""
    if backend not in INT8_BACKENDS:
        raise ConfigError(f"int8 backend {backend!r} unknown; choose one of {INT8_BACKENDS}")
    if backend == "auto":
        return "dynamic" if _ao_dynamic_linear() is not None else "weight_only"
    if backend == "dynamic" and _ao_dynamic_linear() is None:
        raise ConfigError(
            "int8 backend 'dynamic' needs torch.ao.nn.quantized.dynamic with the fbgemm/x86 "
            "engine, which this torch build lacks; use --backend weight_only"
        )
    return backend


def _swap_linears(
    module: nn.Module, make: Callable[[nn.Linear], nn.Module], skip: Sequence[str]
) -> int:
    count = 0
    for name, child in list(module.named_children()):
        if any(s in name for s in skip):
            continue
        # torch's own Transformer layers read their linears' raw .weight tensors (fast-path
        # checks, fused kernels), so their linears stay float.
        if isinstance(child, (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)):
            continue
        # Exact type: BitLinear is already quantized, and MultiheadAttention's out_proj
        # (NonDynamicallyQuantizableLinear) is read as a raw weight by F.multi_head_attention_forward.
        if type(child) is nn.Linear:
            setattr(module, name, make(child))
            count += 1
        else:
            count += _swap_linears(child, make, skip)
    return count


def check_parts(parts: Iterable[str]) -> list[str]:
    """``parts`` as a list; a ConfigError names any that is not one of ``PARTS``."""
    parts = list(parts)
    bad = [p for p in parts if p not in PARTS]
    if bad:
        raise ConfigError(f"quantization parts {bad} unknown; choose from {list(PARTS)}")
    return parts


def _part_modules(model: nn.Module, parts: Iterable[str]) -> list[tuple[nn.Module, str]]:
    """(parent, attribute) pairs for the chosen parts; a bare module is its own single part."""
    parts = check_parts(parts)
    out = []
    for p in parts:
        for attr in _PART_ATTRS[p]:
            if isinstance(getattr(model, attr, None), nn.Module):
                out.append((model, attr))
    return out


def quantize_dynamic_int8(
    model: nn.Module,
    *,
    parts: Iterable[str] | None = None,
    backend: str = "auto",
    skip: Sequence[str] = INT8_SKIP,
) -> nn.Module:
    """Swap ``nn.Linear`` layers for int8 ones, in place; returns ``model`` (eval mode).

    ``backend="dynamic"``: ``torch.ao`` dynamic quantization (int8 weights per channel, activations
    quantized per batch at run time, fbgemm GEMM). ``"weight_only"``: ``Int8Linear``. For a VLA,
    ``parts`` picks sub-modules (default all); for any other module the whole module is swapped.
    """
    kind = resolve_int8_backend(backend)
    dyn = _ao_dynamic_linear() if kind == "dynamic" else None

    def make(layer: nn.Linear) -> nn.Module:
        if layer.weight.device.type != "cpu" and dyn is not None:
            raise ConfigError("int8 'dynamic' quantization runs on CPU only; move the model first")
        return (
            _dynamic_from_linear(layer, dyn) if dyn is not None else Int8Linear.from_linear(layer)
        )

    model.eval()
    targets = _part_modules(model, parts if parts is not None else PARTS)
    if not targets and parts is None:
        if type(model) is nn.Linear:
            raise ConfigError("quantize_dynamic_int8 needs a module containing linear layers")
        _swap_linears(model, make, skip)
        return model
    for parent, attr in targets:
        mod = getattr(parent, attr)
        if type(mod) is nn.Linear:
            setattr(parent, attr, make(mod))
        else:
            _swap_linears(mod, make, skip)
    return model


def fake_quantize_int8_(
    model: nn.Module, parts: Iterable[str] | None = None, skip=INT8_SKIP
) -> int:
    """Round every selected ``nn.Linear`` weight onto its int8 per-channel grid, in place (float)."""
    count = 0

    def visit(mod: nn.Module) -> None:
        nonlocal count
        if type(mod) is nn.Linear:
            q, scale = int8_per_channel(mod.weight)
            with torch.no_grad():
                mod.weight.copy_((q.float() * scale[:, None]).to(mod.weight.dtype))
            count += 1
            return
        for name, child in mod.named_children():
            if not any(s in name for s in skip):
                visit(child)

    for parent, attr in _part_modules(model, parts if parts is not None else PARTS):
        visit(getattr(parent, attr))
    return count


# ---- ternary -----------------------------------------------------------------------------------


def ternary_storage_weight(weight: torch.Tensor) -> torch.Tensor:
    """Weights to store so that a ``BitLinear`` built from them computes ``q * s`` exactly.

    ``q, s = ternary_quantize(W)``. Storing ``q * s`` is not a fixed point (its absmean is s·p,
    p = fraction of non-zeros); storing ``q * s / p`` is: absmean = s and round(q / p) clips to q.
    The stored tensor still takes only the values {-1, 0, 1}·(s / p).
    """
    q, s = ternary_quantize(weight.detach())
    p = (q != 0).float().mean()
    if p == 0:
        return torch.zeros_like(weight)
    return (q.to(weight.dtype) * (s / p)).to(weight.dtype)


def ternarize_model(model: nn.Module, parts: Iterable[str] | None = None) -> nn.Module:
    """Swap the selected parts' linears for ``BitLinear`` (W1.58-A8), in place; returns ``model``."""
    for parent, attr in _part_modules(
        model, parts if parts is not None else DEFAULT_PARTS["ternary"]
    ):
        mod = getattr(parent, attr)
        if type(mod) is nn.Linear:
            setattr(parent, attr, BitLinear.from_linear(mod))
        else:
            ternarize_(mod)
    return model.eval()


# ---- loading a quantized checkpoint -----------------------------------------------------------


def apply_quantization(model: nn.Module, info: Mapping[str, Any] | None) -> nn.Module:
    """Rebuild the runtime structure recorded in ``info`` on a model with loaded weights.

    Ternary needs nothing (the model config already lists the BitLinear parts); int8 swaps the
    linears for int8 kernels (their weights are on the int8 grid already, so this is exact).
    """
    if not info:
        return model
    method = info.get("method")
    if method == "ternary":
        return model
    if method == "int8":
        backend = str(info.get("backend", "auto"))
        try:
            backend = resolve_int8_backend(backend)
        except ConfigError:
            backend = "weight_only"  # a checkpoint made where torch.ao exists, loaded where not
        return quantize_dynamic_int8(model, parts=info.get("parts"), backend=backend)
    raise ConfigError(
        f"checkpoint quantization method {method!r} unknown; this vlastack reads {METHODS}"
    )


__all__ = [
    "DEFAULT_PARTS",
    "INT8_BACKENDS",
    "INT8_SKIP",
    "METHODS",
    "PARTS",
    "Int8Linear",
    "apply_quantization",
    "check_parts",
    "fake_quantize_int8_",
    "int8_per_channel",
    "is_int8_linear",
    "quantize_dynamic_int8",
    "resolve_int8_backend",
    "ternarize_model",
    "ternary_storage_weight",
]
