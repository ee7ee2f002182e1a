"""pi0 / pi0.5 as LeRobot 0.6.1 runs them (``policies/pi0/modeling_pi0.py: PI0Pytorch``,
``policies/pi05/modeling_pi05.py: PI05Pytorch``, both ports of openpi's ``PI0Pytorch``), with
LeRobot's state-dict keys (``model.*``).

``sample_actions(images, img_masks, lang_tokens, lang_masks, state, noise)``:

1. Prefix: each camera through SigLIP + projector (``PaliGemmaWithExpert.embed_image``), then the
   language tokens through Gemma's scaled embedding; pad mask = camera masks and the tokenizer's
   attention mask; every prefix token sees every valid prefix token (bidirectional).
   Positions ``cumsum(pad) - 1``. One PaliGemma pass fills a per-layer KV cache.
2. Suffix, per Euler step (``flow.euler_sample``, ``num_inference_steps``):
   pi0: ``[state_proj(state)]`` then ``action_time_mlp_out(silu(action_time_mlp_in(
   [action_in_proj(x_t), time_emb(t)])))`` per action; the state token has its own block (it does
   not see the actions), the action tokens see the state and each other (attention blocks
   ``[1, 1, 0, ...]``). pi0.5: no state token (the state is in the prompt); the action tokens are
   ``action_in_proj(x_t)`` and the time enters every expert norm by adaRMS, the condition being
   ``silu(time_mlp_out(silu(time_mlp_in(time_emb(t)))))``.
   Suffix tokens see every valid prefix token; positions continue after the prefix's.
   The expert's last ``chunk_size`` outputs -> ``action_out_proj`` = velocity.

The attention mask is additive with LeRobot's ``OPENPI_ATTENTION_MASK_VALUE`` (-2.3819763e38).
Verified against ``sample_actions.output`` of ``shared/fixtures/lerobot_policies/{pi0,pi05}``
(tests/test_pretrained_lerobot_pi0.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from vlastack.errors import ConfigError
from vlastack.functional.rtc import guided_euler_sample
from vlastack.pretrained.lerobot.flow import (
    attention_2d,
    euler_sample,
    pad_positions,
    sinusoidal_time_embedding,
    suffix_attention,
)
from vlastack.pretrained.lerobot.gemma import GemmaSize, compute_dtype, gemma_size
from vlastack.pretrained.lerobot.paligemma import (
    PaliGemmaSize,
    PaliGemmaWithExpert,
    paligemma_size,
)
from vlastack.profiling import stage

MASK_VALUE = -2.3819763e38  # lerobot.utils.constants.OPENPI_ATTENTION_MASK_VALUE


def _int(cfg: dict[str, Any], key: str, default: int) -> int:
    value = cfg.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"config.json '{key}' must be a positive integer, got {value!r}")
    return value


def _float(cfg: dict[str, Any], key: str, default: float) -> float:
    value = cfg.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"config.json '{key}' must be a number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Pi0Spec:
    """What config.json says about the network (field names as LeRobot's PI0Config)."""

    pi05: bool
    vlm: GemmaSize
    expert: GemmaSize
    pali: PaliGemmaSize
    image_size: int
    chunk_size: int
    n_action_steps: int
    max_state_dim: int
    max_action_dim: int
    num_inference_steps: int
    min_period: float
    max_period: float
    tokenizer_max_length: int
    dtype: str

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> Pi0Spec:
        kind = cfg.get("type")
        pi05 = kind == "pi05"
        res = cfg.get("image_resolution", [224, 224])
        if (
            not isinstance(res, (list, tuple))
            or len(res) != 2
            or not all(isinstance(r, int) and r > 0 for r in res)
        ):
            raise ConfigError(
                f"config.json 'image_resolution' must be [height, width] integers, got {res!r}"
            )
        if res[0] != res[1]:
            raise ConfigError(
                f"config.json 'image_resolution' {list(res)} is not square; PaliGemma needs a "
                "square input (LeRobot refuses it too): use e.g. [224, 224]"
            )
        variant = cfg.get("paligemma_variant", "gemma_2b")
        vlm = gemma_size("paligemma_variant", variant)
        expert = gemma_size("action_expert_variant", cfg.get("action_expert_variant", "gemma_300m"))
        if vlm.depth != expert.depth:
            raise ConfigError(
                f"config.json: paligemma_variant has {vlm.depth} layers and "
                f"action_expert_variant {expert.depth}; pi0 pairs the two towers layer by layer"
            )
        if (vlm.num_kv_heads, vlm.head_dim) != (expert.num_kv_heads, expert.head_dim):
            raise ConfigError(
                "config.json: the two Gemma variants must share num_kv_heads and head_dim"
            )
        dtype = cfg.get("dtype", "float32")
        if dtype not in ("float32", "bfloat16"):
            raise ConfigError(
                f"config.json 'dtype' is {dtype!r}; LeRobot's pi0 takes float32 or bfloat16"
            )
        chunk = _int(cfg, "chunk_size", 50)
        n_action = _int(cfg, "n_action_steps", 50)
        if n_action > chunk:
            raise ConfigError(
                f"config.json 'n_action_steps' {n_action} exceeds 'chunk_size' {chunk}"
            )
        return cls(
            pi05=pi05,
            vlm=vlm,
            expert=expert,
            pali=paligemma_size(str(variant)),
            image_size=int(res[0]),
            chunk_size=chunk,
            n_action_steps=n_action,
            max_state_dim=_int(cfg, "max_state_dim", 32),
            max_action_dim=_int(cfg, "max_action_dim", 32),
            num_inference_steps=_int(cfg, "num_inference_steps", 10),
            min_period=_float(cfg, "min_period", 4e-3),
            max_period=_float(cfg, "max_period", 4.0),
            tokenizer_max_length=_int(cfg, "tokenizer_max_length", 200 if pi05 else 48),
            dtype=str(dtype),
        )


def additive(mask_2d: torch.Tensor) -> torch.Tensor:
    """(B, Q, K) bool -> (B, 1, Q, K) float32: 0 where seen, ``MASK_VALUE`` elsewhere."""
    return torch.where(mask_2d[:, None], 0.0, MASK_VALUE)


class Pi0Core(nn.Module):
    """LeRobot's ``PI0Pytorch`` / ``PI05Pytorch`` (keys below ``model.``)."""

    def __init__(self, spec: Pi0Spec) -> None:
        super().__init__()
        self.spec = spec
        e = spec.expert.width
        self.paligemma_with_expert = PaliGemmaWithExpert(
            spec.vlm, spec.expert, spec.pali, spec.image_size, expert_adarms=spec.pi05
        )
        self.action_in_proj = nn.Linear(spec.max_action_dim, e)
        self.action_out_proj = nn.Linear(e, spec.max_action_dim)
        if spec.pi05:
            self.time_mlp_in = nn.Linear(e, e)
            self.time_mlp_out = nn.Linear(e, e)
        else:
            self.state_proj = nn.Linear(spec.max_state_dim, e)
            self.action_time_mlp_in = nn.Linear(2 * e, e)
            self.action_time_mlp_out = nn.Linear(e, e)

    # ---- prefix ----------------------------------------------------------------------------
    def embed_prefix(
        self,
        images: list[torch.Tensor],
        img_masks: list[torch.Tensor],
        lang_tokens: torch.Tensor,
        lang_masks: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prefix embeddings (B, P, width) and pad mask (B, P)."""
        pwe = self.paligemma_with_expert
        embs, pads = [], []
        for img, m in zip(images, img_masks, strict=True):
            with stage("vision"):
                e = pwe.embed_image(img)
            embs.append(e)
            pads.append(m[:, None].expand(e.shape[0], e.shape[1]))
        with stage("language"):
            embs.append(pwe.language_model.embed(lang_tokens))
        pads.append(lang_masks)
        return torch.cat(embs, dim=1), torch.cat(pads, dim=1)

    # ---- suffix ----------------------------------------------------------------------------
    def time_embedding(self, t: torch.Tensor) -> torch.Tensor:
        s = self.spec
        emb = sinusoidal_time_embedding(
            t, self.action_in_proj.out_features, s.min_period, s.max_period
        )
        return emb.type(t.dtype)

    def embed_suffix(
        self, state: torch.Tensor | None, x_t: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Suffix embeddings (B, S, width), attention blocks (S,), adaRMS condition or None."""
        time_emb = self.time_embedding(t)
        action_emb = self.action_in_proj(x_t)
        chunk = self.spec.chunk_size
        if self.spec.pi05:
            cond = F.silu(self.time_mlp_out(F.silu(self.time_mlp_in(time_emb))))
            blocks = torch.tensor([1] + [0] * (chunk - 1), dtype=action_emb.dtype)
            return action_emb, blocks.to(action_emb.device), cond
        assert state is not None
        if compute_dtype(self.state_proj) == torch.float32:
            state = state.to(torch.float32)
        state_emb = self.state_proj(state)[:, None, :]
        fused = torch.cat([action_emb, time_emb[:, None, :].expand_as(action_emb)], dim=2)
        fused = self.action_time_mlp_out(F.silu(self.action_time_mlp_in(fused)))
        embs = torch.cat([state_emb, fused], dim=1)
        blocks = torch.tensor([1, 1] + [0] * (chunk - 1), dtype=embs.dtype, device=embs.device)
        return embs, blocks, None

    # ---- sampling --------------------------------------------------------------------------
    def prefix_cache(
        self,
        images: list[torch.Tensor],
        img_masks: list[torch.Tensor],
        lang_tokens: torch.Tensor,
        lang_masks: torch.Tensor,
    ) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
        """One PaliGemma pass over the prefix: (per layer the rotated (K, V), each (B,
        kv_heads, P, head_dim); the prefix pad mask (B, P))."""
        pwe = self.paligemma_with_expert
        prefix, prefix_pad = self.embed_prefix(images, img_masks, lang_tokens, lang_masks)
        b, p = prefix_pad.shape
        prefix_blocks = torch.zeros(b, p, dtype=torch.bool, device=prefix_pad.device)
        prefix_mask = additive(attention_2d(prefix_pad, prefix_blocks))
        prefix_pos = pad_positions(prefix_pad)
        with stage("backbone"):
            cache = pwe.language_model.prefill(prefix, prefix_pos, prefix_mask)
        return cache, prefix_pad

    def velocity(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        cache: list[tuple[torch.Tensor, torch.Tensor]],
        prefix_pad: torch.Tensor,
        state: torch.Tensor | None,
    ) -> torch.Tensor:
        """The expert's velocity (B, chunk_size, max_action_dim) at ``x_t``, time ``t`` (B,),
        over the prefix ``cache`` (``prefix_cache``); ``state`` for pi0, None for pi0.5."""
        embs, blocks, cond = self.embed_suffix(state, x_t, t)
        b = prefix_pad.shape[0]
        full, pos = suffix_attention(prefix_pad, blocks[None, :].expand(b, embs.shape[1]))
        out = self.paligemma_with_expert.expert.decode(embs, pos, additive(full), cache, cond)
        out = out[:, -self.spec.chunk_size :].to(torch.float32)
        return self.action_out_proj(out)

    def prefix_velocity(
        self,
        images: list[torch.Tensor],
        img_masks: list[torch.Tensor],
        lang_tokens: torch.Tensor,
        lang_masks: torch.Tensor,
        state: torch.Tensor | None,
    ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """Prefill the prefix once (``prefix_cache``); the returned ``velocity(x_t, t)`` runs
        the expert over that cache (differentiable in ``x_t`` when called with autograd on and
        the cache made under ``no_grad``, as guided sampling needs)."""
        cache, prefix_pad = self.prefix_cache(images, img_masks, lang_tokens, lang_masks)
        return lambda x_t, t: self.velocity(x_t, t, cache, prefix_pad, state)

    @torch.no_grad()
    def sample_actions(
        self,
        images: list[torch.Tensor],
        img_masks: list[torch.Tensor],
        lang_tokens: torch.Tensor,
        lang_masks: torch.Tensor,
        state: torch.Tensor | None,
        noise: torch.Tensor,
        num_steps: int | None = None,
    ) -> torch.Tensor:
        """(B, chunk_size, max_action_dim) actions in normalized units, padded dims included."""
        velocity = self.prefix_velocity(images, img_masks, lang_tokens, lang_masks, state)
        with stage("head"):
            return euler_sample(velocity, noise, num_steps or self.spec.num_inference_steps)

    def sample_actions_guided(
        self,
        images: list[torch.Tensor],
        img_masks: list[torch.Tensor],
        lang_tokens: torch.Tensor,
        lang_masks: torch.Tensor,
        state: torch.Tensor | None,
        noise: torch.Tensor,
        target: torch.Tensor,
        weights: torch.Tensor,
        max_guidance_weight: float = 5.0,
    ) -> torch.Tensor:
        """``sample_actions`` with real-time chunking's guidance toward ``target`` (B,
        chunk_size, max_action_dim), normalized, weighted by ``weights`` (broadcastable to it;
        ``functional.rtc.prefix_weights``): ``functional.rtc.guided_euler_sample`` over this
        model's velocity. With all weights 0 it is ``sample_actions``."""
        with torch.no_grad():
            velocity = self.prefix_velocity(images, img_masks, lang_tokens, lang_masks, state)
        with stage("head"):
            steps = self.spec.num_inference_steps
            return guided_euler_sample(velocity, noise, target, weights, steps, max_guidance_weight)


class Pi0Network(nn.Module):
    """The policy's state dict root (``model.*`` as in LeRobot's ``PI0Policy``)."""

    def __init__(self, spec: Pi0Spec) -> None:
        super().__init__()
        self.spec = spec
        self.model = Pi0Core(spec)

    def set_precision(self) -> None:
        """config ``dtype`` bfloat16: LeRobot's ``to_bfloat16_for_selected_params``, which
        casts ``paligemma_with_expert`` only (the action/state/time projections stay float32)
        and keeps its vision tower, projector and norms (adaRMS ``dense`` included) float32."""
        if self.spec.dtype != "bfloat16":
            return
        keep = (
            "vision_tower",
            "multi_modal_projector",
            "input_layernorm",
            "post_attention_layernorm",
            "model.norm",
        )
        pwe = self.model.paligemma_with_expert
        for name, param in pwe.named_parameters():
            want = torch.float32 if any(k in name for k in keep) else torch.bfloat16
            param.data = param.data.to(want)
        pwe.language_model.rope_freq_dtype = torch.bfloat16
        pwe.expert.rope_freq_dtype = torch.bfloat16
