"""Foresight: predicting the frozen vision encoder's features of a future frame.

Two uses of one target, the encoder's tokens of frame t+k pooled to a few latent tokens:

* **Visual chain-of-thought** (``VLAConfig.subgoal``; CoT-VLA, Zhao et al. 2025, arXiv
  2503.22020). The policy first predicts a subgoal observation k frames ahead, then the action
  chunk conditioned on it. CoT-VLA generates the subgoal as 256 discrete image tokens of VILA-U's
  RQ-VAE with causal attention, then the action tokens with full attention among themselves. Here
  the subgoal is ``grid x grid`` latent tokens per camera of the policy's *frozen* vision encoder
  (the encoder's token map average-pooled to the grid, each token standardized): no image decoder
  to train or run, a target computed once per frame by the feature cache, and a handful of
  autoregressive steps instead of 256, so it trains in minutes on a CPU. The price: the subgoal
  cannot be rendered as an image; the evaluation compares it to the real future frame in latent
  space instead (``subgoal_metrics``). The subgoal decoder attends causally over the subgoal
  tokens (teacher-forced in training, generated one token at a time at inference) and across to
  the prefix; the action head then reads [prefix, subgoal tokens], and the heads used with it
  (L1 parallel decoding, flow matching, bins) attend fully among their action tokens, which is
  CoT-VLA's hybrid attention. As in the paper the head is trained on the true subgoal (teacher
  forcing) and acts on the generated one.

* **World-model auxiliary objective** (``VLAConfig.world_model``, any recipe with cameras). A small
  model predicts the future latent from the pooled context and the action chunk; its loss,
  weighted by ``weight``, trains it and (through the context) the backbone. It follows the
  latent-future-prediction line of work: FLARE (Zheng et al. 2025, arXiv 2505.15659: align
  policy features with the embeddings of the observation H steps ahead, frozen encoder, a few
  future tokens), with the survey's "world-model-based approaches" trend; GR-1 (arXiv
  2312.13139) predicts future *pixels* instead, which a CPU cannot afford. With a trainable
  encoder the target is the encoder's current features under stop-gradient (a moving target, as
  TD-MPC2's latent consistency loss, arXiv 2310.16828). With ``rank_samples=N > 1`` the learned
  model also steers a sampling head at inference (policy steering as in FOREWARN, Wu et al.
  2025, arXiv 2502.01828, and V-GPS, arXiv 2410.13816, there with a VLM / value function as the
  verifier): N chunks are sampled, the world model predicts each one's future latent, and the
  rule picks one (see ``rank_chunks``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlastack.errors import ConfigError, DataError
from vlastack.models.common import make_config, masked_mean
from vlastack.registry import Registry

# Batch keys the data loader fills when the model asks for a future frame (``future_offset``):
# the frame t+k of each camera (C, H, W), or its cached encoder features (cams, n, D_enc); steps
# past the episode end are clamped to its last frame (the goal state) and flagged in FUTURE_PAD.
FUTURE_FEATURES_KEY = "future.image_features"
FUTURE_PAD_KEY = "future_is_pad"
RANK_RULES = ("auto", "subgoal", "consensus")


def future_image_key(camera: str) -> str:
    return f"future.images.{camera}"


@dataclass
class SubgoalConfig:
    """``VLAConfig.subgoal`` (empty = off): CoT-VLA's visual chain-of-thought in latent space."""

    horizon: int = 8  # k: the subgoal is the frame k steps ahead (CoT-VLA's n)
    grid: int = 2  # subgoal tokens per camera = grid * grid pooled encoder tokens
    depth: int = 1  # decoder layers (causal self-attention over subgoal tokens + cross-attention)
    num_heads: int = 4
    weight: float = 1.0  # weight of the subgoal latent loss


@dataclass
class WorldModelConfig:
    """``VLAConfig.world_model`` (weight 0 = off): future-latent prediction from context + chunk."""

    weight: float = 0.0
    horizon: int = 0  # k; 0 = the action horizon (the frame after the chunk)
    grid: int = 1  # latent tokens per camera
    hidden: int = 256
    rank_samples: int = 1  # N > 1: sample N chunks and keep the one the rule picks
    rank_rule: str = "auto"  # "subgoal", "consensus", or "auto" (subgoal when there is one)


