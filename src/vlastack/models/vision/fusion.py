"""Exact-math speedups for the CNN encoders, in training and at inference.

Written here because eager PyTorch has neither (inductor folds BatchNorm only into frozen
inference graphs, and its CPU max-pool kernels are what is slow):

* **Conv → BatchNorm folding at inference.** A BatchNorm that normalizes with its running
  statistics (eval mode) is a per-channel affine map, so ``bn(conv(x, W)) == conv(x, W·s) +
  (β − μ·s)`` with ``s = γ / sqrt(σ² + ε)``: without autograd one convolution replaces a
  convolution plus a normalization pass, with the folded weights cached until any of them
  changes (serving a ResNet-18 at 96², batch 8: see BENCHMARKS.md). A BatchNorm in training mode
  (batch statistics), or any call with autograd on, runs unchanged.
* **Max pooling on the CPU.** PyTorch's NCHW max-pool forward is a scalar loop (9.2 ms for a
  ResNet stem's 8×64×48×48 on one core) while its channels-last kernel is vectorized (2.1 ms),
  and the channels-last backward is the slow one (~3× the NCHW one). ``FastMaxPool2d`` runs the
  channels-last forward and a scatter-add backward over the same argmax indices: the same outputs
  and the same gradients as ``nn.MaxPool2d``.

Folding in training was measured too and is slower at robot image sizes: a ResNet-18's 45 MB of
weights outweigh its activations at 96² × batch 8, so scaling the weights every step (and back-
propagating through it) costs more than the normalization passes it removes.
``accelerate_hf_resnet`` applies both to a ``transformers`` ResNet in place and
``FoldingSequential`` to MobileNetV2's blocks; state-dict keys do not change, so checkpoints and
pretrained weights load as before.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlastack.models.layers.inference import derived, fast_inference


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
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


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    assert bn.running_var is not None and bn.running_mean is not None
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = bn.weight * scale
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    if conv.bias is not None:
        shift = shift + conv.bias * scale
    return conv.weight * scale.view(-1, 1, 1, 1), shift


def conv_bn(conv: nn.Module, bn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``bn(conv(x))``; folded into one convolution when ``bn`` uses its running statistics and
    the inference fast path is on (autograd off, not tracing, exporting or compiling; see
    ``layers.inference.fast_inference``, whose ``reference_inference()`` turns this off)."""
    if fast_inference() and _foldable(conv, bn):
        return _folded_conv(conv, bn, x)  # type: ignore[arg-type]
    return bn(conv(x))


def _folded_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    params = [t for t in (conv.weight, conv.bias, bn.weight, bn.bias) if t is not None]
    # BatchNorm updates its running statistics inside its kernel, which does not bump their
    # version counters; the counter it bumps from Python on every training step does
    params += [bn.running_mean, bn.running_var, bn.num_batches_tracked]  # type: ignore[list-item]
    w, b = derived(conv, "_bn_fold", params, lambda: _fold(conv, bn))
    return F.conv2d(x, w, b, conv.stride, conv.padding, conv.dilation, conv.groups)


class _ChannelsLastMaxPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, kernel: Any, stride: Any, padding: Any) -> torch.Tensor:
        y, idx = torch.ops.aten.max_pool2d_with_indices(
            x.contiguous(memory_format=torch.channels_last), kernel, stride, padding
        )
        # indices are offsets h*W + w inside each (sample, channel) plane in either layout
        ctx.save_for_backward(idx.contiguous())
        ctx.in_shape = x.shape
        return y.contiguous()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:
        (idx,) = ctx.saved_tensors
        B, C, H, W = ctx.in_shape
        # accumulate overlapping windows in float32, as the stock kernel does for bf16/fp16
        acc = torch.float64 if grad.dtype == torch.float64 else torch.float32
        out = torch.zeros(B * C, H * W, dtype=acc, device=grad.device)
        out.scatter_add_(1, idx.view(B * C, -1), grad.contiguous().view(B * C, -1).to(acc))
        return out.view(B, C, H, W).to(grad.dtype), None, None, None


class FastMaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` whose CPU path uses the vectorized channels-last forward (see above);
    other devices, dilation, ``ceil_mode``, ``return_indices`` and graph capture take the stock
    op."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if (
            x.device.type != "cpu"
            or x.dim() != 4
            or self.dilation not in (1, (1, 1))
            or self.ceil_mode
            or self.return_indices
            or not x.is_floating_point()
            # graphs (tracing, ONNX, inductor) get the plain op, which they lower themselves
            or torch.jit.is_tracing()
            or torch.onnx.is_in_onnx_export()
            or torch.compiler.is_compiling()
        ):
            return super().forward(x)
        if not torch.is_grad_enabled() or not x.requires_grad:
            y = F.max_pool2d(
                x.contiguous(memory_format=torch.channels_last),
                self.kernel_size,
                self.stride,
                self.padding,
            )
            return y.contiguous()
        pair = nn.modules.utils._pair
        return _ChannelsLastMaxPool.apply(
            x, pair(self.kernel_size), pair(self.stride), pair(self.padding)
        )


def fast_max_pool(pool: nn.MaxPool2d) -> FastMaxPool2d:
    return FastMaxPool2d(
        pool.kernel_size,
        pool.stride,
        pool.padding,
        pool.dilation,
        pool.return_indices,
        pool.ceil_mode,
    )


class ConvBNAct(nn.Module):
    """conv → BatchNorm → activation with the fold above; attribute names follow
    ``transformers``' ``ResNetConvLayer`` / ``ResNetShortCut`` so their state-dict keys stay."""

    def __init__(
        self,
        convolution: nn.Module,
        normalization: nn.Module,
        activation: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.convolution = convolution
        self.normalization = normalization
        if activation is not None:
            self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = conv_bn(self.convolution, self.normalization, x)
        act = getattr(self, "activation", None)
        return y if act is None else act(y)


class FoldingSequential(nn.Sequential):
    """``nn.Sequential`` that folds each Conv2d → BatchNorm2d pair of its children (same keys)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        mods = list(self)
        fold = fast_inference()
        i = 0
        while i < len(mods):
            if fold and i + 1 < len(mods) and _foldable(mods[i], mods[i + 1]):
                x = _folded_conv(mods[i], mods[i + 1], x)  # type: ignore[arg-type]
                i += 2
            else:
                x = mods[i](x)
                i += 1
        return x


def keep_batchnorm_eval(module: nn.Module) -> None:
    """Put every BatchNorm2d under ``module`` in eval mode (its running statistics); encoders
    call it from ``train()`` when their BatchNorm is frozen (``bn_eval``, ``freeze_bn``)."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()


def accelerate_hf_resnet(model: nn.Module) -> nn.Module:
    """Swap a ``transformers`` ResNetModel's conv layers, shortcuts and stem pool for the
    folding / fast-pool modules above, in place (same parameters, same state-dict keys)."""
    for name, mod in list(model.named_modules()):
        kind = type(mod).__name__
        if kind not in ("ResNetConvLayer", "ResNetShortCut", "ResNetEmbeddings"):
            continue
        if kind == "ResNetEmbeddings":
            if type(mod.pooler) is nn.MaxPool2d:
                mod.pooler = fast_max_pool(mod.pooler)
            continue
        new = ConvBNAct(mod.convolution, mod.normalization, getattr(mod, "activation", None))
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, new)
    return model
