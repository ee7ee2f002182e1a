"""LeRobot X-VLA's action network: the soft-prompted, domain-aware transformer and its action
spaces, as vlastack modules with LeRobot 0.6.1's state-dict key names (``model.transformer.*``).

What X-VLA computes (LeRobot 0.6.1 ``policies/xvla/soft_transformer.py``, ``action_hub.py``,
``modeling_xvla.py``; facts, our own code):

* Each step's input tokens are one per action of the chunk: ``[noisy action (dim_action),
  proprio (dim_proprio), time embedding (dim_time)]`` through ``action_encoder``, a
  *domain-aware* linear layer whose weight and bias are rows of two embeddings indexed by the
  domain id (``fc``: (num_domains, in * out) viewed as (in, out), used as ``x @ W + b``).
* Then the Florence-2 encoder output (``vlm_proj``) and the other cameras' image tokens
  (``aux_visual_proj``), plain linear layers (domain-aware ones with ``use_hetero_proj``); a
  learned position embedding ``pos_emb`` over the whole sequence; then ``len_soft_prompts``
  soft-prompt tokens of the domain (``soft_prompt_hub``) appended without position embedding.
* ``depth`` pre-LayerNorm blocks (``norm1`` -> fused qkv attention, no mask -> ``proj``;
  ``norm2`` -> ``fc1`` -> GELU(tanh) -> ``fc2``), the final ``norm`` over the action tokens and
  ``action_decoder`` (domain-aware) back to ``dim_action``: the prediction of the *clean* chunk.
* Time embedding: ``[cos(t f), sin(t f)]`` with ``f = exp(-ln(100) * arange(dim/2) / (dim/2))``
  in the time's dtype (an extra zero column for odd ``dim_time``).
* Sampling (``generate_actions``): ``x1`` ~ N(0, 1) of (B, chunk_size, dim_action), ``action``
  starts at 0; for ``i = steps .. 1``: ``t = i / steps``, ``x_t = x1 * t + action * (1 - t)``,
  ``action = transformer(x_t)`` (after the action space's ``preprocess``), finally the action
  space's ``postprocess``.

Action spaces (``action_mode``): what ``preprocess`` / ``postprocess`` do at inference.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlastack.errors import ConfigError


@dataclass(frozen=True)
class ActionSpace:
    """An X-VLA ``action_mode`` at inference: ``dim_action`` (model width), the gripper columns
    zeroed in the proprio and the noisy action before each step (``zero``), those passed
    through a sigmoid at the end (``sigmoid``), and how many columns are returned (``keep``,
    None: all). ``auto`` pads the real action to ``max_action_dim`` and trims it back."""

    name: str
    dim_action: int
    zero: tuple[int, ...] = ()
    sigmoid: tuple[int, ...] = ()
    keep: int | None = None
    proprio_dim: int | None = None  # so101_bimanual: proprio must be 12 or 20 wide

    def preprocess(
        self, proprio: torch.Tensor, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.proprio_dim is not None and proprio.shape[-1] not in (
            self.proprio_dim,
            self.dim_action,
        ):
            raise ConfigError(
                f"action_mode {self.name!r} takes a proprio of {self.proprio_dim} or "
                f"{self.dim_action} values, the checkpoint gives {proprio.shape[-1]} "
                "(max_state_dim in config.json); LeRobot 0.6.1 fails the same way"
            )
        if self.proprio_dim is not None and proprio.shape[-1] == self.proprio_dim:
            proprio = F.pad(proprio, (0, self.dim_action - self.proprio_dim))
        if not self.zero:
            return proprio, action
        proprio, action = proprio.clone(), action.clone()
        proprio[..., list(self.zero)] = 0.0
        action[..., list(self.zero)] = 0.0
        return proprio, action

    def postprocess(self, action: torch.Tensor) -> torch.Tensor:
        if self.sigmoid and action.shape[-1] > max(self.sigmoid):
            idx = list(self.sigmoid)
            action = action.clone()
            action[..., idx] = torch.sigmoid(action[..., idx])
        return action if self.keep is None else action[..., : self.keep]


def action_space(mode: str, real_dim: int, max_dim: int) -> ActionSpace:
    """LeRobot 0.6.1's ``ACTION_REGISTRY`` entries, by ``action_mode`` (case-insensitive)."""
    key = mode.lower()
    spaces = {
        "ee6d": ActionSpace("ee6d", 20, (9, 19), (9, 19)),
        "joint": ActionSpace("joint", 14, (6, 13), (6, 13)),
        "agibot_ee6d": ActionSpace("agibot_ee6d", 20),
        "franka_joint7": ActionSpace("franka_joint7", 20, keep=7),
        "auto": ActionSpace("auto", max_dim, keep=real_dim),
        "so101_bimanual": ActionSpace(
            "so101_bimanual", 20, (5, 11), (5, 11), keep=12, proprio_dim=12
        ),
    }
    if key not in spaces:
        raise ConfigError(
            f"config.json 'action_mode' {mode!r} is not an X-VLA action space LeRobot 0.6.1 "
            f"knows ({', '.join(spaces)})"
        )
    return spaces[key]


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 100.0) -> torch.Tensor:
    """(B,) -> (B, dim): ``[cos, sin]`` of ``t * exp(-ln(max_period) * k / half)``."""
    half = dim // 2
    k = torch.arange(half, dtype=t.dtype, device=t.device)
    freqs = torch.exp(-math.log(max_period) * k / half)
    args = t[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class DomainLinear(nn.Module):
    """Per-domain linear layer: ``fc`` (num_domains, in * out) and ``bias`` (num_domains, out)
    embeddings; ``y = x @ fc[d].view(in, out) + bias[d]``."""

    def __init__(self, size_in: int, size_out: int, num_domains: int) -> None:
        super().__init__()
        self.size_in, self.size_out = size_in, size_out
        self.fc = nn.Embedding(num_domains, size_in * size_out)
        self.bias = nn.Embedding(num_domains, size_out)

    def forward(self, x: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        b = domain.shape[0]
        weight = self.fc(domain).view(b, self.size_in, self.size_out)
        squeeze = x.dim() == 2
        if squeeze:
            x = x.unsqueeze(1)
        y = torch.matmul(x, weight) + self.bias(domain).view(b, 1, self.size_out)
        return y.squeeze(1) if squeeze else y


class Attention(nn.Module):
    """``attn``: fused ``qkv`` (with bias), unmasked scaled-dot-product attention, ``proj``."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise ConfigError(
                f"config.json: hidden_size {width} is not divisible by num_heads {heads}"
            )
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class Block(nn.Module):
    """Pre-LayerNorm transformer block (``norm1``, ``attn``, ``norm2``, ``mlp``)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.norm2 = nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.mlp = Mlp(width, int(width * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


@dataclass(frozen=True)
class TransformerSpec:
    """The config.json fields that shape ``model.transformer``."""

    hidden_size: int
    depth: int
    num_heads: int
    mlp_ratio: float
    num_domains: int
    len_soft_prompts: int
    dim_time: int
    max_len_seq: int
    use_hetero_proj: bool
    dim_action: int
    dim_proprio: int
    vlm_width: int  # Florence-2's projection_dim

    @classmethod
    def from_config(
        cls, cfg: Mapping[str, Any], dim_action: int, dim_proprio: int, vlm_width: int
    ) -> TransformerSpec:
        def num(key: str, default: Any, kind: type = int) -> Any:
            value = cfg.get(key, default)
            try:
                return kind(value)
            except (TypeError, ValueError):
                raise ConfigError(
                    f"config.json '{key}' must be a {kind.__name__}, got {value!r}"
                ) from None

        return cls(
            hidden_size=num("hidden_size", 1024),
            depth=num("depth", 24),
            num_heads=num("num_heads", 16),
            mlp_ratio=num("mlp_ratio", 4.0, float),
            num_domains=num("num_domains", 30),
            len_soft_prompts=num("len_soft_prompts", 32),
            dim_time=num("dim_time", 32),
            max_len_seq=num("max_len_seq", 512),
            use_hetero_proj=bool(cfg.get("use_hetero_proj", False)),
            dim_action=dim_action,
            dim_proprio=dim_proprio,
            vlm_width=vlm_width,
        )


class SoftPromptedTransformer(nn.Module):
    """``model.transformer`` (module docstring)."""

    def __init__(self, spec: TransformerSpec) -> None:
        super().__init__()
        s = self.spec = spec
        self.blocks = nn.ModuleList(
            [Block(s.hidden_size, s.num_heads, s.mlp_ratio) for _ in range(s.depth)]
        )
        self.vlm_proj: nn.Module
        self.aux_visual_proj: nn.Module
        if s.use_hetero_proj:
            self.vlm_proj = DomainLinear(s.vlm_width, s.hidden_size, s.num_domains)
            self.aux_visual_proj = DomainLinear(s.vlm_width, s.hidden_size, s.num_domains)
        else:
            self.vlm_proj = nn.Linear(s.vlm_width, s.hidden_size)
            self.aux_visual_proj = nn.Linear(s.vlm_width, s.hidden_size)
        self.pos_emb = nn.Parameter(torch.zeros(1, s.max_len_seq, s.hidden_size))
        self.norm = nn.LayerNorm(s.hidden_size)
        self.action_encoder = DomainLinear(
            s.dim_action + s.dim_time + s.dim_proprio, s.hidden_size, s.num_domains
        )
        self.action_decoder = DomainLinear(s.hidden_size, s.dim_action, s.num_domains)
        if s.len_soft_prompts > 0:
            self.soft_prompt_hub = nn.Embedding(s.num_domains, s.len_soft_prompts * s.hidden_size)

    def forward(
        self,
        domain: torch.Tensor,
        vlm_features: torch.Tensor,
        aux_visual: torch.Tensor,
        noisy_action: torch.Tensor,
        proprio: torch.Tensor,
        t: torch.Tensor,
    ) -> torch.Tensor:
        s = self.spec
        b, n = noisy_action.shape[:2]
        time = timestep_embedding(t, s.dim_time).unsqueeze(1).expand(b, n, s.dim_time)
        tokens = torch.cat(
            [noisy_action, proprio.unsqueeze(1).expand(b, n, proprio.shape[-1]), time], dim=-1
        )
        x = self.action_encoder(tokens, domain)
        if s.use_hetero_proj:
            vlm = self.vlm_proj(vlm_features, domain)
            aux = self.aux_visual_proj(aux_visual, domain)
        else:
            vlm, aux = self.vlm_proj(vlm_features), self.aux_visual_proj(aux_visual)
        x = torch.cat([x, vlm, aux], dim=1)
        if x.shape[1] > s.max_len_seq:
            raise ConfigError(
                f"X-VLA sequence of {x.shape[1]} tokens (chunk + text + image tokens) exceeds "
                f"max_len_seq={s.max_len_seq} of config.json: fewer cameras, a shorter "
                "tokenizer_max_length or a smaller chunk"
            )
        x = x + self.pos_emb[:, : x.shape[1]]
        if s.len_soft_prompts > 0:
            prompts = self.soft_prompt_hub(domain).view(b, s.len_soft_prompts, s.hidden_size)
            x = torch.cat([x, prompts], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.action_decoder(self.norm(x[:, :n]), domain)
