"""TokenLearner: learn ``num_tokens`` spatial attention maps and pool the input tokens with them.

RT-1 (Brohan et al. 2022) reduces each image's 81 EfficientNet tokens to 8 with TokenLearner
(Ryoo et al. 2021): an MLP scores every input token for each output token, a softmax over the
input tokens turns scores into weights, and each output is the weighted sum of (projected) inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class TokenLearnerConfig:
    num_tokens: int = 8
    hidden_dim: int = 64


class TokenLearner(nn.Module):
    """(B, N, D_in) -> (B, num_tokens, D_out)."""

    def __init__(
        self, in_dim: int, out_dim: int, num_tokens: int = 8, hidden_dim: int = 64
    ) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(in_dim)
        self.score = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, num_tokens)
        )
        self.value = nn.Linear(in_dim, out_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.norm(tokens)
        weights = torch.softmax(self.score(x), dim=1)  # (B, N, S): each output sums to 1 over N
        return weights.transpose(1, 2) @ self.value(x)  # (B, S, D_out)


def build(cfg: TokenLearnerConfig, in_dim: int, out_dim: int) -> TokenLearner:
    return TokenLearner(in_dim, out_dim, cfg.num_tokens, cfg.hidden_dim)
