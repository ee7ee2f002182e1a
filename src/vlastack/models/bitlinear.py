"""BitVLA / BitNet b1.58 linear layer: ternary weights and 8-bit activations, trained with the STE.

Weights are quantized per tensor with absmean scaling, ``W_q = clip(round(W / s), -1, 1) * s`` with
``s = mean|W|`` (values in {-1, 0, 1} times one scale, 1.58 bits); activations per token with absmax
scaling to 8 bits. The full-precision "latent" weights are kept and trained; the straight-through
estimator passes gradients through the rounding (Ma et al. 2024, BitNet b1.58; BitVLA 2506.07530).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vlastack.errors import ConfigError

_EPS = 1e-5


def ternary_quantize(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (ternary int8 tensor in {-1, 0, 1}, scalar scale) with ``weight ≈ q * scale``."""
    scale = weight.abs().mean().clamp_min(_EPS)
    q = (weight / scale).round().clamp(-1, 1)
    return q.to(torch.int8), scale


def activation_quant_8bit(x: torch.Tensor) -> torch.Tensor:
    """Per-token absmax fake quantization to int8 levels (value stays in float, STE gradient)."""
    scale = 127.0 / x.abs().amax(dim=-1, keepdim=True).clamp_min(_EPS)
    xq = (x * scale).round().clamp(-128, 127) / scale
    return x + (xq - x).detach()


class BitLinear(nn.Linear):
    """Drop-in ``nn.Linear`` whose forward uses W1.58-A8 fake quantization (training-aware)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        quantize_activations: bool = True,
    ) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.quantize_activations = quantize_activations

    def quantized_weight(self) -> torch.Tensor:
        q, scale = ternary_quantize(self.weight)
        wq = q.to(self.weight.dtype) * scale
        # Straight-through: forward sees wq, backward treats quantization as identity.
        return self.weight + (wq - self.weight).detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.quantize_activations:
            x = activation_quant_8bit(x)
        return F.linear(x, self.quantized_weight(), self.bias)

    @classmethod
    def from_linear(cls, layer: nn.Linear, quantize_activations: bool = True) -> BitLinear:
        new = cls(
            layer.in_features,
            layer.out_features,
            bias=layer.bias is not None,
            quantize_activations=quantize_activations,
        )
        new.to(device=layer.weight.device, dtype=layer.weight.dtype)
        with torch.no_grad():
            new.weight.copy_(layer.weight)
            if layer.bias is not None and new.bias is not None:
                new.bias.copy_(layer.bias)
        new.weight.requires_grad_(layer.weight.requires_grad)
        return new


def ternarize_(
    module: nn.Module,
    *,
    skip: tuple[str, ...] = ("lm_head",),
    quantize_activations: bool = True,
) -> int:
    """Swap every ``nn.Linear`` inside ``module`` (in place) for a ``BitLinear``; return the count.

    Child names containing one of ``skip`` are kept in full precision (BitNet keeps the output
    head and embeddings in high precision). Tied weights are not shared after the swap.
    """
    if not isinstance(module, nn.Module):
        raise ConfigError(f"ternarize_ expects an nn.Module, got {type(module).__name__}")
    count = 0
    for name, child in list(module.named_children()):
        if any(s in name for s in skip):
            continue
        if isinstance(child, nn.Linear) and not isinstance(child, BitLinear):
            setattr(module, name, BitLinear.from_linear(child, quantize_activations))
            count += 1
        else:
            count += ternarize_(child, skip=skip, quantize_activations=quantize_activations)
    return count