# `vlastack list objectives`: the model-config switches of this module and the works they follow
OBJECTIVES: Registry[type] = Registry("objective")
OBJECTIVES.add(
    "subgoal",
    SubgoalConfig,
    "CoT-VLA (arXiv 2503.22020): predict frame t+k as frozen-encoder latent tokens (causal), "
    "then the chunk on it; --model.subgoal.horizon=8 (recipe cot_vla)",
)
OBJECTIVES.add(
    "world_model",
    WorldModelConfig,
    "future-latent auxiliary loss from context + chunk, as FLARE (arXiv 2505.15659); "
    "--model.world_model.weight=0.1 --model.world_model.horizon=8",
)
OBJECTIVES.add(
    "world_model.rank_samples",
    WorldModelConfig,
    "policy steering as FOREWARN (arXiv 2502.01828): sample N chunks (flow/diffusion), keep the "
    "one whose predicted future is nearest the subgoal, else the medoid; --model.world_model.rank_samples=8",
)


def subgoal_config(cfg: Any) -> SubgoalConfig | None:
    if not cfg.subgoal:
        return None
    return make_config(SubgoalConfig, cfg.subgoal, "model config subgoal")


def world_model_config(cfg: Any) -> WorldModelConfig | None:
    wm = make_config(WorldModelConfig, cfg.world_model or {}, "model config world_model")
    if wm.weight <= 0:
        if wm.rank_samples > 1:
            raise ConfigError(
                "model config world_model.rank_samples > 1 ranks chunks with the learned world "
                "model; set world_model.weight > 0 (e.g. --model.world_model.weight=0.1) to train one"
            )
        return None
    return wm


def future_offset(cfg: Any) -> int:
    """Frames ahead the data loader must supply (0 = none)."""
    sg, wm = subgoal_config(cfg), world_model_config(cfg)
    ks = {sg.horizon} if sg else set()
    if wm is not None:
        ks.add(wm.horizon or int(cfg.action_horizon))
    return ks.pop() if ks else 0


def check_foresight(cfg: Any) -> None:
    """Config checks, each naming the field and the fix (``VLAConfig.validate`` calls it)."""
    sg, wm = subgoal_config(cfg), world_model_config(cfg)
    if sg is None and wm is None:
        return
    what = "subgoal" if sg is not None else "world_model"
    if not cfg.cameras:
        raise ConfigError(f"model config {what} predicts a future camera frame; it needs cameras")
    if cfg.action_tokens_in_lm:
        raise ConfigError(f"model config {what} needs an action head (action_tokens_in_lm=False)")
    for name, c in (("subgoal", sg), ("world_model", wm)):
        if c is None:
            continue
        if c.grid < 1 or c.horizon < 0 or (name == "subgoal" and c.horizon < 1):
            raise ConfigError(
                f"model config {name}: grid must be >= 1 and horizon >= 1, got grid={c.grid}, "
                f"horizon={c.horizon}"
            )
    if sg is not None and wm is not None and (wm.horizon or cfg.action_horizon) != sg.horizon:
        raise ConfigError(
            f"model config: subgoal.horizon={sg.horizon} and world_model.horizon="
            f"{wm.horizon or cfg.action_horizon} differ; the loader supplies one future frame, so "
            "set them equal"
        )
    if wm is not None and wm.rank_rule not in RANK_RULES:
        raise ConfigError(
            f"model config world_model.rank_rule must be one of {RANK_RULES}, got {wm.rank_rule!r}"
        )
    if wm is not None and wm.rank_rule == "subgoal" and sg is None:
        raise ConfigError(
            "model config world_model.rank_rule='subgoal' needs a subgoal (the cot_vla recipe); "
            "use 'consensus' or 'auto'"
        )


# ----------------------------------------------------------------------------- targets
def latent_tokens(feats: torch.Tensor, grid: int) -> torch.Tensor:
    """(B, cams, n, D) encoder tokens -> (B, cams * grid², D): the token map average-pooled to a
    ``grid x grid`` map when ``n`` is square (the encoders' row-major maps), else to ``grid²``
    consecutive groups, then each token standardized over channels (layer norm, no affine)."""
    B, C, n, D = feats.shape
    x = feats.float().reshape(B * C, n, D).transpose(1, 2)  # (B*C, D, n)
    side = math.isqrt(n)
    if side * side == n and side >= grid:
        x = F.adaptive_avg_pool2d(x.reshape(B * C, D, side, side), grid).flatten(2)
    else:
        x = F.adaptive_avg_pool1d(x, grid * grid)
    x = x.transpose(1, 2).reshape(B, C * grid * grid, D)
    return F.layer_norm(x, (D,))


def encoder_tokens(vision: Any, image_size: tuple[int, int]) -> tuple[int, int]:
    """(tokens per frame, channels) of the vision encoder, from one dummy frame."""
    was = vision.training
    vision.eval()
    with torch.no_grad():
        dev = next(vision.parameters()).device
        tok = vision.encode_frames(0, torch.zeros(1, 3, *image_size, device=dev))
    vision.train(was)
    return int(tok.shape[1]), int(tok.shape[2])


