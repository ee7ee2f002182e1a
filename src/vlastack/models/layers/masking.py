"""Padding and masks in the heads' losses and pooling: padded action steps filled, per-step and
per-dimension loss weights, masked means."""

from __future__ import annotations

import torch


def fill_padded_actions(actions: torch.Tensor, action_is_pad: torch.Tensor) -> torch.Tensor:
    """Replace padded steps by the last valid step before them (zeros if none), (B, H, A).

    Heads whose inputs see the whole chunk (diffusion, flow, FAST, AR bins) would otherwise let the
    padded values leak into the loss of valid steps; repeating the last action is also what the
    data pipeline's edge padding looks like, so the model sees familiar chunks.
    """
    valid = ~action_is_pad
    H = actions.shape[1]
    idx = torch.where(
        valid, torch.arange(H, device=actions.device), torch.zeros_like(valid, dtype=torch.long)
    )
    idx = torch.cummax(idx, dim=1).values
    filled = actions.gather(1, idx[..., None].expand_as(actions))
    any_valid_before = torch.cummax(valid.to(torch.long), dim=1).values.bool()
    return torch.where(any_valid_before[..., None], filled, torch.zeros_like(actions))


def loss_weights(
    action_is_pad: torch.Tensor, action_dim_mask: torch.Tensor | None, action_dim: int
) -> torch.Tensor:
    """(B, H, A) float weights: 1 on valid steps × valid dims."""
    w = (~action_is_pad).to(torch.float32)[..., None].expand(-1, -1, action_dim)
    if action_dim_mask is not None:
        w = w * action_dim_mask.to(torch.float32)[:, None, :]
    return w


def masked_mean(err: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Σ err·w / max(Σ w, 1) over all but the batch dim → (B,)."""
    dims = tuple(range(1, err.dim()))
    return (err * w).sum(dims) / w.sum(dims).clamp(min=1.0)


def masked_mean_pool(context: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
    m = context_mask.to(context.dtype)[..., None]
    return (context * m).sum(1) / m.sum(1).clamp(min=1.0)
