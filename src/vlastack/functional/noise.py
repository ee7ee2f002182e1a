"""Gaussian noise drawn from a seeded generator on whatever device the generator lives on.

A policy keeps one CPU ``torch.Generator`` (seeded, cheap to reset per episode) whichever device
the model runs on; ``torch.randn(..., generator=g, device="cuda")`` refuses a CPU generator. Drawing
on the generator's device and then moving the (B, H, A)-sized tensor costs microseconds and gives
the same samples for the same seed on the CPU and the GPU.

``RowGenerators`` gives each batch row its own generator: a server batching several clients draws
client i's noise from client i's session, so a batched client gets the chunk it gets alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class RowGenerators:
    """One generator per batch row (or per block of consecutive rows: a sampler that draws N
    samples per observation repeats each row N times, ``repeat_interleave``). Passed where a
    ``torch.Generator`` goes; only ``randn`` below looks inside. A None entry draws from torch's
    global generator."""

    def __init__(self, generators: Sequence[torch.Generator | None]) -> None:
        if not generators:
            raise ValueError("RowGenerators needs at least one generator")
        self.generators = list(generators)
        self.device = next((g.device for g in self.generators if g is not None), "cpu")


def randn(
    shape: tuple[int, ...] | torch.Size,
    generator: torch.Generator | RowGenerators | None,
    device: torch.device | str,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """``torch.randn(shape)`` on ``device``; with a generator, drawn where the generator lives;
    with ``RowGenerators``, row block i from generator i."""
    if isinstance(generator, RowGenerators):
        gens = generator.generators
        if len(shape) == 0 or shape[0] % len(gens):
            raise ValueError(
                f"noise of shape {tuple(shape)} cannot be split over {len(gens)} row generators"
            )
        k = shape[0] // len(gens)
        rows = [randn((k, *shape[1:]), g, device, dtype) for g in gens]
        return torch.cat(rows)
    if generator is None or torch.device(generator.device) == torch.device(device):
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)
    z = torch.randn(shape, generator=generator, device=generator.device, dtype=dtype)
    return z.to(device, non_blocking=True)