@torch.no_grad()
def future_features(vision: Any, batch: Mapping[str, Any], cameras: list[str]) -> torch.Tensor:
    """The encoder's tokens of the future frame, (B, cams, n, D_enc), without gradients: the
    cached ``future.image_features`` or ``future.images.<cam>`` encoded now."""
    dev = next(vision.parameters()).device
    cached = batch.get(FUTURE_FEATURES_KEY)
    if isinstance(cached, torch.Tensor):
        return cached.to(dev, torch.float32)
    out = []
    for i, cam in enumerate(cameras):
        x = batch.get(future_image_key(cam))
        if not isinstance(x, torch.Tensor):
            raise DataError(
                f"the batch has no '{future_image_key(cam)}' (the frame the subgoal / world "
                "model predicts); build the dataset with WindowedDataset(..., future_offset="
                "foresight.future_offset(model_config)), as `vlastack train` does"
            )
        out.append(vision.encode_frames(i, x.to(dev, torch.float32)))
    return torch.stack(out, 1)


@torch.no_grad()
def current_features(vision: Any, batch: Mapping[str, Any], cameras: list[str]) -> torch.Tensor:
    """The encoder's tokens of the newest observed frame, (B, cams, n, D_enc)."""
    cached = batch.get("observation.image_features")
    if isinstance(cached, torch.Tensor):
        return cached[:, :, -1].float()
    dev = next(vision.parameters()).device
    return torch.stack(
        [
            vision.encode_frames(i, batch[f"observation.images.{c}"][:, -1].to(dev).float())
            for i, c in enumerate(cameras)
        ],
        1,
    )


