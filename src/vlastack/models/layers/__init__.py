"""The model layers the action heads, the trunk and the vision fusion share, as plain
``nn.Module``s: attention with precomputed keys/values, the pre-norm block, the learned-query
decoder, the MLP, the graph-capture switch, and masking helpers. Their fast CPU form is the native
runner's (``vlastack.runners.native``), not theirs.

- ``attention``: ``Attention``, ``LayerKVCache``, ``sdpa``, ``causal_mask``
- ``mlp``: ``MLP``, the activations it takes
- ``block``: ``Block`` (self-attention → cross-attention → MLP, optional FiLM)
- ``decoder``: ``CrossDecoder``
- ``inference``: ``graph_capture`` (CUDA-graph capture: data-reading checks stand aside)
- ``masking``: padded actions, loss weights, masked means
- ``config``: ``config_from``
"""

from vlastack.models.layers.attention import KV, Attention, LayerKVCache, causal_mask, sdpa
from vlastack.models.layers.block import Block
from vlastack.models.layers.config import config_from
from vlastack.models.layers.decoder import CrossDecoder
from vlastack.models.layers.inference import graph_capture, is_capturing
from vlastack.models.layers.masking import (
    fill_padded_actions,
    loss_weights,
    masked_mean,
    masked_mean_pool,
)
from vlastack.models.layers.mlp import ACTIVATIONS, MLP, check_activation, mlp_activation

__all__ = [
    "ACTIVATIONS",
    "KV",
    "MLP",
    "Attention",
    "Block",
    "CrossDecoder",
    "LayerKVCache",
    "causal_mask",
    "check_activation",
    "config_from",
    "fill_padded_actions",
    "graph_capture",
    "is_capturing",
    "loss_weights",
    "masked_mean",
    "masked_mean_pool",
    "mlp_activation",
    "sdpa",
]
