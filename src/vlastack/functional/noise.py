"""Gaussian noise drawn from a seeded generator on whatever device the generator lives on.

A policy keeps one CPU ``torch.Generator`` (seeded, cheap to reset per episode) whichever device
the model runs on; ``torch.randn(..., generator=g, device="cuda")`` refuses a CPU generator. Drawing
on the generator's device and then moving the (B, H, A)-sized tensor costs microseconds and gives
the same samples for the same seed on the CPU and the GPU.
"""

from __future__ import annotations

import torch


def randn(
    shape: tuple[int, ...] | torch.Size,
    generator: torch.Generator | None,
    device: torch.device | str,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """``torch.randn(shape)`` on ``device``; with a generator, drawn where the generator lives."""
    if generator is None or torch.device(generator.device) == torch.device(device):
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)
    z = torch.randn(shape, generator=generator, device=generator.device, dtype=dtype)
    return z.to(device, non_blocking=True)