def latent_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared error (B,) between (B, S, D) latent tokens."""
    return (pred - target).pow(2).mean(dim=(1, 2))


# ----------------------------------------------------------------------------- modules
class SubgoalDecoder(nn.Module):
    """Causal transformer decoder over S subgoal tokens, cross-attending to the prefix."""

    def __init__(self, cfg: SubgoalConfig, width: int, enc_dim: int, num_tokens: int) -> None:
        super().__init__()
        self.num_tokens = num_tokens
        self.start = nn.Parameter(torch.randn(1, 1, width) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, num_tokens, width) * 0.02)
        self.inp = nn.Linear(enc_dim, width)  # previous subgoal latent -> next query token
        layer = nn.TransformerDecoderLayer(
            width, cfg.num_heads, 4 * width, dropout=0.0, batch_first=True, norm_first=True
        )
        self.decoder = nn.TransformerDecoder(layer, cfg.depth)
        self.out = nn.Linear(width, enc_dim)
        self.cond = nn.Linear(enc_dim, width)  # subgoal latent -> context token for the head
        self.cond_pos = nn.Parameter(torch.randn(1, num_tokens, width) * 0.02)

    def _run(self, prev: torch.Tensor, ctx: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Outputs for queries [start, inp(prev)] (B, j+1, D_enc), causal among themselves."""
        q = torch.cat([self.start.expand(ctx.shape[0], -1, -1), self.inp(prev)], 1)
        q = q + self.pos[:, : q.shape[1]]
        causal = nn.Transformer.generate_square_subsequent_mask(q.shape[1], device=q.device)
        h = self.decoder(q, ctx, tgt_mask=causal, tgt_is_causal=True, memory_key_padding_mask=~mask)
        return self.out(h)

    def teacher_forced(
        self, ctx: torch.Tensor, mask: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        """Predicted subgoal latents (B, S, D_enc), token j from the true tokens before it."""
        return self._run(target[:, :-1], ctx, mask)

    def generate(self, ctx: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Subgoal latents (B, S, D_enc) generated one token at a time."""
        prev = ctx.new_zeros(ctx.shape[0], 0, self.out.out_features)
        for _ in range(self.num_tokens):
            nxt = self._run(prev, ctx, mask)[:, -1:]
            prev = torch.cat([prev, nxt], 1)
        return prev

    def as_context(self, latents: torch.Tensor) -> torch.Tensor:
        return self.cond(latents) + self.cond_pos


class WorldModel(nn.Module):
    """MLP: [pooled context, flattened action chunk] -> S future latent tokens (B, S, D_enc)."""

    def __init__(
        self,
        cfg: WorldModelConfig,
        width: int,
        enc_dim: int,
        num_tokens: int,
        action_dim: int,
        action_horizon: int,
    ) -> None:
        super().__init__()
        self.num_tokens, self.enc_dim = num_tokens, enc_dim
        self.net = nn.Sequential(
            nn.Linear(width + action_dim * action_horizon, cfg.hidden),
            nn.GELU(),
            nn.Linear(cfg.hidden, cfg.hidden),
            nn.GELU(),
            nn.Linear(cfg.hidden, num_tokens * enc_dim),
        )

    def forward(self, ctx: torch.Tensor, mask: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        x = torch.cat([masked_mean(ctx, mask), actions.flatten(1)], 1)
        return self.net(x).view(-1, self.num_tokens, self.enc_dim)


class Foresight(nn.Module):
    """The subgoal decoder and/or the world model of one VLA (``VLA.foresight``)."""

    def __init__(self, cfg: Any, width: int, vision: Any, head: Any = None) -> None:
        super().__init__()
        self.cameras = list(cfg.cameras)
        self.sg_cfg, self.wm_cfg = subgoal_config(cfg), world_model_config(cfg)
        n_enc, enc_dim = encoder_tokens(vision, (int(cfg.image_size[0]), int(cfg.image_size[1])))
        self.subgoal: SubgoalDecoder | None = None
        self.world_model: WorldModel | None = None
        C = len(self.cameras)
        if self.sg_cfg is not None:
            self._check_grid("subgoal", self.sg_cfg.grid, n_enc)
            self.subgoal = SubgoalDecoder(self.sg_cfg, width, enc_dim, C * self.sg_cfg.grid**2)
        if self.wm_cfg is not None:
            self._check_grid("world_model", self.wm_cfg.grid, n_enc)
            # heads whose sampler draws noise declare it (cuda_graph_noise: flow, diffusion)
            if self.wm_cfg.rank_samples > 1 and not getattr(head, "cuda_graph_noise", False):
                raise ConfigError(
                    f"model config world_model.rank_samples={self.wm_cfg.rank_samples} ranks "
                    f"sampled chunks, but head '{cfg.head}' is deterministic (every sample would "
                    "be the same chunk); use a sampling head (flow_matching, diffusion) or "
                    "rank_samples=1"
                )
            self.world_model = WorldModel(
                self.wm_cfg,
                width,
                enc_dim,
                C * self.wm_cfg.grid**2,
                int(cfg.action_dim),
                int(cfg.action_horizon),
            )

    @staticmethod
    def _check_grid(name: str, grid: int, n_enc: int) -> None:
        if grid * grid > n_enc:
            raise ConfigError(
                f"model config {name}.grid={grid} asks for {grid * grid} tokens per camera but the "
                f"vision encoder makes {n_enc}; lower {name}.grid"
            )

    @property
    def rank_samples(self) -> int:
        return self.wm_cfg.rank_samples if self.wm_cfg is not None else 1

    def loss(
        self,
        vision: Any,
        batch: Mapping[str, Any],
        ctx: torch.Tensor,
        mask: torch.Tensor,
        head_ctx: torch.Tensor,
        head_mask: torch.Tensor,
        actions: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(weighted foresight losses (B,), the head's context with the true subgoal appended)."""
        feats = future_features(vision, batch, self.cameras)
        total = ctx.new_zeros(ctx.shape[0])
        if self.subgoal is not None and self.sg_cfg is not None:
            target = latent_tokens(feats, self.sg_cfg.grid)
            pred = self.subgoal.teacher_forced(ctx, mask, target)
            total = total + self.sg_cfg.weight * latent_loss(pred, target)
            head_ctx, head_mask = _append(head_ctx, head_mask, self.subgoal.as_context(target))
        if self.world_model is not None and self.wm_cfg is not None:
            target = latent_tokens(feats, self.wm_cfg.grid)
            pred = self.world_model(ctx, mask, actions)
            total = total + self.wm_cfg.weight * latent_loss(pred, target)
        return total, head_ctx, head_mask

    def extend(
        self, prefix: torch.Tensor, pmask: torch.Tensor, ctx: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Inference: generate the subgoal from the prefix and append it to the head's context;
        -> (context, mask, subgoal latents (B, S, D_enc) or None)."""
        if self.subgoal is None:
            return ctx, mask, None
        goal = self.subgoal.generate(prefix, pmask)
        ctx, mask = _append(ctx, mask, self.subgoal.as_context(goal))
        return ctx, mask, goal

    def rank(
        self,
        prefix: torch.Tensor,
        pmask: torch.Tensor,
        ctx: torch.Tensor,
        mask: torch.Tensor,
        goal: torch.Tensor | None,
        sampler: Callable[..., torch.Tensor],
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """Sample ``rank_samples`` chunks per observation and keep the one ``rank_chunks`` picks."""
        assert self.world_model is not None and self.wm_cfg is not None
        n, B = self.wm_cfg.rank_samples, ctx.shape[0]
        chunks = sampler(
            ctx.repeat_interleave(n, 0), mask.repeat_interleave(n, 0), generator=generator
        )
        z = self.world_model(prefix.repeat_interleave(n, 0), pmask.repeat_interleave(n, 0), chunks)
        rule = self.wm_cfg.rank_rule
        if rule == "auto":
            rule = "subgoal" if goal is not None else "consensus"
        best = rank_chunks(z.view(B, n, *z.shape[1:]), goal if rule == "subgoal" else None)
        return chunks.view(B, n, *chunks.shape[1:])[torch.arange(B), best]


def rank_chunks(z: torch.Tensor, goal: torch.Tensor | None) -> torch.Tensor:
    """Index (B,) of the chosen chunk from predicted future latents ``z`` (B, N, S, D).

    The rule, on each chunk's global latent (its standardized tokens averaged): with a ``goal``
    (B, S', D) (the generated subgoal), the chunk whose predicted future is nearest the goal's
    (Euclidean distance); without one ("consensus"), the medoid: the chunk whose predicted future
    has the smallest summed distance to the other N-1 (it drops outlier samples whose predicted
    outcome disagrees with the rest). Distances, not cosines: the pooled features of one scene
    share most of their direction (cosines near 1), so their differences decide."""
    g = z.mean(dim=-2)  # (B, N, D)
    if goal is not None:
        return (g - goal.mean(dim=-2)[:, None]).norm(dim=-1).argmin(1)
    return torch.cdist(g, g).sum(-1).argmin(1)


def _append(
    ctx: torch.Tensor, mask: torch.Tensor, tokens: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    ones = torch.ones(tokens.shape[:2], dtype=torch.bool, device=mask.device)
    return torch.cat([ctx, tokens.to(ctx.dtype)], 1), torch.cat([mask, ones], 1)


@torch.no_grad()
def subgoal_metrics(model: Any, batch: Mapping[str, Any]) -> dict[str, float]:
    """How close the generated subgoal is to the real frame t+k, in the encoder's latent space,
    on one normalized batch (global latents: standardized tokens averaged, then centred on the
    batch's mean real future, because the pooled features of one scene point almost the same way
    and raw cosines all sit near 1):

    * ``subgoal_cos``: mean cosine of the generated subgoal and the real future;
    * ``subgoal_cos_copy``: the same for the trivial guess "nothing changes" (the current frame);
    * ``subgoal_nn_top1``: nearest-frame retrieval, the share of samples whose subgoal is nearer
      (Euclidean) to their own real future than to any other sample's (chance ``1/B``, in
      ``subgoal_nn_chance``), and ``subgoal_nn_top1_copy`` for the current frame."""
    fs = getattr(model, "foresight", None)
    if fs is None or fs.subgoal is None:
        return {}
    prefix, pmask, _ = model.encode_prefix(batch)
    grid = fs.sg_cfg.grid
    goal = fs.subgoal.generate(prefix, pmask).mean(1)
    real = latent_tokens(future_features(model.vision, batch, fs.cameras), grid).mean(1)
    now = latent_tokens(current_features(model.vision, batch, fs.cameras), grid).mean(1)
    centre = real.mean(0, keepdim=True)
    idx = torch.arange(real.shape[0], device=real.device)

    def cos(a: torch.Tensor) -> float:
        return float(F.cosine_similarity(a - centre, real - centre, dim=-1).mean())

    def top1(a: torch.Tensor) -> float:
        return float((torch.cdist(a, real).argmin(1) == idx).float().mean())

    return {
        "subgoal_cos": cos(goal),
        "subgoal_cos_copy": cos(now),
        "subgoal_nn_top1": top1(goal),
        "subgoal_nn_top1_copy": top1(now),
        "subgoal_nn_chance": 1.0 / real.shape[0],
    }


__all__ = [
    "FUTURE_FEATURES_KEY",
    "FUTURE_PAD_KEY",
    "RANK_RULES",
    "OBJECTIVES",
    "Foresight",
    "SubgoalConfig",
    "SubgoalDecoder",
    "WorldModel",
    "WorldModelConfig",
    "check_foresight",
    "future_features",
    "future_image_key",
    "future_offset",
    "latent_tokens",
    "rank_chunks",
    "subgoal_metrics",
    "world_model_config",
    "subgoal_config",
]
