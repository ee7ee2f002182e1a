"""An exact-math training speedup for the CNN encoders that eager PyTorch lacks, as a plain layer.

**Max pooling on the CPU.** PyTorch's NCHW max-pool forward is a scalar loop (9.2 ms for a
ResNet stem's 8×64×48×48 on one core) while its channels-last kernel is vectorized (2.1 ms),
and the channels-last backward is the slow one (~3× the NCHW one). ``FastMaxPool2d`` runs the
channels-last forward and a scatter-add backward over the same argmax indices: the same outputs
and the same gradients as ``nn.MaxPool2d``. ``accelerate_hf_resnet`` puts it in a
``transformers`` ResNet's stem, in place (no parameters: state-dict keys do not change).

The Conv → BatchNorm folding at inference is not here: the modules stay plain, and the native
runner folds each eval-mode pair when it is built (``vlastack.runners.native.vision``).
Folding in training was measured too and is slower at robot image sizes: a ResNet-18's 45 MB of
weights outweigh its activations at 96² × batch 8, so scaling the weights every step (and back-
propagating through it) costs more than the normalization passes it removes.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


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


def keep_batchnorm_eval(module: nn.Module) -> None:
    """Put every BatchNorm2d under ``module`` in eval mode (its running statistics); encoders
    call it from ``train()`` when their BatchNorm is frozen (``bn_eval``, ``freeze_bn``)."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()


def accelerate_hf_resnet(model: nn.Module) -> nn.Module:
    """Swap a ``transformers`` ResNetModel's stem max pool for ``FastMaxPool2d``, in place (no
    parameters, so the same state-dict keys)."""
    for mod in model.modules():
        if type(mod).__name__ == "ResNetEmbeddings" and type(mod.pooler) is nn.MaxPool2d:
            mod.pooler = fast_max_pool(mod.pooler)
    return model
