"""Discrete-bin action head (RT-1 / RT-2 / OpenVLA): 256 uniform bins over normalized [−1, 1].

``parallel``: H learned queries cross-attend to the context and classify every (step, dim) at once
(per-dimension classification). ``autoregressive``: the H·A bin tokens (time-major) are generated
one by one by a small causal decoder cross-attending to the context, as a language model emits
OpenVLA's action tokens. Binning is ``functional.action_tokenization`` (OpenVLA exactly).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vlastack.functional.action_tokenization import bin_index, index_to_value
from vlastack.models.action_heads.base import ActionHead
from vlastack.models.layers.attention import causal_mask
from vlastack.models.layers.config import config_from
from vlastack.models.layers.decoder import CrossDecoder
from vlastack.models.layers.masking import fill_padded_actions, loss_weights, masked_mean


@dataclass
class BinsHeadConfig:
    width: int = 256
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 4.0
    num_bins: int = 256
    autoregressive: bool = False


class BinsHead(ActionHead):
    """Per-dimension 256-way classification of normalized actions; greedy (argmax) decoding."""

    cuda_graph_blocker = None
    suite_action_normalization = "quantile"  # OpenVLA's

    @classmethod
    def suite_kwargs(cls, size: dict[str, object], depth: int) -> dict[str, object]:
        return {**super().suite_kwargs(size, depth), "num_bins": 256}

    output_range = 1.0
    bf16_blocker = (
        "a token head: bf16 rounding flips near-tied argmax bins (and, decoded "
        "autoregressively, every later token), so its chunk is not close to float32's"
    )
    output_range_reason = "its bins span [-1, 1]"

    def __init__(
        self,
        context_dim: int,
        action_dim: int,
        action_horizon: int,
        width: int = 256,
        depth: int = 4,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        num_bins: int = 256,
        autoregressive: bool = False,
    ) -> None:
        super().__init__(context_dim, action_dim, action_horizon, width)
        self.num_bins = num_bins
        self.autoregressive = autoregressive
        self.decoder = CrossDecoder(width, depth, num_heads, mlp_ratio)
        if autoregressive:
            L = action_horizon * action_dim
            self.token_emb = nn.Embedding(num_bins + 1, width)  # last id = BOS
            self.pos_emb = nn.Parameter(torch.randn(L, width) * 0.02)
            self.out = nn.Linear(width, num_bins)
        else:
            self.queries = nn.Parameter(torch.randn(action_horizon, width) * 0.02)
            self.out = nn.Linear(width, action_dim * num_bins)

    def _logits_parallel(self, kvs, context_mask) -> torch.Tensor:
        B = context_mask.shape[0]
        x = self.queries.unsqueeze(0).expand(B, -1, -1)
        h = self.decoder(x, kvs, context_mask)
        return self.out(h).view(B, self.action_horizon, self.action_dim, self.num_bins)

    def loss(self, context, context_mask, actions, action_is_pad, action_dim_mask=None):
        self._check(context, context_mask, actions)
        B, H, A = actions.shape
        target = bin_index(fill_padded_actions(actions, action_is_pad), self.num_bins)  # (B,H,A)
        kvs = self.decoder.context_kv(self.context_proj(context))
        if self.autoregressive:
            tokens = target.reshape(B, H * A)
            bos = torch.full((B, 1), self.num_bins, dtype=torch.long, device=tokens.device)
            inp = torch.cat([bos, tokens[:, :-1]], dim=1)
            x = self.token_emb(inp) + self.pos_emb
            h = self.decoder(x, kvs, context_mask, self_mask=causal_mask(H * A, x.device))
            logits = self.out(h).view(B, H, A, self.num_bins)
        else:
            logits = self._logits_parallel(kvs, context_mask)
        ce = F.cross_entropy(logits.flatten(0, 2), target.flatten(), reduction="none").view(B, H, A)
        return masked_mean(ce, loss_weights(action_is_pad, action_dim_mask, A))

    @torch.no_grad()
    def sample_actions(self, context, context_mask, generator=None):
        """Greedy decoding; ``generator`` is unused (argmax is deterministic)."""
        self._check(context, context_mask)
        kvs = self.decoder.context_kv(self.context_proj(context))
        B, H, A = context.shape[0], self.action_horizon, self.action_dim
        if not self.autoregressive:
            idx = self._logits_parallel(kvs, context_mask).argmax(-1)
            return index_to_value(idx, self.num_bins)
        caches = self.decoder.new_caches()
        mask = context_mask
        tok = torch.full((B,), self.num_bins, dtype=torch.long, device=context.device)
        out = []
        for k in range(H * A):
            x = (self.token_emb(tok) + self.pos_emb[k]).unsqueeze(1)
            h = self.decoder(x, kvs, mask, caches=caches)
            tok = self.out(h[:, 0]).argmax(-1)
            out.append(tok)
        return index_to_value(torch.stack(out, 1).view(B, H, A), self.num_bins)


def build(cfg=None, *, context_dim: int, action_dim: int, action_horizon: int) -> BinsHead:
    c = config_from(BinsHeadConfig, cfg)
    return BinsHead(context_dim, action_dim, action_horizon, **vars(c))


def build_autoregressive(
    cfg=None, *, context_dim: int, action_dim: int, action_horizon: int
) -> BinsHead:
    c = dataclasses.replace(config_from(BinsHeadConfig, cfg), autoregressive=True)
    return BinsHead(context_dim, action_dim, action_horizon, **vars(c))
