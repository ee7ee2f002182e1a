"""A tiny stand-in action head with the ARCHITECTURE.md contract, for model-composition tests only."""

from __future__ import annotations

import torch
from torch import nn


class StubHead(nn.Module):
    """Mean-pooled context -> linear -> (B, H, A); MSE loss; sampling adds seeded noise."""

    def __init__(self, context_dim: int, action_dim: int, action_horizon: int) -> None:
        super().__init__()
        self.action_dim, self.action_horizon = action_dim, action_horizon
        self.net = nn.Linear(context_dim, action_dim * action_horizon)

    def _predict(self, context, context_mask):
        w = context_mask.float().unsqueeze(-1)
        pooled = (context * w).sum(1) / w.sum(1).clamp_min(1)
        return self.net(pooled).view(-1, self.action_horizon, self.action_dim)

    def loss(self, context, context_mask, actions, action_is_pad, action_dim_mask=None):
        err = (self._predict(context, context_mask) - actions).pow(2).mean(-1)
        w = (~action_is_pad).float()
        return (err * w).sum(1) / w.sum(1).clamp_min(1)

    def sample_actions(self, context, context_mask, generator=None):
        pred = self._predict(context, context_mask)
        noise = torch.randn(pred.shape, generator=generator) * 0.01
        return pred + noise


def stub_head_builder(name, kwargs, context_dim, action_dim, action_horizon):
    return StubHead(context_dim, action_dim, action_horizon)
