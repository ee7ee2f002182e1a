"""Helpers shared by the model families: typed configs from plain dicts, FiLM, freezing, and
whether this CPU has bf16 kernels.

A component's config dataclass sits beside it; builders receive a plain ``dict`` of keyword
arguments (what a recipe or ``config.json`` holds) and turn it into that dataclass here, so an
unknown or misspelled field is a ``ConfigError`` with a "did you mean" instead of a ``TypeError``.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from typing import Any, TypeVar

import torch
from torch import nn

from vlastack.errors import ConfigError

C = TypeVar("C")


def make_config(cls: type[C], kwargs: Mapping[str, Any] | C | None, where: str) -> C:
    """Build dataclass ``cls`` from ``kwargs``; unknown keys raise ConfigError naming ``where``."""
    if kwargs is None:
        return cls()
    if isinstance(kwargs, cls):
        return kwargs
    if not isinstance(kwargs, Mapping):
        raise ConfigError(
            f"{where} must be a dict of keyword arguments, got {type(kwargs).__name__}"
        )
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    for key in kwargs:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=2, cutoff=0.5)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ConfigError(
                f"{where}: unknown field '{key}'.{hint} Known fields: {', '.join(names)}"
            )
    return cls(**kwargs)


class FiLM(nn.Module):
    """Feature-wise linear modulation ``x * (1 + gamma(c)) + beta(c)`` (Perez et al. 2018; RT-1).

    The projection is zero-initialised so a freshly added FiLM layer is the identity and a
    pretrained encoder keeps its features at step 0 (RT-1 does the same for EfficientNet).
    """

    def __init__(self, cond_dim: int, num_channels: int) -> None:
        super().__init__()
        self.proj = nn.Linear(cond_dim, 2 * num_channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.proj(cond).chunk(2, dim=-1)  # (M, C) each
        # x is (M, C, h, w) for conv features or (M, N, C) for tokens.
        if x.dim() == 4:
            return x * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]
        return x * (1 + gamma[:, None, :]) + beta[:, None, :]


def freeze_(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over N of (B, N, D) tokens where ``mask`` (B, N) is True."""
    if mask is None:
        return tokens.mean(dim=1)
    w = mask.to(tokens.dtype).unsqueeze(-1)
    return (tokens * w).sum(1) / w.sum(1).clamp_min(1.0)


def cpu_bf16_kernels() -> bool:
    """oneDNN runs bf16 on this CPU (AVX-512 BW/VL/DQ or AVX-NE-CONVERT): what CPU autocast's bf16
    products and the heads' prepacked bf16 linears need. Without it torch falls back to
    reference loops (a 512² bf16 matmul: 394 ms vs 8 ms in fp32 on an AVX2-only EPYC) and
    oneDNN's bf16 weight reorder raises."""
    global _CPU_BF16
    if _CPU_BF16 is None:
        _CPU_BF16 = bool(
            torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
        )
    return _CPU_BF16


_CPU_BF16: bool | None = None
