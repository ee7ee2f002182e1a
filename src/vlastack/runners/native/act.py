"""The native runner's ACT sampler (models/action_heads/act.py): ``decode(z = 0, …)`` with the
same math and fewer ops. latent_in(0) is its bias; the query-only part of decoder block 0 (its
self-attention over the learned queries, and that block's cross-attention queries) depends on
the weights only and is computed once when the runner is built; all layers' memory K/V come
from one product; the decoder runs as one flat ``DecoderPlan`` loop. Built for frozen
weights: rebuild the runner after they change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from vlastack.models.action_heads.act import ACTHead
from vlastack.models.layers.block import Block
from vlastack.runners.native.decoder import DecoderPlan
from vlastack.runners.native.linear import plain_linears, plan_linear


def _query_constants(head: ACTHead) -> tuple[torch.Tensor, torch.Tensor]:
    """What the decoder computes before it first reads the memory: the first block's
    self-attention over the learned queries, x (1, H, W), and that block's cross-attention
    queries (1, heads, H, hd)."""
    blk = head.decoder.blocks[0]
    assert isinstance(blk, Block) and blk.cross_attn is not None and blk.norm2 is not None
    with torch.no_grad():
        x = head.queries.unsqueeze(0)
        h = blk.norm1(x)
        x = x + blk.self_attn(h, blk.self_attn.project_kv(h))
        return x, blk.cross_attn._split(blk.cross_attn.q(blk.norm2(x)))


def native_act(head: ACTHead) -> Callable[..., torch.Tensor] | None:
    """``head.sample_actions`` as a plan-backed callable; None where the decoder holds
    something the plan does not run (``DecoderPlan.supports``) or a replaced linear layer."""
    if not (
        DecoderPlan.supports(head.decoder)
        and plain_linears(head.context_proj)
        and plain_linears(head.latent_in)
        and plain_linears(head.action_out)
    ):
        return None
    with torch.no_grad():
        dec = DecoderPlan(head.decoder)
        x0, q0 = _query_constants(head)
        if dec.native:  # the native loop takes queries with the heads side by side
            q0 = q0.transpose(1, 2).reshape(1, x0.shape[1], -1)
        proj = plan_linear(head.context_proj.weight, head.context_proj.bias, dec.onednn, rows=3)
        z = head.latent_in.bias.detach()
        # 7 outputs: never worth a oneDNN pack; native where the decoder is
        out = plan_linear(head.action_out.weight, head.action_out.bias, False)

    def sample_actions(
        context: torch.Tensor, context_mask: torch.Tensor, generator: Any = None
    ) -> torch.Tensor:
        head._check(context, context_mask)
        B = context.shape[0]
        cross_mask = (
            None
            if bool(context_mask.all())
            else torch.cat([torch.ones_like(context_mask[:, :1]), context_mask], 1)[
                :, None, None, :
            ]
        )
        memory = torch.cat([z.expand(B, 1, -1), dec.lin(context, proj)], 1)
        x = dec.run(
            x0.expand(B, -1, -1),
            dec.context_kv(memory),
            cross_mask,
            first_q=q0.expand(B, *q0.shape[1:]),
        )
        return dec.lin(x, out)

    return sample_actions
