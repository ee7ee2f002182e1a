"""π0 flow-matching action expert (Black et al. 2410.24164; openpi ``pi0.py``), π0.5 adaRMS option.

The expert is a transformer over the suffix [state token (optional), H action tokens]. In every
layer its queries attend jointly to the prefix (context) keys/values and to the suffix, under the
blockwise-causal mask of ``functional.attention_masks.make_attn_mask`` (prefix ar=0, state ar=1,
first action ar=1, other actions 0). The prefix K/V are per-layer projections of the context,
computed ONCE per chunk (``prefix_cache``) and reused by every Euler step, like π0's KV cache.
Convention: t=1 noise, t=0 data; see ``functional.flow_matching``. ``FlowHead`` holds what every
flow head shares (loss, Euler sampler, real-time-chunking guidance); FLOWER's head
(``flower.py``) is another ``FlowHead``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vlastack.errors import ConfigError
from vlastack.functional.attention_masks import make_attn_mask
from vlastack.functional.flow_matching import (
    euler_integrate,
    interpolate,
    sample_time,
    sincos_time_embedding,
    target_velocity,
)
from vlastack.functional.rtc import guided_euler_sample
from vlastack.models.action_heads.base import ActionHead
from vlastack.models.layers.attention import KV, Attention
from vlastack.models.layers.config import config_from
from vlastack.models.layers.masking import fill_padded_actions, loss_weights, masked_mean
from vlastack.models.layers.mlp import MLP


@dataclass
class FlowMatchingHeadConfig:
    width: int = 256
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 4.0
    num_steps: int = 10
    time_conditioning: str = "concat"  # "concat" (π0) | "adarms" (π0.5)
    state_dim: int = 0  # > 0 adds π0's state token; then pass ``state`` (B, state_dim)


class RMSNorm(nn.Module):
    """Gemma RMSNorm x/rms(x)·(1 + w); with ``cond_dim`` it is π0.5's adaRMSNorm:
    scale, shift, gate = Linear(cond); out = x/rms(x)·(1 + scale) + shift, and the caller gates the
    residual branch with ``gate``."""

    def __init__(self, dim: int, cond_dim: int = 0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(dim))
        # openpi zero-initialises this projection; a small normal init keeps gradients flowing to
        # the gated branches from the first step (with gate≡0 they would get none).
        self.mod = nn.Linear(cond_dim, 3 * dim) if cond_dim else None
        if self.mod is not None:
            nn.init.normal_(self.mod.weight, std=0.02)
            nn.init.zeros_(self.mod.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None):
        normed = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
        if self.mod is None or cond is None:
            return normed * (1 + self.weight), None
        scale, shift, gate = self.mod(cond).unsqueeze(1).chunk(3, -1)
        return normed * (1 + scale) + shift, gate


class ExpertLayer(nn.Module):
    """One action-expert layer with its own projection of the prefix into keys/values."""

    def __init__(self, width: int, num_heads: int, mlp_ratio: float, cond_dim: int) -> None:
        super().__init__()
        self.norm1 = RMSNorm(width, cond_dim)
        self.attn = Attention(width, num_heads)
        self.prefix_norm = RMSNorm(width)
        self.prefix_kv = nn.Linear(width, 2 * width)  # the prefix's own K/V weights (π0: the VLM's)
        self.norm2 = RMSNorm(width, cond_dim)
        self.mlp = MLP(width, int(width * mlp_ratio))

    def project_prefix(self, prefix: torch.Tensor) -> KV:
        k, v = self.prefix_kv(self.prefix_norm(prefix)[0]).chunk(2, -1)
        return self.attn._split(k), self.attn._split(v)

    def forward(self, x, prefix_kv: KV, mask, cond):
        h, gate = self.norm1(x, cond)
        q, (k, v) = self.attn.project_qkv(h)
        kv = (torch.cat([prefix_kv[0], k], 2), torch.cat([prefix_kv[1], v], 2))
        y = self.attn.attend(q, kv, mask)
        x = x + (y * gate if gate is not None else y)
        h, gate = self.norm2(x, cond)
        y = self.mlp(h)
        return x + (y * gate if gate is not None else y)


@dataclass
class FlowPrefixCache:
    """Everything about the prefix the Euler steps reuse: per-layer K/V and the suffix→all mask."""

    kvs: list[KV]
    mask: torch.Tensor | None  # (B, 1, S, N + S) bool; None: every key (the native runner)
    state_token: torch.Tensor | None  # (B, 1, W)


class FlowHead(ActionHead):
    """The flow-matching contract written once (π0's expert, FLOWER's AdaLN transformer): a
    subclass gives ``prefix_cache(context, mask, state)`` and ``velocity(x_t, t, cache)``; the
    loss, the Euler sampler and real-time-chunking guidance are these. ``time_alpha`` is the
    Beta(α, 1) of the training times (π0: 1.5; 1.0 = uniform, rectified flow); a head with an
    ``output_range`` clamps its chunk to it (FLOWER clips to [-1, 1])."""

    cuda_graph_noise = True
    cuda_graph_blocker = None
    export_kind = "flow"
    # bf16 eager vs float32 (tests/test_action_heads_bf16.py): the Euler steps add up the
    # velocity's rounding; the times stay float32 (functional.flow_matching.time_dtype)
    bf16_atol = 0.12
    num_steps: int = 10
    time_alpha: float = 1.5

    def prefix_cache(
        self, context: torch.Tensor, context_mask: torch.Tensor, state: torch.Tensor | None = None
    ) -> FlowPrefixCache:
        raise NotImplementedError

    def velocity(self, x_t: torch.Tensor, t: torch.Tensor, cache: FlowPrefixCache) -> torch.Tensor:
        raise NotImplementedError

    def _bound(self, x: torch.Tensor) -> torch.Tensor:
        r = self.output_range
        return x if r is None else x.clamp(-r, r)

    # ---- contract -------------------------------------------------------------------------
    def loss(self, context, context_mask, actions, action_is_pad, action_dim_mask=None, state=None):
        self._check(context, context_mask, actions)
        A = fill_padded_actions(actions, action_is_pad)
        noise = torch.randn_like(A)
        t = sample_time(A.shape[0], alpha=self.time_alpha, device=A.device)
        x_t = interpolate(A, noise, t)
        v = self.velocity(x_t, t, self.prefix_cache(context, context_mask, state))
        err = F.mse_loss(v, target_velocity(A, noise), reduction="none")
        return masked_mean(err, loss_weights(action_is_pad, action_dim_mask, self.action_dim))

    @torch.no_grad()
    def sample_actions(
        self, context, context_mask, generator=None, noise=None, num_steps=None, state=None
    ):
        cache = self.prefix_cache(context, context_mask, state)
        x1 = noise if noise is not None else self.initial_noise(context, generator)
        return self._bound(
            euler_integrate(
                lambda x, t: self.velocity(x, t, cache), x1, num_steps or self.num_steps
            )
        )

    def sample_actions_guided(
        self,
        context: torch.Tensor,
        context_mask: torch.Tensor,
        prev_actions: torch.Tensor,
        weights: torch.Tensor,
        max_guidance_weight: float = 5.0,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
        num_steps: int | None = None,
        state: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Real-time chunking guided sampling (Black, Galliker, Levine 2506.07339, REFERENCE §3.6).

        ``prev_actions`` (B, H, A): the previous chunk's leftover aligned to this chunk's steps;
        ``weights`` (H,) or (B, H): 1 on the frozen prefix, decaying to 0 (soft mask, e.g.
        ``functional.rtc.prefix_weights``). The Euler steps with one VJP each are
        ``functional.rtc.guided_euler_sample`` over this head's velocity and cached prefix.
        """
        cache = self.prefix_cache(context, context_mask, state)
        x = noise if noise is not None else self.initial_noise(context, generator)
        W = weights.to(x.dtype)
        W = (W[None] if W.dim() == 1 else W)[..., None]
        return self._bound(
            guided_euler_sample(
                lambda x_t, t: self.velocity(x_t, t, cache),
                x,
                prev_actions,
                W,
                num_steps or self.num_steps,
                max_guidance_weight,
            )
        )


