"""The training forward of SmolVLA as LeRobot 0.6.1 computes it (``VLAFlowMatching.forward`` with
``SmolVLMWithExpertModel.forward(use_cache=False)``), for fine-tuning imported checkpoints.

Facts from LeRobot 0.6.1 ``policies/smolvla/modeling_smolvla.py`` / ``smolvlm_with_expert.py``:

* ``x_t = t * noise + (1 - t) * actions``, target ``u_t = noise - actions``; noise N(0, 1) of
  shape (B, chunk_size, max_action_dim), time ``Beta(1.5, 1) * 0.999 + 0.001`` (both given here);
* one pass over [prefix; suffix]: the prefix of inference (images, language, the state token),
  the suffix ``embed_suffix(x_t, time)`` with block starts 1 for every action token (causal);
  the 2-D mask ``make_att_2d_masks`` over both, positions ``cumsum(pad) - 1``;
* per VLM layer i: a self-attention layer (not ``cross`` mode, or ``i % self_attn_every_n_layers
  == 0``) normalizes and projects each stream with its own tower, concatenates the queries,
  keys and values, applies RoPE at the joint positions and runs one attention; a cross layer
  runs the prefix's self-attention over the prefix alone (positions and mask of the prefix),
  then the expert's queries (RoPE at its positions minus their minimum) attend to
  ``k_proj`` / ``v_proj`` of the VLM's post-RoPE keys and values, masked by the suffix rows
  and prefix columns of the 2-D mask; each tower then applies its ``o_proj``, residual,
  ``post_attention_layernorm``, MLP, residual to its own slice (a VLM layer without an expert
  layer passes the suffix through unchanged);
* ``lm_expert.norm`` of the suffix, the last ``chunk_size`` tokens in float32 through
  ``action_out_proj`` give ``v_t``; the loss is ``(u_t - v_t) ** 2`` element-wise.

``SmolVLAPolicy.forward`` then keeps the real action dims, zeroes the steps past the episode
end (``action_is_pad``) and divides the sum by (valid steps x action dims): ``reduce_loss``.

``insulate=True`` is vlastack's gradient insulation (``model.insulate_head``, π0.5 knowledge
insulation): the expert reads the VLM's keys and values through ``detach()``, so the action
loss trains the expert and projections but never reaches the VLM. Off, this is LeRobot's loss.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812

from vlastack.pretrained.lerobot.smolvla import (
    SmolVLAModel,
    apply_rope,
    attention_2d,
    eager_attention,
)


def flow_matching_loss(
    model: SmolVLAModel,
    images: list[torch.Tensor],
    img_masks: list[torch.Tensor],
    tokens: torch.Tensor,
    lang_mask: torch.Tensor,
    state: torch.Tensor,
    actions: torch.Tensor,
    noise: torch.Tensor,
    time: torch.Tensor,
    *,
    insulate: bool = False,
) -> torch.Tensor:
    """Per-element loss (B, chunk_size, max_action_dim); ``actions`` / ``noise`` padded to
    ``max_action_dim``, ``state`` to ``max_state_dim``, images in [-1, 1] at the VLM's size."""
    t = time[:, None, None]
    x_t = t * noise + (1 - t) * actions
    u_t = noise - actions
    prefix, prefix_pad, prefix_ar = model.embed_prefix(images, img_masks, tokens, lang_mask, state)
    suffix = model.embed_suffix(x_t, time)
    b, lp = prefix_pad.shape
    ls = suffix.shape[1]
    pad = torch.cat([prefix_pad, torch.ones(b, ls, dtype=torch.bool, device=suffix.device)], 1)
    ar = torch.cat(
        [prefix_ar.to(suffix.dtype), torch.ones(b, ls, dtype=suffix.dtype, device=suffix.device)],
        1,
    )
    mask = attention_2d(pad, ar)
    pos = torch.cumsum(pad, dim=1) - 1
    vwe = model.vlm_with_expert
    vlm_layers: list[Any] = list(vwe.vlm.model.text_model.layers)
    for i, layer in enumerate(vlm_layers):
        e = vwe.expert_of[i]
        ex: Any = None if e is None else vwe.lm_expert.layers[e]
        h = layer.input_layernorm(prefix)
        q, k, v = vwe._qkv(layer, h)
        if vwe._self_attn(i):
            hs = ex.input_layernorm(suffix)
            qs, ks, vs = vwe._qkv(ex, hs)
            if insulate:  # the suffix's queries see the prefix's K/V detached
                # the prefix rows never see the suffix, so they are computed apart: the same
                qp, kp = apply_rope(q, pos[:, :lp]), apply_rope(k, pos[:, :lp])
                att_p = eager_attention(mask[:, :lp, :lp], qp, kp, v, vwe.heads, vwe.kv_heads)
                qs = apply_rope(qs, pos[:, lp:])
                ka = torch.cat([kp.detach(), apply_rope(ks, pos[:, lp:])], 1)
                va = torch.cat([v.detach(), vs], 1)
                att_s = eager_attention(mask[:, lp:], qs, ka, va, vwe.heads, vwe.kv_heads)
            else:
                q_all = apply_rope(torch.cat([q, qs], 1), pos)
                k_all = apply_rope(torch.cat([k, ks], 1), pos)
                v_all = torch.cat([v, vs], 1)
                att = eager_attention(mask, q_all, k_all, v_all, vwe.heads, vwe.kv_heads)
                att_p, att_s = att[:, :lp], att[:, lp:]
            prefix = vwe._finish(layer, att_p, prefix)
            suffix = vwe._finish(ex, att_s, suffix)
            continue
        pp = pos[:, :lp]
        qp, kp = apply_rope(q, pp), apply_rope(k, pp)
        att_p = eager_attention(mask[:, :lp, :lp], qp, kp, v, vwe.heads, vwe.kv_heads)
        if ex is not None:
            kin, vin = (kp.detach(), v.detach()) if insulate else (kp, v)
            a = ex.self_attn
            hs = ex.input_layernorm(suffix)
            qs = a.q_proj(hs).view(*hs.shape[:-1], -1, vwe.head_dim)
            ps = pos[:, lp:]
            qs = apply_rope(qs, ps - torch.min(ps, dim=1, keepdim=True).values)
            ks = a.k_proj(kin.reshape(*kin.shape[:2], -1)).view(*kin.shape[:2], -1, vwe.head_dim)
            vs = a.v_proj(vin.reshape(*vin.shape[:2], -1)).view(*vin.shape[:2], -1, vwe.head_dim)
            att_s = eager_attention(mask[:, lp:, :lp], qs, ks, vs, vwe.heads, vwe.kv_heads)
            suffix = vwe._finish(ex, att_s, suffix)
        prefix = vwe._finish(layer, att_p, prefix)
    out = vwe.lm_expert.norm(suffix)[:, -model.spec.chunk_size :].to(torch.float32)
    v_t = model.action_out_proj(out)
    return F.mse_loss(u_t, v_t, reduction="none")


def reduce_loss(
    losses: torch.Tensor, action_dim: int, action_is_pad: torch.Tensor | None
) -> torch.Tensor:
    """``SmolVLAPolicy.forward``'s mean: real action dims, steps past the episode end zeroed,
    the sum over (valid steps x action dims) (the plain mean without ``action_is_pad``)."""
    losses = losses[:, :, :action_dim]
    if action_is_pad is None:
        return losses.mean()
    valid = ~action_is_pad.to(torch.bool)
    losses = losses * valid.unsqueeze(-1)
    n = (valid.sum() * losses.shape[-1]).clamp_min(1)
    return losses.sum() / n
