"""Diffusion Policy's 1-D temporal U-Net denoiser with FiLM conditioning (DP-C; Chi et al.
2303.04137, §III-B and Fig. 3).

Layout as in the paper's CNN variant (and LeRobot's ``DiffusionConditionalUnet1d``, which this
matches layer for layer so the two can be timed at the same architecture): for each width in
``down_dims`` two conditional residual blocks, then a stride-2 convolution (all levels but the
last); two residual blocks in the middle; on the way up the skip features are concatenated,
two residual blocks, then a stride-2 transposed convolution; a final Conv→GroupNorm→Mish block
and a 1×1 convolution to the action size. A residual block is Conv→GroupNorm→Mish, FiLM
(per-channel scale and bias from the conditioning vector, through Mish→Linear),
Conv→GroupNorm→Mish, plus the input (through a 1×1 convolution when the width changes).

Plain modules (training, export, the eager runner). The native runner
(``vlastack.runners.native.unet``) runs the same math as ``UnetPlan``: activations kept
time-major (B, T, C), each conv block one native call, and all residual blocks' FiLM layers
stacked into one product per denoising step. PyTorch sends a batch-1 ``conv1d`` this small to
its slow reference convolution (no oneDNN below its size heuristics): ~170 µs per convolution in
LeRobot's U-Net on one core, ~65% of its chunk (BENCHMARKS.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vlastack.errors import ConfigError


class Conv1dBlock(nn.Module):
    """Conv1d → GroupNorm → Mish, length-preserving (padding k // 2)."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, n_groups: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel_size, padding=kernel_size // 2)
        self.norm = nn.GroupNorm(n_groups, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T)
        return F.mish(self.norm(self.conv(x)))


class CondResBlock1d(nn.Module):
    """Conv block, FiLM from ``cond``, conv block, plus the (1×1-projected) input."""

    def __init__(
        self, c_in: int, c_out: int, cond_dim: int, kernel_size: int, n_groups: int, scale: bool
    ) -> None:
        super().__init__()
        self.conv1 = Conv1dBlock(c_in, c_out, kernel_size, n_groups)
        self.conv2 = Conv1dBlock(c_out, c_out, kernel_size, n_groups)
        self.scale = scale
        self.film = nn.Linear(cond_dim, 2 * c_out if scale else c_out)  # applied after Mish
        self.residual = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.conv1(x)
        f = self.film(F.mish(cond)).unsqueeze(-1)
        if self.scale:
            s, b = f.chunk(2, 1)
            h = h * s + b
        else:
            h = h + f
        h = self.conv2(h)
        return h + (self.residual(x) if self.residual is not None else x)


def unet_levels(levels: nn.ModuleList) -> list[tuple[CondResBlock1d, CondResBlock1d, nn.Module]]:
    """A U-Net path's levels as (residual block, residual block, resampling layer)."""
    out = []
    for level in levels:
        assert isinstance(level, nn.ModuleList)
        r1, r2, resample = level[0], level[1], level[2]
        assert isinstance(r1, CondResBlock1d) and isinstance(r2, CondResBlock1d)
        out.append((r1, r2, resample))
    return out


class ConditionalUnet1d(nn.Module):
    """ε(x_t | cond): (B, T, A) noisy actions and a (B, cond_dim) vector → (B, T, A)."""

    def __init__(
        self,
        action_dim: int,
        cond_dim: int,
        down_dims: Sequence[int] = (64, 128, 256),
        kernel_size: int = 5,
        n_groups: int = 8,
        film_scale: bool = True,
    ) -> None:
        super().__init__()
        dims = [int(d) for d in down_dims]
        if not dims or any(d <= 0 or d % n_groups for d in dims):
            raise ConfigError(
                f"diffusion unet: every down_dims entry must be a positive multiple of n_groups "
                f"{n_groups} (GroupNorm), got {list(down_dims)}"
            )
        if kernel_size % 2 == 0:
            raise ConfigError(f"diffusion unet: kernel_size must be odd, got {kernel_size}")
        self.levels = len(dims)
        pairs = [(action_dim, dims[0]), *zip(dims[:-1], dims[1:])]

        def res(c_in: int, c_out: int) -> CondResBlock1d:
            return CondResBlock1d(c_in, c_out, cond_dim, kernel_size, n_groups, film_scale)

        self.down = nn.ModuleList()
        for i, (c_in, c_out) in enumerate(pairs):
            last = i == len(pairs) - 1
            self.down.append(
                nn.ModuleList(
                    [
                        res(c_in, c_out),
                        res(c_out, c_out),
                        nn.Conv1d(c_out, c_out, 3, 2, 1) if not last else nn.Identity(),
                    ]
                )
            )
        self.mid = nn.ModuleList([res(dims[-1], dims[-1]), res(dims[-1], dims[-1])])
        self.up = nn.ModuleList()
        for c_out, c_in in reversed(pairs[1:]):
            self.up.append(
                nn.ModuleList(
                    [
                        res(2 * c_in, c_out),  # the skip features are concatenated
                        res(c_out, c_out),
                        nn.ConvTranspose1d(c_out, c_out, 4, 2, 1),
                    ]
                )
            )
        self.final = Conv1dBlock(dims[0], dims[0], kernel_size, n_groups)
        self.out = nn.Conv1d(dims[0], action_dim, 1)

    def check_horizon(self, horizon: int) -> None:
        step = 2 ** (self.levels - 1)
        if horizon % step:
            raise ConfigError(
                f"diffusion unet: action_horizon {horizon} must be divisible by {step} "
                f"(2^(len(down_dims)-1): the U-Net halves the time axis {self.levels - 1} times); "
                "pick a horizon like 16, or fewer down_dims"
            )

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = x.transpose(1, 2)  # (B, A, T)
        skips = []
        for r1, r2, down in unet_levels(self.down):
            h = r2(r1(h, cond), cond)
            skips.append(h)
            h = down(h)
        for r in self.mid:
            h = r(h, cond)
        for r1, r2, up in unet_levels(self.up):
            h = torch.cat([h, skips.pop()], 1)
            h = up(r2(r1(h, cond), cond))
        return self.out(self.final(h)).transpose(1, 2)
