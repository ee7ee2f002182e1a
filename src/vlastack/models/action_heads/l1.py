"""OpenVLA-OFT parallel-decoding regression head (Kim, Finn, Liang 2502.19645).

H learned action queries attend bidirectionally among themselves and to the context (OFT's
"empty action embeddings" decoded in one pass), then an MLP-ResNet maps each query to an action;
trained with L1. One forward pass per chunk, no iterative decoding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vlastack.models.action_heads.base import ActionHead
from vlastack.models.layers.config import config_from
from vlastack.models.layers.decoder import CrossDecoder
from vlastack.models.layers.masking import loss_weights, masked_mean


@dataclass
class L1HeadConfig:
    width: int = 256
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 4.0
    resnet_blocks: int = 2
    resnet_hidden: int = 0  # 0 → width


class MLPResNet(nn.Module):
    """OFT's MLPResNet: LN → Linear → ReLU, residual [LN → Linear → ReLU] blocks, LN → Linear."""

    def __init__(self, dim: int, hidden: int, out: int, num_blocks: int) -> None:
        super().__init__()
        self.inp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.ReLU())
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.ReLU())
            for _ in range(num_blocks)
        )
        self.outp = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)
        for b in self.blocks:
            x = x + b(x)
        return self.outp(x)


class L1Head(ActionHead):
    """Parallel decoding of the whole chunk + MLP-ResNet, L1 loss."""

    cuda_graph_blocker = None
    export_kind = "single_pass"
    # bf16 eager vs float32 (tests/test_action_heads_bf16.py): one decoder pass + MLP-ResNet
    bf16_atol = 0.08

    def __init__(
        self,
        context_dim: int,
        action_dim: int,
        action_horizon: int,
        width: int = 256,
        depth: int = 4,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        resnet_blocks: int = 2,
        resnet_hidden: int = 0,
    ) -> None:
        super().__init__(context_dim, action_dim, action_horizon, width)
        self.queries = nn.Parameter(torch.randn(action_horizon, width) * 0.02)
        self.decoder = CrossDecoder(width, depth, num_heads, mlp_ratio)
        self.mlp = MLPResNet(width, resnet_hidden or width, action_dim, resnet_blocks)

    def predict(self, context: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        kvs = self.decoder.context_kv(self.context_proj(context))
        x = self.queries.unsqueeze(0).expand(context.shape[0], -1, -1)
        return self.mlp(self.decoder(x, kvs, context_mask))

    def loss(self, context, context_mask, actions, action_is_pad, action_dim_mask=None):
        self._check(context, context_mask, actions)
        err = (self.predict(context, context_mask) - actions).abs()
        return masked_mean(err, loss_weights(action_is_pad, action_dim_mask, self.action_dim))

    @torch.no_grad()
    def sample_actions(self, context, context_mask, generator=None):
        """Deterministic; ``generator`` is unused."""
        self._check(context, context_mask)
        return self.predict(context, context_mask)


def build(cfg=None, *, context_dim: int, action_dim: int, action_horizon: int) -> L1Head:
    return L1Head(context_dim, action_dim, action_horizon, **vars(config_from(L1HeadConfig, cfg)))
