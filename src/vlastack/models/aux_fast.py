"""The FAST-token auxiliary LM loss of pi0.5's knowledge insulation: the tokenizer it uses and
the chunks' tokens laid out as LM ids (``VLAConfig.aux_token_loss == "fast"``)."""

from __future__ import annotations

import torch

from vlastack.errors import ConfigError
from vlastack.functional.fast_tokenizer import FastTokenizer
from vlastack.models.action_heads.fast import check_tokenizer_shape, encode_chunks
from vlastack.models.common import make_config
from vlastack.models.vla_config import FastAuxConfig, VLAConfig


def build_aux_fast(cfg: VLAConfig, lm_vocab_size: int) -> FastTokenizer:
    """The FAST tokenizer of the auxiliary loss; its ids take the LM vocabulary's last
    ``vocab_size + 1`` slots (one end-of-action id), as openpi overwrites PaliGemma's."""
    fc = make_config(FastAuxConfig, cfg.aux_token_kwargs, "model config aux_token_kwargs")
    if fc.tokenizer_path:
        tok = FastTokenizer.load(fc.tokenizer_path)
        check_tokenizer_shape(
            tok, cfg.action_horizon, cfg.action_dim, "aux_token_kwargs.tokenizer_path"
        )
    else:
        tok = FastTokenizer.untrained(cfg.action_horizon, cfg.action_dim, fc.scale)
    if lm_vocab_size < tok.vocab_size + 1:
        raise ConfigError(
            f"aux_token_loss='fast': the LM vocabulary ({lm_vocab_size}) is smaller "
            f"than the FAST vocabulary + end-of-action ({tok.vocab_size + 1}); fit a smaller "
            "tokenizer (`vlastack fast fit --vocab-size`)"
        )
    return tok


def fast_lm_ids(
    tok: FastTokenizer, lm_vocab_size: int, actions: torch.Tensor, action_is_pad: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """FAST tokens of each chunk as LM ids: FAST id t -> vocab-1-t, end-of-action ->
    vocab-1-V_fast. Returns the teacher-forced inputs (B, L) and their mask (B, L) (False on
    right padding), and targets (B, L+1) = tokens + end-of-action, -100 on padding (on the CPU)."""
    top = lm_vocab_size - 1
    eoa = top - tok.vocab_size
    seqs = [
        [top - t for t in s][: tok.max_tokens_per_chunk]
        for s in encode_chunks(tok, actions, action_is_pad)
    ]
    B, L = len(seqs), max(len(s) for s in seqs)
    inp = torch.full((B, L), eoa, dtype=torch.long)
    inp_mask = torch.zeros(B, L, dtype=torch.bool)
    tgt = torch.full((B, L + 1), -100, dtype=torch.long)
    for i, seq in enumerate(seqs):
        inp[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        inp_mask[i, : len(seq)] = True
        tgt[i, : len(seq) + 1] = torch.tensor([*seq, eoa], dtype=torch.long)
    return inp, inp_mask, tgt