class FlowMatchingHead(FlowHead):
    """π0 action expert: flow matching, Euler sampling over a cached prefix."""

    @classmethod
    def suite_kwargs(cls, size: dict[str, object], depth: int) -> dict[str, object]:
        return {**super().suite_kwargs(size, depth), "num_steps": 10}

    def __init__(
        self,
        context_dim: int,
        action_dim: int,
        action_horizon: int,
        width: int = 256,
        depth: int = 4,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        num_steps: int = 10,
        time_conditioning: str = "concat",
        state_dim: int = 0,
    ) -> None:
        super().__init__(context_dim, action_dim, action_horizon, width)
        if time_conditioning not in ("concat", "adarms"):
            raise ConfigError(
                f"flow_matching head: time_conditioning must be 'concat' (π0) or 'adarms' (π0.5), "
                f"got {time_conditioning!r}"
            )
        if num_steps < 1:
            raise ConfigError(f"flow_matching head: num_steps must be >= 1, got {num_steps}")
        self.num_steps = num_steps
        self.time_conditioning = time_conditioning
        self.state_dim = state_dim
        self.action_in = nn.Linear(action_dim, width)
        if time_conditioning == "concat":
            self.action_time_mlp = nn.Sequential(
                nn.Linear(2 * width, width), nn.SiLU(), nn.Linear(width, width)
            )
            cond_dim = 0
        else:
            self.time_mlp = nn.Sequential(
                nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU()
            )
            cond_dim = width
        self.state_in = nn.Linear(state_dim, width) if state_dim > 0 else None
        self.layers = nn.ModuleList(
            ExpertLayer(width, num_heads, mlp_ratio, cond_dim) for _ in range(depth)
        )
        self.final_norm = RMSNorm(width, cond_dim)
        self.action_out = nn.Linear(width, action_dim)

    # ---- prefix (once per chunk) ----------------------------------------------------------
    def prefix_cache(
        self, context: torch.Tensor, context_mask: torch.Tensor, state: torch.Tensor | None = None
    ) -> FlowPrefixCache:
        self._check(context, context_mask)
        B, N = context_mask.shape
        prefix = self.context_proj(context)
        kvs = [layer.project_prefix(prefix) for layer in self.layers]  # type: ignore[operator]
        H = self.action_horizon
        if self.state_in is not None:
            if state is None or state.shape != (B, self.state_dim):
                raise ConfigError(
                    f"flow_matching head: state_dim={self.state_dim} needs state (B, {self.state_dim}), "
                    f"got {None if state is None else tuple(state.shape)}"
                )
            state_token = self.state_in(state)[:, None]
            suffix_ar = [1, 1] + [0] * (H - 1)
        else:
            state_token = None
            suffix_ar = [1] + [0] * (H - 1)
        S = len(suffix_ar)
        # filled on the device (no host-to-device copy: CUDA-graph capture forbids one)
        ar = torch.zeros(N + S, dtype=torch.long, device=context.device)
        for i, v in enumerate(suffix_ar):
            if v:  # fill_ takes the scalar as a kernel argument; ar[i] = 1 would copy it
                ar.narrow(0, N + i, 1).fill_(1)
        valid = torch.cat([context_mask, context_mask.new_ones(B, S)], 1)
        mask = make_attn_mask(valid, ar)[:, N:, :]  # suffix rows only: the prefix is not recomputed
        return FlowPrefixCache(kvs, mask[:, None], state_token)

    # ---- one velocity evaluation (what every Euler / guided step runs) ---------------------
    def velocity(self, x_t: torch.Tensor, t: torch.Tensor, cache: FlowPrefixCache) -> torch.Tensor:
        """v_θ(x_t, t) (B, H, A) for times ``t`` (B,) in the openpi convention (1 = noise)."""
        temb = sincos_time_embedding(t, self.width, 4e-3, 4.0).to(x_t.dtype)
        if self.time_conditioning == "concat":
            mlp = self.action_time_mlp
            a = self.action_in(x_t)
            tokens = mlp(torch.cat([a, temb[:, None].expand_as(a)], -1))
            cond = None
        else:
            tokens, cond = self.action_in(x_t), self.time_mlp(temb)
        if cache.state_token is not None:
            tokens = torch.cat([cache.state_token, tokens], 1)
        for layer, kv in zip(self.layers, cache.kvs):
            tokens = layer(tokens, kv, cache.mask, cond)
        h, _ = self.final_norm(tokens, cond)
        return self.action_out(h[:, -self.action_horizon :])


def build(cfg=None, *, context_dim: int, action_dim: int, action_horizon: int) -> FlowMatchingHead:
    c = config_from(FlowMatchingHeadConfig, cfg)
    return FlowMatchingHead(context_dim, action_dim, action_horizon, **vars(c))
