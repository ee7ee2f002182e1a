"""FAST-token action head (π0-FAST, Pertsch et al. 2501.09747): a small causal decoder that
cross-attends to the context and emits FAST tokens (DCT + BPE, ``functional.fast_tokenizer``).

Training is teacher-forced cross-entropy on [BOS, tokens, EOS]; sampling is greedy with a per-layer
KV cache, stopping at EOS or after ``max_decode_tokens``. A sequence that does not decode to a
valid (H, A) chunk yields zeros, as in the reference; ``last_decode_valid`` (B,) records which.
Padded steps are replaced by the last valid action before tokenizing (the DCT sees the whole chunk).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vlastack.errors import ConfigError
from vlastack.functional.fast_tokenizer import FastTokenizer
from vlastack.models.action_heads.base import ActionHead
from vlastack.models.layers.attention import causal_mask
from vlastack.models.layers.config import config_from
from vlastack.models.layers.decoder import CrossDecoder
from vlastack.models.layers.masking import fill_padded_actions


def check_tokenizer_shape(
    tok: FastTokenizer, action_horizon: int, action_dim: int, where: str
) -> None:
    """A fitted tokenizer codes one chunk shape; say how to refit when the model's differs."""
    if (tok.time_horizon, tok.action_dim) != (action_horizon, action_dim):
        raise ConfigError(
            f"{where}: the FAST tokenizer was fit on chunks ({tok.time_horizon}, {tok.action_dim}) "
            f"but the model predicts ({action_horizon}, {action_dim}) (action_horizon, action_dim); "
            "refit it with `vlastack fast fit DATASET --action-horizon H --out DIR`."
        )


def encode_chunks(
    tok: FastTokenizer, actions: torch.Tensor, action_is_pad: torch.Tensor
) -> list[list[int]]:
    """(B, H, A) normalized chunks -> B FAST token-id lists; padded steps repeat the last valid
    action first (the DCT sees the whole chunk)."""
    return tok.encode(fill_padded_actions(actions, action_is_pad).detach().cpu().numpy())


@dataclass
class FastHeadConfig:
    width: int = 256
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 4.0
    tokenizer_path: str | None = None  # folder written by `vlastack fast fit`; None → no-merge FAST
    scale: float = 10.0  # only used when tokenizer_path is None
    max_decode_tokens: int = 0  # 0 → the tokenizer's bound for one chunk


class FastHead(ActionHead):
    """Autoregressive FAST tokens, greedy decoding."""

    cuda_graph_blocker = "autoregressive decoding stops on the tokens it reads"
    suite_action_normalization = "quantile"  # π0-FAST's
    bf16_blocker = (
        "autoregressive tokens: a bf16 rounding that flips one greedy token changes every "
        "later one, so its chunk is not close to float32's"
    )

    def __init__(
        self,
        context_dim: int,
        action_dim: int,
        action_horizon: int,
        width: int = 256,
        depth: int = 4,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        tokenizer: FastTokenizer | None = None,
        scale: float = 10.0,
        max_decode_tokens: int = 0,
    ) -> None:
        super().__init__(context_dim, action_dim, action_horizon, width)
        tok = tokenizer or FastTokenizer.untrained(action_horizon, action_dim, scale)
        check_tokenizer_shape(tok, action_horizon, action_dim, "fast head")
        self.tokenizer = tok
        self.bos_id = tok.vocab_size
        self.eos_id = tok.vocab_size + 1
        self.max_decode_tokens = max_decode_tokens or tok.max_tokens_per_chunk + 1
        self.token_emb = nn.Embedding(tok.vocab_size + 2, width)
        self.pos_emb = nn.Parameter(torch.randn(self.max_decode_tokens + 1, width) * 0.02)
        self.decoder = CrossDecoder(width, depth, num_heads, mlp_ratio)
        self.out = nn.Linear(width, tok.vocab_size + 2)
        self.last_decode_valid: torch.Tensor | None = None

    def _targets(self, actions: torch.Tensor, action_is_pad: torch.Tensor):
        """Token inputs (B, L) and targets (B, L) with −100 on padding, L = longest + 1."""
        seqs = [
            s[: self.max_decode_tokens - 1] + [self.eos_id]
            for s in encode_chunks(self.tokenizer, actions, action_is_pad)
        ]
        L = max(len(s) for s in seqs)
        B = len(seqs)
        tgt = torch.full((B, L), -100, dtype=torch.long)
        inp = torch.full((B, L), self.eos_id, dtype=torch.long)
        inp[:, 0] = self.bos_id
        for i, s in enumerate(seqs):
            tgt[i, : len(s)] = torch.tensor(s)
            inp[i, 1 : len(s)] = torch.tensor(s[:-1])
        return inp.to(actions.device), tgt.to(actions.device)

    def loss(self, context, context_mask, actions, action_is_pad, action_dim_mask=None):
        """Mean token cross-entropy per sample (B,). ``action_dim_mask`` is not applicable to FAST
        tokens (every token mixes all dims); padded dims should be zeros, which cost few tokens."""
        self._check(context, context_mask, actions)
        inp, tgt = self._targets(actions, action_is_pad)
        L = inp.shape[1]
        kvs = self.decoder.context_kv(self.context_proj(context))
        x = self.token_emb(inp) + self.pos_emb[:L]
        logits = self.out(self.decoder(x, kvs, context_mask, self_mask=causal_mask(L, x.device)))
        ce = F.cross_entropy(logits.transpose(1, 2), tgt, ignore_index=-100, reduction="none")
        n = (tgt != -100).sum(1).clamp(min=1)
        return ce.sum(1) / n

    @torch.no_grad()
    def sample_actions(self, context, context_mask, generator=None):
        """Greedy decoding (``generator`` unused); invalid token sequences decode to zeros."""
        self._check(context, context_mask)
        B = context.shape[0]
        kvs = self.decoder.context_kv(self.context_proj(context))
        caches = self.decoder.new_caches()
        mask = context_mask
        tok = torch.full((B,), self.bos_id, dtype=torch.long, device=context.device)
        done = torch.zeros(B, dtype=torch.bool, device=context.device)
        out: list[torch.Tensor] = []
        for k in range(self.max_decode_tokens):
            x = (self.token_emb(tok) + self.pos_emb[k]).unsqueeze(1)
            logits = self.out(self.decoder(x, kvs, mask, caches=caches)[:, 0])
            logits[:, self.bos_id] = float("-inf")
            tok = logits.argmax(-1)
            out.append(torch.where(done, torch.full_like(tok, self.eos_id), tok))
            done = done | (tok == self.eos_id)
            if bool(done.all()):
                break
        seqs = torch.stack(out, 1).cpu().tolist()
        token_lists = [
            [t for t in s[: s.index(self.eos_id)]] if self.eos_id in s else s for s in seqs
        ]
        chunks, valid = self.tokenizer.decode_with_validity(token_lists)
        self.last_decode_valid = torch.from_numpy(valid)
        return torch.from_numpy(chunks).to(context.device)


def build(cfg=None, *, context_dim: int, action_dim: int, action_horizon: int) -> FastHead:
    c = config_from(FastHeadConfig, cfg)
    tok = FastTokenizer.load(c.tokenizer_path) if c.tokenizer_path else None
    return FastHead(
        context_dim,
        action_dim,
        action_horizon,
        width=c.width,
        depth=c.depth,
        num_heads=c.num_heads,
        mlp_ratio=c.mlp_ratio,
        tokenizer=tok,
        scale=c.scale,
        max_decode_tokens=c.max_decode_tokens,
    )
