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
from vlastack.models.layers.block import Block
from vlastack.models.layers.config import config_from
from vlastack.models.layers.decoder import CrossDecoder
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
    bf16_atol = 0.08  # bf16 eager vs float32 (tests/test_action_heads_bf16.py): one pass

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
        z = context.new_zeros(context.shape[0], self.latent_dim)
        return self.decode(z, context, context_mask)


def build(cfg=None, *, context_dim: int, action_dim: int, action_horizon: int) -> ACTHead:
    return ACTHead(context_dim, action_dim, action_horizon, **vars(config_from(ACTHeadConfig, cfg)))
