"""The training forward of pi0 / pi0.5 as LeRobot 0.6.1 computes it (``PI0Pytorch.forward`` /
``PI05Pytorch.forward`` with ``compute_layer_complete``), for fine-tuning imported checkpoints.

One pass over prefix and suffix together: ``x_t = t * noise + (1 - t) * actions``, target
``u_t = noise - actions``; the prefix (images, tokens) and the suffix (pi0: state + action
tokens; pi0.5: action tokens, time by adaRMS) go through the two towers layer by layer, each
tower normalizing and projecting its own tokens, one attention over the concatenated queries,
keys and values (LeRobot's mask: the prefix never sees the suffix, the state token never sees
the actions), each tower's ``o_proj`` / MLP on its own slice. The loss is the element-wise
squared error ``(u_t - action_out_proj(suffix_out[:, -chunk:]))^2``, (B, chunk, max_action_dim)
(LeRobot's ``reduction="none"``; the policy then keeps the real action dims and averages).

Verified against LeRobot's own ``model.forward`` on the fixtures
(tests/test_pretrained_lerobot_pi0.py, the slow LeRobot-subprocess test).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812

from vlastack.pretrained.lerobot.gemma import eager_attention, rope_cos_sin
from vlastack.pretrained.lerobot.pi0 import Pi0Core, additive, attention_2d


def flow_matching_loss(
    core: Pi0Core,
    images: list[torch.Tensor],
    img_masks: list[torch.Tensor],
    lang_tokens: torch.Tensor,
    lang_masks: torch.Tensor,
    state: torch.Tensor | None,
    actions: torch.Tensor,
    noise: torch.Tensor,
    time: torch.Tensor,
) -> torch.Tensor:
    """Per-element flow-matching loss (B, chunk_size, max_action_dim); ``actions`` and
    ``noise`` padded to ``max_action_dim``, ``time`` (B,) in (0, 1]."""
    t = time[:, None, None]
    x_t = t * noise + (1 - t) * actions
    u_t = noise - actions
    pwe = core.paligemma_with_expert
    lm, expert = pwe.language_model, pwe.expert
    prefix, prefix_pad = core.embed_prefix(images, img_masks, lang_tokens, lang_masks)
    suffix, blocks, cond = core.embed_suffix(state, x_t, time)
    if lm.blocks[0].self_attn.q_proj.weight.dtype == torch.bfloat16:
        prefix, suffix = prefix.to(torch.bfloat16), suffix.to(torch.bfloat16)
    b, p = prefix_pad.shape
    s = suffix.shape[1]
    pad = torch.cat([prefix_pad, torch.ones(b, s, dtype=torch.bool, device=prefix.device)], 1)
    att = torch.cat(
        [torch.zeros(b, p, dtype=blocks.dtype, device=blocks.device), blocks[None, :].expand(b, s)],
        dim=1,
    )
    mask = additive(attention_2d(pad, att))
    pos = torch.cumsum(pad, dim=1) - 1
    streams = [prefix, suffix]
    conds = [None, cond]
    for lm_layer, ex_layer in zip(lm.blocks, expert.blocks, strict=True):
        layers = (lm_layer, ex_layer)
        qs, ks, vs, gates = [], [], [], []
        for i, x in enumerate(streams):
            h, gate = layers[i].input_layernorm(x, conds[i])
            shape = (*h.shape[:-1], -1, layers[i].size.head_dim)
            a = layers[i].self_attn
            qs.append(a.q_proj(h).view(shape).transpose(1, 2))
            ks.append(a.k_proj(h).view(shape).transpose(1, 2))
            vs.append(a.v_proj(h).view(shape).transpose(1, 2))
            gates.append(gate)
        q, k, v = torch.cat(qs, dim=2), torch.cat(ks, dim=2), torch.cat(vs, dim=2)
        from transformers.models.gemma.modeling_gemma import apply_rotary_pos_emb

        cos, sin = rope_cos_sin(pos, lm.size.head_dim, q.dtype, lm.rope_freq_dtype)
        q, k = apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1)
        out = eager_attention(q, k, v, mask, lm.size.head_dim**-0.5)
        out = out.reshape(b, -1, lm.size.num_heads * lm.size.head_dim)
        start, new = 0, []
        for i, x in enumerate(streams):
            end = start + x.shape[1]
            new.append(layers[i].finish(x, out[:, start:end], gates[i], conds[i]))
            start = end
        streams = new
    suffix_out, _ = expert.norm(streams[1], cond)
    v_t = core.action_out_proj(suffix_out[:, -core.spec.chunk_size :].to(torch.float32))
    return F.mse_loss(u_t, v_t, reduction="none")
