"""The native runner's form of a CNN vision encoder: every Conv2d → BatchNorm2d pair that
normalizes with its running statistics (eval mode) folded into one convolution, built once
from the plain modules when the runner is built.

An eval-mode BatchNorm is a per-channel affine map, so ``bn(conv(x, W)) == conv(x, W·s) +
(β − μ·s)`` with ``s = γ / sqrt(σ² + ε)``: one convolution replaces a convolution plus a
normalization pass over its output (MobileNetV2 and a ResNet-18 at 96²: BENCHMARKS.md, "Runner
seam"). The pairs are found by structure, per module type (``VISION_RULES``):

- ``nn.Sequential``: each Conv2d child directly followed by a foldable BatchNorm2d child
  (MobileNetV2's blocks, ``models/vision/mobilenet_v2.py``);
- ``transformers``' ``ResNetConvLayer`` / ``ResNetShortCut`` (conv → norm [→ activation]):
  ``hf_resnet``.

The folded weights are copies owned by the runner's module tree (a shallow copy of the encoder:
its own child tables, every other parameter shared), never stored on the modules: the encoder
the caller holds is unchanged and trains as written. Rebuild the runner after the weights
change (``Policy`` does, from ``runners.structure_key``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from vlastack.runners.native.rewrite import rewrite, shallow_copy


def foldable(conv: nn.Module, bn: nn.Module) -> bool:
    """``bn(conv(x))`` is one convolution: a plain zero-padded Conv2d and an eval-mode
    BatchNorm2d over its output channels with running statistics."""
    return (
        type(conv) is nn.Conv2d
        and conv.padding_mode == "zeros"
        and isinstance(bn, nn.BatchNorm2d)
        and not bn.training
        and bn.track_running_stats
        and bn.running_mean is not None
        and bn.running_var is not None
        and bn.num_features == conv.out_channels
    )


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new Conv2d computing ``bn(conv(x))`` (same dtype and device; weights copied)."""
    assert bn.running_var is not None and bn.running_mean is not None
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = bn.weight * scale
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    if conv.bias is not None:
        shift = shift + conv.bias * scale
    w = conv.weight
    out = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,  # type: ignore[arg-type]
        conv.stride,  # type: ignore[arg-type]
        conv.padding,  # type: ignore[arg-type]
        conv.dilation,  # type: ignore[arg-type]
        conv.groups,
        bias=True,
        device="meta",
    )
    out.weight = nn.Parameter((w * scale.view(-1, 1, 1, 1)).to(w.dtype), requires_grad=False)
    out.bias = nn.Parameter(shift.to(w.dtype), requires_grad=False)
    return out.eval()


def _sequential(seq: nn.Module) -> nn.Module | None:
    mods = [m for m in seq._modules.values() if m is not None]
    if not any(foldable(a, b) for a, b in zip(mods, mods[1:])):
        return None
    out: list[nn.Module] = []
    i = 0
    while i < len(mods):
        if i + 1 < len(mods) and foldable(mods[i], mods[i + 1]):
            out.append(fold_conv_bn(mods[i], mods[i + 1]))  # type: ignore[arg-type]
            i += 2
        else:
            out.append(fold_encoder(mods[i]))  # type: ignore[arg-type]
            i += 1
    return nn.Sequential(*out)


def _conv_norm(layer: nn.Module) -> nn.Module | None:
    """``transformers`` ResNet layers: ``normalization(convolution(x))`` (then ``activation``)."""
    conv, bn = layer._modules.get("convolution"), layer._modules.get("normalization")
    if conv is None or bn is None or not foldable(conv, bn):
        return None
    out = shallow_copy(layer)
    out._modules["convolution"] = fold_conv_bn(conv, bn)  # type: ignore[arg-type]
    out._modules["normalization"] = nn.Identity()
    return out


# module type (or, for optional libraries, "module path:class name") → its folded form
VISION_RULES: dict[type | str, Callable[[nn.Module], nn.Module | None]] = {
    nn.Sequential: _sequential,
    "transformers.models.resnet.modeling_resnet:ResNetConvLayer": _conv_norm,
    "transformers.models.resnet.modeling_resnet:ResNetShortCut": _conv_norm,
}


def _rule(module: nn.Module) -> Callable[[nn.Module], nn.Module | None] | None:
    cls = type(module)
    return VISION_RULES.get(cls) or VISION_RULES.get(f"{cls.__module__}:{cls.__qualname__}")


def fold_encoder(module: nn.Module) -> nn.Module:
    """``module`` with every foldable Conv2d → BatchNorm2d pair folded: the module itself where
    nothing under it folds, else a shallow copy (the original is untouched)."""
    return rewrite(module, _rule)


def native_vision(vision: nn.Module) -> nn.Module | None:
    """The VLA's ``MultiCameraEncoder`` with its pairs folded (same call signature, same
    ``encode_frames``), or None when nothing folds (the module runs as it is)."""
    fast = fold_encoder(vision)
    return None if fast is vision else fast
