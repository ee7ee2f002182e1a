"""Two-layer GELU MLP projector from encoder width to model width (LLaVA / Prismatic / OpenVLA)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class MLPProjectorConfig:
    hidden_dim: int | None = None  # default: out_dim
    num_layers: int = 2  # 1 = a single linear map


class MLPProjector(nn.Module):
    """(B, N, D_in) -> (B, N, D_out), token count unchanged."""

    def __init__(
        self, in_dim: int, out_dim: int, hidden_dim: int | None = None, num_layers: int = 2
    ) -> None:
        super().__init__()
        hidden = hidden_dim or out_dim
        if num_layers <= 1:
            self.net: nn.Module = nn.Linear(in_dim, out_dim)
        else:
            self.net = nn.Sequential(
                nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim)
            )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.net(tokens)


def build(cfg: MLPProjectorConfig, in_dim: int, out_dim: int) -> MLPProjector:
    return MLPProjector(in_dim, out_dim, cfg.hidden_dim, cfg.num_layers)
