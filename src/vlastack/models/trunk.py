"""The observation trunk: ``nn.TransformerEncoder`` layers over the token prefix.

A policy's trunk is a few ``nn.TransformerEncoderLayer`` over a short token prefix (ACT's
observation encoder, Octo's transformer, the demo's 2-layer trunk). Plain torch modules; the
native runner (``vlastack.runners.native.trunk``) runs them from weight packs made once.
"""

from __future__ import annotations

import torch
from torch import nn


def build_trunk(width: int, heads: int, layers: int) -> nn.TransformerEncoder:
    """Pre-norm transformer encoder layers (FFN 4·width, ReLU, no dropout) over (B, N, width)."""
    layer = nn.TransformerEncoderLayer(
        width, heads, 4 * width, dropout=0.0, batch_first=True, norm_first=True
    )
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


def encoder_forward(trunk: nn.Module, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``trunk(x, src_key_padding_mask=~mask)``; ``mask`` (B, N) True = a real token."""
    return trunk(x, src_key_padding_mask=~mask)
