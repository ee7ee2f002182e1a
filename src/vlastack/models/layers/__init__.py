"""The model layers the action heads, the trunk and the vision fusion share, as plain
``nn.Module``s: attention with precomputed keys/values, the pre-norm block, the learned-query
decoder, the MLP, the inference switches, and masking helpers. Their fast CPU form is the native
runner's (``vlastack.runners.native``), not theirs.

- ``attention``: ``Attention``, ``LayerKVCache``, ``sdpa``, ``causal_mask``
- ``mlp``: ``MLP``, the activations it takes
- ``block``: ``Block`` (self-attention → cross-attention → MLP, optional FiLM)
- ``decoder``: ``CrossDecoder``
- ``inference``: ``graph_capture``, and the vision folding's ``fast_inference`` / ``derived``
- ``masking``: padded actions, loss weights, masked means
- ``config``: ``config_from``
"""

from vlastack.models.layers.attention import KV, Attention, LayerKVCache, causal_mask, sdpa
from vlastack.models.layers.block import Block
from vlastack.models.layers.config import config_from
from vlastack.models.layers.decoder import CrossDecoder
from vlastack.models.layers.inference import (
    derived,
    fast_inference,
    graph_capture,
    is_capturing,
    reference_inference,
)
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
    "derived",
    "fast_inference",
    "fill_padded_actions",
    "graph_capture",
    "is_capturing",
    "loss_weights",
    "masked_mean",
    "masked_mean_pool",
    "mlp_activation",
    "reference_inference",
    "sdpa",
]
