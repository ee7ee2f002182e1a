"""Blockwise-causal attention masks from (input_mask, ar_mask), exactly as openpi ``make_attn_mask``.

Token i may attend to token j iff cumsum(ar)[j] ≤ cumsum(ar)[i] and both are valid. An ``ar``
of 1 starts a new block that earlier tokens cannot see; 0 joins the previous block. π0 prefix
(images, text) = all 0, state token = 1, first action token = 1, other actions = 0.
"""

from __future__ import annotations

import torch


def make_attn_mask(input_mask: torch.Tensor, ar_mask: torch.Tensor) -> torch.Tensor:
    """(B, N) bool valid mask and (B, N) or (N,) int/bool ar mask → (B, N, N) bool, True = attend.

    Examples (one row each): ar ``[1,1,1,1]`` is plain causal attention; ``[0,0,1,1]`` is a
    prefix-LM (bidirectional on the first two, causal after); ``[1,0,0,1,0,0]`` is two
    bidirectional blocks where the second sees the first.
    """
    ar = ar_mask.to(torch.long)
    if ar.dim() == 1:
        ar = ar.unsqueeze(0).expand(input_mask.shape[0], -1)
    cum = torch.cumsum(ar, dim=1)
    attn = cum[:, None, :] <= cum[:, :, None]
    valid = input_mask[:, None, :] & input_mask[:, :, None]
    return attn & valid


def positions_from_mask(input_mask: torch.Tensor) -> torch.Tensor:
    """RoPE/learned positions that skip padding: cumsum(mask) − 1, (B, N) long."""
    return torch.cumsum(input_mask.to(torch.long), dim=1) - 1
