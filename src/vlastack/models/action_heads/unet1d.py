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

``forward`` is the module path (training, export, the reference for tests). At inference the
head runs ``UnetPlan``: the same math with activations kept time-major (B, T, C), every
convolution an im2col product through the prepacked GEMM, and all residual blocks' FiLM layers
stacked into one product per denoising step. PyTorch sends a batch-1 ``conv1d`` this small to
its slow reference convolution (no oneDNN below its size heuristics): ~170 µs per convolution in
LeRobot's U-Net on one core, ~65% of its chunk (BENCHMARKS.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vlastack import native
from vlastack.errors import ConfigError
from vlastack.models.layers.linear import _onednn_plan, plan_linear, plan_linear_fns


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


def _levels(levels: nn.ModuleList) -> list[tuple[CondResBlock1d, CondResBlock1d, nn.Module]]:
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
        for r1, r2, down in _levels(self.down):
            h = r2(r1(h, cond), cond)
            skips.append(h)
            h = down(h)
        for r in self.mid:
            h = r(h, cond)
        for r1, r2, up in _levels(self.up):
            h = torch.cat([h, skips.pop()], 1)
            h = up(r2(r1(h, cond), cond))
        return self.out(self.final(h)).transpose(1, 2)


class UnetPlan:
    """``ConditionalUnet1d.forward`` as one flat loop over time-major activations (B, T, C).

    Each convolution is an im2col product: the padded input's windows (``unfold``, one copy)
    times the kernel as a (C_out, C_in·k) matrix, oneDNN-prepacked on a CPU. The stride-2
    transposed convolution (kernel 4, padding 1) is one product too: output step 2m reads inputs
    m-1, m (taps 3, 1) and 2m+1 reads m, m+1 (taps 2, 0), so a 3-wide window times a
    (2·C_out, 3·C_in) matrix gives both phases, and a reshape interleaves them. GroupNorm runs on
    the channel-first view. Same math as the modules up to float rounding
    (tests/test_unet_denoiser.py).
    """

    def __init__(self, net: ConditionalUnet1d) -> None:
        onednn = _onednn_plan(net.out.weight)
        self.lin = plan_linear_fns(onednn)[0]
        # native kernels (float32 CPU): each conv block is one call (_run_native), weights
        # packed tap-major, (C_out, k·C_in) with index j·C_in + c
        self.native = nat = native.usable(net.out.weight)

        def conv(c: nn.Conv1d) -> tuple:
            k = c.kernel_size[0]
            if nat:
                return (native.pack_conv1d(c.weight, c.bias), k, c.stride[0], c.padding[0])
            w = c.weight.detach().reshape(c.out_channels, -1)  # (C_out, C_in·k), index c·k + j
            return (plan_linear(w, c.bias, onednn), k, c.stride[0], c.padding[0])

        def block(b: Conv1dBlock) -> tuple:
            n = b.norm
            return (conv(b.conv), n.num_groups, n.weight.detach(), n.bias.detach(), n.eps)

        films: list[nn.Linear] = []
        pieces: list[int] = []

        def resblock(r: CondResBlock1d) -> tuple:
            start = len(pieces)  # where this block's (scale, bias) or (bias,) pieces begin
            films.append(r.film)
            C = r.conv1.conv.out_channels
            pieces.extend([C, C] if r.scale else [C])
            res = (
                None
                if r.residual is None
                else plan_linear(r.residual.weight.detach().squeeze(-1), r.residual.bias, onednn)
            )
            return (block(r.conv1), block(r.conv2), start, C, r.scale, res)

        self.down = []
        for r1, r2, down in _levels(net.down):
            self.down.append(
                (resblock(r1), resblock(r2), conv(down) if isinstance(down, nn.Conv1d) else None)
            )
        self.mid = [resblock(r) for r in net.mid]  # type: ignore[arg-type]
        self.up = []
        for r1, r2, up in _levels(net.up):
            assert isinstance(up, nn.ConvTranspose1d)
            W = up.weight.detach()  # (C_in, C_out, 4)
            c_in, c_out = W.shape[0], W.shape[1]
            M = W.new_zeros(2, c_out, c_in, 3)  # [phase, out, in, window position]
            M[0, :, :, 0], M[0, :, :, 1] = W[:, :, 3].T, W[:, :, 1].T
            M[1, :, :, 1], M[1, :, :, 2] = W[:, :, 2].T, W[:, :, 0].T
            assert up.bias is not None
            bias = torch.cat([up.bias.detach(), up.bias.detach()])
            up_pack: tuple
            if nat:  # tap-major: (2·C_out, 3, C_in)
                up_pack = native.pack_linear(M.permute(0, 1, 3, 2).reshape(2 * c_out, -1), bias)
            else:
                up_pack = plan_linear(M.reshape(2 * c_out, -1), bias, onednn)
            self.up.append((resblock(r1), resblock(r2), up_pack))
        self.final = block(net.final)
        self.out = plan_linear(net.out.weight.detach().squeeze(-1), net.out.bias, onednn)
        self.film_split = pieces  # the FiLM row cut per block: (scale, bias) or (bias,)
        self.film_cols = [sum(pieces[:i]) for i in range(len(pieces))]  # piece → column
        # all residual blocks' FiLM layers stacked: (Σ widths, cond_dim)
        self.film_weight = torch.cat([f.weight.detach() for f in films])
        self.film_bias = torch.cat([f.bias.detach() for f in films])
        # what a sampler caches against this plan (DiffusionHead._unet_film): FiLM's step term
        # per step value, and its context term for the current chunk
        self.step_film: dict[int, torch.Tensor] = {}
        self.pooled_film: tuple | None = None

    def _conv(self, x: torch.Tensor, c: tuple) -> torch.Tensor:
        """(B, T, C_in) → (B, T', C_out) for a k-tap, stride-s, padding-p convolution."""
        wb, k, s, p = c
        B, _, C = x.shape
        if k == 1:
            return self.lin(x, wb)
        cols = F.pad(x, (0, 0, p, p)).unfold(1, k, s)  # (B, T', C, k)
        T2 = cols.shape[1]
        return self.lin(cols.reshape(B * T2, C * k), wb).view(B, T2, -1)

    def _block(self, x: torch.Tensor, b: tuple) -> torch.Tensor:
        """Conv → GroupNorm → Mish, (B, T, C) in and out (GroupNorm on the (B, C, T) view)."""
        c, groups, gw, gb, eps = b
        y = self._conv(x, c)
        y = F.group_norm(y.transpose(1, 2), groups, gw, gb, eps)  # contiguous (B, C, T)
        return F.mish(y, inplace=True).transpose(1, 2)

    def _res(self, x: torch.Tensor, r: tuple, film: torch.Tensor) -> torch.Tensor:
        b1, b2, i, C, scale, res = r
        h = self._block(x, b1)
        if scale:
            h = torch.addcmul(film[i + 1], h, film[i])
        else:
            h = h + film[i]
        h = self._block(h, b2)
        return h + (self.lin(x, res) if res is not None else x)

    def run(self, x: torch.Tensor, film: torch.Tensor) -> torch.Tensor:
        """(B, T, A) noisy actions and every residual block's FiLM output (B, Σ widths), i.e.
        mish(cond) @ ``film_weight``ᵀ + ``film_bias`` (DiffusionHead caches its terms) → ε̂."""
        if self.native and x.dtype is torch.float32 and not x.requires_grad:
            return self._run_native(x, film)
        film = film.unsqueeze(1).split(self.film_split, -1)  # (B, 1, C) pieces, one op
        h = x
        skips = []
        for r1, r2, down in self.down:
            h = self._res(self._res(h, r1, film), r2, film)
            skips.append(h)
            if down is not None:
                h = self._conv(h, down)
        for r in self.mid:
            h = self._res(h, r, film)
        for r1, r2, up in self.up:
            h = torch.cat([h, skips.pop()], -1)
            h = self._res(self._res(h, r1, film), r2, film)
            B, T, C = h.shape
            cols = F.pad(h, (0, 0, 1, 1)).unfold(1, 3, 1).reshape(B * T, C * 3)
            h = self.lin(cols, up).view(B, 2 * T, -1)  # (B, T, 2·C_out) → phases interleaved
        return self.lin(self._block(h, self.final), self.out)

    def _run_native(self, x: torch.Tensor, film: torch.Tensor) -> torch.Tensor:
        """``run`` on vlastack's native kernels: a conv block (convolution read in place from
        the padded input, GroupNorm, Mish, then FiLM or the residual add) is one call, where
        the torch path runs ~10 ops (pad, im2col copy, product, transposes, GroupNorm, Mish,
        FiLM)."""
        conv, lin = native.conv1d, native.linear
        film = film.contiguous()  # (B, Σ widths): the blocks' FiLM rows are slices of it
        cols = self.film_cols

        def res(h: torch.Tensor, r: tuple) -> torch.Tensor:
            b1, b2, piece, C, scale, rp = r
            i = cols[piece]
            (p1, k1, s1, q1), *n1 = b1
            (p2, k2, s2, q2), *n2 = b2
            f = (
                (film[:, i : i + C], film[:, i + C : i + 2 * C])
                if scale
                else (None, film[:, i : i + C])
            )
            h1 = conv(h, p1, k1, s1, q1, tuple(n1), f)
            return conv(h1, p2, k2, s2, q2, tuple(n2), residual=h if rp is None else lin(h, rp))

        h = x
        skips = []
        for r1, r2, down in self.down:
            h = res(res(h, r1), r2)
            skips.append(h)
            if down is not None:
                h = conv(h, *down)
        for r in self.mid:
            h = res(h, r)
        for r1, r2, up in self.up:
            h = res(res(torch.cat([h, skips.pop()], -1), r1), r2)
            B, T, _ = h.shape
            h = conv(h, up, 3, 1, 1).view(B, 2 * T, -1)  # (B, T, 2·C_out) → phases interleaved
        (pf, kf, sf, qf), *nf = self.final
        return lin(conv(h, pf, kf, sf, qf, tuple(nf)), self.out)
