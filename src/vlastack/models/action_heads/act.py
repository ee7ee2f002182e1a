"""ACT's CVAE chunk head (Zhao et al. 2304.13705, ``detr/models/detr_vae.py``).

Training: a transformer encoder over [CLS, action tokens] (padded steps masked out) gives μ, log σ²
of a latent z (dim 32); z = μ + σ·ε conditions a decoder whose H learned queries attend to
[z token, context]. Loss = masked L1 + kl_weight·KL(q(z|A) ‖ N(0, I)) with kl_weight 10.
Inference: z = 0 (the prior mean), so sampling is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vlastack.models.action_heads.base import ActionHead
from vlastack.models.layers.attention import none_if_all_valid
from vlastack.models.layers.block import Block
from vlastack.models.layers.config import config_from
from vlastack.models.layers.decoder import CrossDecoder, DecoderPlan
from vlastack.models.layers.inference import derived, fast_inference, plan_params
from vlastack.models.layers.linear import fast_linear, plan_linear
from vlastack.models.layers.masking import loss_weights, masked_mean


@dataclass
class ACTHeadConfig:
    width: int = 256
    encoder_depth: int = 2
    decoder_depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 4.0
    latent_dim: int = 32
    kl_weight: float = 10.0
    # the feed-forward activation of the CVAE encoder and decoder blocks: "relu" as ACT (and
    # DETR, which it builds on) and LeRobot's ACTPolicy; "gelu" (exact) stays the default so
    # checkpoints saved before this field load unchanged
    activation: str = "gelu"


class ACTHead(ActionHead):
    """CVAE over action chunks; L1 reconstruction + KL."""

    cuda_graph_blocker = None
    export_kind = "single_pass"  # z = 0 at inference: one decoder pass

    @classmethod
    def suite_kwargs(cls, size: dict[str, object], depth: int) -> dict[str, object]:
        return {**size, "encoder_depth": max(1, depth // 2), "decoder_depth": depth}

    def __init__(
        self,
        context_dim: int,
        action_dim: int,
        action_horizon: int,
        width: int = 256,
        encoder_depth: int = 2,
        decoder_depth: int = 4,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        latent_dim: int = 32,
        kl_weight: float = 10.0,
        activation: str = "gelu",
    ) -> None:
        super().__init__(context_dim, action_dim, action_horizon, width)
        self.latent_dim = latent_dim
        self.kl_weight = kl_weight
        self.cls = nn.Parameter(torch.randn(1, 1, width) * 0.02)
        self.action_in = nn.Linear(action_dim, width)
        self.enc_pos = nn.Parameter(torch.randn(action_horizon + 1, width) * 0.02)
        self.encoder = nn.ModuleList(
            Block(width, num_heads, mlp_ratio, activation=activation) for _ in range(encoder_depth)
        )
        self.enc_norm = nn.LayerNorm(width)
        self.to_latent = nn.Linear(width, 2 * latent_dim)
        self.latent_in = nn.Linear(latent_dim, width)
        self.queries = nn.Parameter(torch.randn(action_horizon, width) * 0.02)
        self.decoder = CrossDecoder(
            width, decoder_depth, num_heads, mlp_ratio, activation=activation
        )
        self.action_out = nn.Linear(width, action_dim)

    def encode(self, actions: torch.Tensor, action_is_pad: torch.Tensor):
        """(B, H, A) → μ, log σ² (B, latent_dim); padded steps are masked out of attention."""
        B = actions.shape[0]
        x = torch.cat([self.cls.expand(B, -1, -1), self.action_in(actions)], 1) + self.enc_pos
        valid = torch.cat([torch.ones_like(action_is_pad[:, :1]), ~action_is_pad], 1)
        mask = valid[:, None, None, :]
        for blk in self.encoder:
            x = blk(x, self_mask=mask)
        mu, logvar = self.to_latent(self.enc_norm(x[:, 0])).chunk(2, -1)
        return mu, logvar

    def decode(self, z: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor):
        B = z.shape[0]
        memory = torch.cat([self.latent_in(z)[:, None], self.context_proj(context)], 1)
        mem_mask = torch.cat([torch.ones_like(context_mask[:, :1]), context_mask], 1)
        kvs = self.decoder.context_kv(memory)
        h = self.decoder(self.queries.unsqueeze(0).expand(B, -1, -1), kvs, mem_mask)
        return self.action_out(h)

    def loss(self, context, context_mask, actions, action_is_pad, action_dim_mask=None):
        self._check(context, context_mask, actions)
        mu, logvar = self.encode(actions, action_is_pad)
        z = mu + (0.5 * logvar).exp() * torch.randn_like(mu)
        pred = self.decode(z, context, context_mask)
        l1 = masked_mean(
            (pred - actions).abs(), loss_weights(action_is_pad, action_dim_mask, self.action_dim)
        )
        kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).sum(-1)
        return l1 + self.kl_weight * kl

    @torch.no_grad()
    def sample_actions(self, context, context_mask, generator=None):
        """z = 0 at inference (deterministic; ``generator`` unused)."""
        self._check(context, context_mask)
        if fast_inference(self):
            return self._sample_fast(context, context_mask)
        z = context.new_zeros(context.shape[0], self.latent_dim)
        return self.decode(z, context, context_mask)

    def _query_constants(self) -> tuple[torch.Tensor, torch.Tensor]:
        """What the decoder computes before it first reads the memory, which depends on weights
        only: the first block's self-attention over the learned queries, x (1, H, W), and that
        block's cross-attention queries (1, heads, H, hd)."""
        blk = self.decoder.blocks[0]
        assert isinstance(blk, Block) and blk.cross_attn is not None and blk.norm2 is not None
        params = [self.queries]
        for m in (blk.norm1, blk.self_attn, blk.norm2, blk.cross_attn.q):
            params.extend(m.parameters())

        def make() -> tuple[torch.Tensor, torch.Tensor]:
            assert blk.cross_attn is not None and blk.norm2 is not None
            x = self.queries.unsqueeze(0)
            h = blk.norm1(x)
            x = x + blk.self_attn(h, blk.self_attn.project_kv(h))
            return x, blk.cross_attn._split(blk.cross_attn.q(blk.norm2(x)))

        return derived(self, "_query_pack", params, make)

    def _sample_fast(self, context: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        """``decode(0, …)`` with the same math and fewer ops: latent_in(0) is its bias, the
        query-only part of block 0 is cached, all layers' memory K/V come from one GEMM, and the
        decoder runs as one flat ``DecoderPlan`` loop."""
        B = context.shape[0]
        valid = none_if_all_valid(context_mask)
        cross_mask = (
            None
            if valid is None
            else torch.cat([torch.ones_like(valid[:, :1]), valid], 1)[:, None, None, :]
        )
        plan = self._plan()
        if plan is not None:
            dec, proj, z, x0, q0, out = plan
            memory = torch.cat([z.expand(B, 1, -1), dec.lin(context, proj)], 1)
            x = dec.run(
                x0.expand(B, -1, -1),
                dec.context_kv(memory),
                cross_mask,
                first_q=q0.expand(B, *q0.shape[1:]),
            )
            return dec.lin(x, out)
        z_token = self.latent_in.bias.expand(B, 1, -1)
        memory = torch.cat([z_token, fast_linear(self.context_proj, context)], 1)
        kvs = self.decoder.context_kv(memory)
        x0, q0 = self._query_constants()
        blocks = list(self.decoder.blocks)
        first = blocks[0]
        assert isinstance(first, Block)
        x = first._after_self_attn(
            x0.expand(B, -1, -1), kvs[0], cross_mask, _no_mod, q0.expand(B, -1, -1, -1)
        )
        for blk, kv in zip(blocks[1:], kvs[1:]):
            x = blk(x, None, kv, cross_mask)
        return fast_linear(self.action_out, self.decoder.final_norm(x))

    def _plan(self) -> tuple | None:
        """Everything ``_sample_fast`` reads, built once per weight version: the decoder plan,
        the context projection's pack, the z token, block 0's query constants, the output layer.
        One cache check per chunk instead of one per layer."""
        params = plan_params(
            self,
            "plan_params",
            lambda: [
                self.context_proj,
                self.latent_in,
                (self, "queries"),
                self.decoder,
                self.action_out,
            ],
            lambda: DecoderPlan.supports(self.decoder),
        )
        if params is None:
            return None

        def make() -> tuple:
            dec = DecoderPlan(self.decoder)
            x0, q0 = self._query_constants()
            if dec.native:  # the native loop takes queries with the heads side by side
                q0 = q0.transpose(1, 2).reshape(1, x0.shape[1], -1)
            return (
                dec,
                plan_linear(self.context_proj.weight, self.context_proj.bias, dec.onednn, rows=3),
                self.latent_in.bias.detach(),
                x0,
                q0,
                # 7 outputs: never worth a oneDNN pack; native where the decoder is
                plan_linear(self.action_out.weight, self.action_out.bias, False),
            )

        return derived(self, "_plan", params, make)


def _no_mod(h: torch.Tensor, i: int) -> torch.Tensor:
    return h


def build(cfg=None, *, context_dim: int, action_dim: int, action_horizon: int) -> ACTHead:
    return ACTHead(context_dim, action_dim, action_horizon, **vars(config_from(ACTHeadConfig, cfg)))
