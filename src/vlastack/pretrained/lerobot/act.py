"""LeRobot's ACT (Action Chunking Transformer) network as plain modules, keyed like LeRobot's
``ACTPolicy`` state dict (every key under ``model.``).

Keys mapped (LeRobot 0.6.1 ``policies/act/modeling_act.py``):

* ``model.backbone.*``: the ResNet trunk (``resnet.py``), output of ``layer4``;
* ``model.encoder_img_feat_input_proj`` (1x1 conv, backbone width -> dim_model),
  ``model.encoder_robot_state_input_proj``, ``model.encoder_env_state_input_proj`` (if an ENV
  feature exists), ``model.encoder_latent_input_proj``, ``model.encoder_1d_feature_pos_embed``
  (one learned position per 1-D token), ``model.decoder_pos_embed`` (one per chunk step),
  ``model.action_head``;
* ``model.encoder.layers.<i>.{self_attn,linear1,linear2,norm1,norm2}`` and, only with
  ``pre_norm``, ``model.encoder.norm``; ``model.decoder.layers.<i>.{self_attn,multihead_attn,
  linear1,linear2,norm1,norm2,norm3}`` and ``model.decoder.norm`` (always);
* the VAE encoder (``model.vae_encoder.*``, ``model.vae_encoder_cls_embed``,
  ``model.vae_encoder_{robot_state_input,action_input,latent_output}_proj``, buffer
  ``model.vae_encoder_pos_enc``): inference uses a zero latent, as LeRobot does in eval mode;
  training runs it (``losses.act_loss``, with the key padding mask of padded actions).

Inference (``ACTModel.forward``), as LeRobot: tokens are sequence-first ``(S, B, D)`` in the
order latent, robot state, env state, then per camera (config.json ``input_features`` order)
the ``h*w`` projected ``layer4`` cells row-major; their positions are the learned 1-D
embeddings then the 2-D sinusoidal embedding of each feature map. Attention is
``nn.MultiheadAttention`` (keys ``in_proj_weight``/``in_proj_bias``/``out_proj``) with the
position added to queries and keys, never to values. Layers are post-norm by default
(``x = norm(x + sublayer(x))``), pre-norm when ``pre_norm``; feed-forward ``linear2(act(
linear1(x)))`` with ReLU/GELU/GLU; dropout is off at eval. The decoder input is zeros with
``decoder_pos_embed`` as query position, and cross-attends to the encoder output with the
encoder positions on the keys.

Verified: the reduced fixture checkpoint (``act/pretrained_model``) gives LeRobot's golden
normalized and final chunks for 3 observations (tests/test_pretrained_lerobot_act.py), every
file key is consumed with its shape, and the default full-size config built on the meta device
has exactly the 234 keys and shapes of ``act/full_keys.json``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlastack.errors import ConfigError
from vlastack.pretrained.lerobot.folder import Feature, read_features
from vlastack.pretrained.lerobot.resnet import build_backbone
from vlastack.pretrained.lerobot.weights import load_strict

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "gelu": F.gelu,
    "glu": F.glu,
}


@dataclass(frozen=True)
class ACTSpec:
    """The fields of LeRobot's ACTConfig that shape the network (config.json names)."""

    chunk_size: int = 100
    n_action_steps: int = 100
    vision_backbone: str = "resnet18"
    replace_final_stride_with_dilation: bool = False
    pre_norm: bool = False
    dim_model: int = 512
    n_heads: int = 8
    dim_feedforward: int = 3200
    feedforward_activation: str = "relu"
    n_encoder_layers: int = 4
    n_decoder_layers: int = 1
    use_vae: bool = True
    latent_dim: int = 32
    n_vae_encoder_layers: int = 4
    dropout: float = 0.1
    temporal_ensemble_coeff: float | None = None
    n_obs_steps: int = 1
    image_keys: tuple[str, ...] = ()
    image_shape: tuple[int, ...] | None = None
    state_key: str | None = None
    state_dim: int | None = None
    env_state_key: str | None = None
    env_state_dim: int | None = None
    action_key: str = "action"
    action_dim: int = 0

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> ACTSpec:
        names = {f for f in cls.__dataclass_fields__}
        kw: dict[str, Any] = {k: cfg[k] for k in names if k in cfg and k not in _FEATURE_FIELDS}
        inputs = read_features(dict(cfg), "input_features")
        outputs = read_features(dict(cfg), "output_features")
        images = [f for f in inputs if f.type == "VISUAL"]
        state = _one(inputs, "STATE")
        env = _one(inputs, "ENV")
        action = _one(outputs, "ACTION")
        if action is None:
            raise ConfigError("config.json output_features has no ACTION feature; ACT needs one")
        if not images and env is None:
            raise ConfigError(
                "config.json input_features has neither a VISUAL nor an ENV feature; ACT needs "
                "at least one image or an environment state"
            )
        shapes = {f.shape for f in images}
        if len(shapes) > 1:
            raise ConfigError(f"ACT cameras must share one shape, config.json has {shapes}")
        spec = cls(
            **kw,
            image_keys=tuple(f.key for f in images),
            image_shape=images[0].shape if images else None,
            state_key=state.key if state else None,
            state_dim=state.shape[0] if state else None,
            env_state_key=env.key if env else None,
            env_state_dim=env.shape[0] if env else None,
            action_key=action.key,
            action_dim=action.shape[0],
        )
        if spec.feedforward_activation not in ACTIVATIONS:
            raise ConfigError(
                f"config.json feedforward_activation {spec.feedforward_activation!r} is not "
                f"one of {', '.join(ACTIVATIONS)}"
            )
        if spec.temporal_ensemble_coeff is not None and spec.n_action_steps > 1:
            raise ConfigError(
                f"config.json temporal_ensemble_coeff {spec.temporal_ensemble_coeff} needs "
                f"n_action_steps 1 (it is {spec.n_action_steps}), as LeRobot requires"
            )
        if spec.n_obs_steps != 1:
            raise ConfigError(
                f"config.json n_obs_steps is {spec.n_obs_steps}; LeRobot's ACT supports 1 only"
            )
        return spec


_FEATURE_FIELDS = {
    "image_keys",
    "image_shape",
    "state_key",
    "state_dim",
    "env_state_key",
    "env_state_dim",
    "action_key",
    "action_dim",
}


def _one(features: list[Feature], kind: str) -> Feature | None:
    hits = [f for f in features if f.type == kind]
    if len(hits) > 1:
        raise ConfigError(
            f"config.json has {len(hits)} {kind} features ({', '.join(f.key for f in hits)}); "
            "ACT takes one"
        )
    return hits[0] if hits else None


class EncoderLayer(nn.Module):
    """Self-attention + feed-forward, post-norm (default) or pre-norm."""

    def __init__(self, spec: ACTSpec) -> None:
        super().__init__()
        d = spec.dim_model
        self.self_attn = nn.MultiheadAttention(d, spec.n_heads, dropout=spec.dropout)
        self.linear1 = nn.Linear(d, spec.dim_feedforward)
        self.dropout = nn.Dropout(spec.dropout)
        self.linear2 = nn.Linear(spec.dim_feedforward, d)
        self.norm1 = nn.LayerNorm(d)
        self.norm2 = nn.LayerNorm(d)
        self.dropout1 = nn.Dropout(spec.dropout)
        self.dropout2 = nn.Dropout(spec.dropout)
        self.activation = ACTIVATIONS[spec.feedforward_activation]
        self.pre_norm = spec.pre_norm

    def _ff(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.dropout(self.activation(self.linear1(x))))

    def forward(
        self,
        x: torch.Tensor,
        pos: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        h = self.norm1(x) if self.pre_norm else x
        qk = h if pos is None else h + pos
        attn = self.self_attn(qk, qk, value=h, key_padding_mask=key_padding_mask)[0]
        x = x + self.dropout1(attn)
        if self.pre_norm:
            return x + self.dropout2(self._ff(self.norm2(x)))
        x = self.norm1(x)
        return self.norm2(x + self.dropout2(self._ff(x)))


class Encoder(nn.Module):
    def __init__(self, spec: ACTSpec, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([EncoderLayer(spec) for _ in range(num_layers)])
        self.norm = nn.LayerNorm(spec.dim_model) if spec.pre_norm else nn.Identity()

    def forward(
        self,
        x: torch.Tensor,
        pos: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``key_padding_mask`` (B, S), True = padding: only the VAE encoder uses it (training,
        ``losses.act_loss``); inference passes none."""
        for layer in self.layers:
            x = layer(x, pos, key_padding_mask)
        return self.norm(x)


class DecoderLayer(nn.Module):
    """Self-attention, cross-attention to the encoder output, feed-forward."""

    def __init__(self, spec: ACTSpec) -> None:
        super().__init__()
        d = spec.dim_model
        self.self_attn = nn.MultiheadAttention(d, spec.n_heads, dropout=spec.dropout)
        self.multihead_attn = nn.MultiheadAttention(d, spec.n_heads, dropout=spec.dropout)
        self.linear1 = nn.Linear(d, spec.dim_feedforward)
        self.dropout = nn.Dropout(spec.dropout)
        self.linear2 = nn.Linear(spec.dim_feedforward, d)
        self.norm1 = nn.LayerNorm(d)
        self.norm2 = nn.LayerNorm(d)
        self.norm3 = nn.LayerNorm(d)
        self.dropout1 = nn.Dropout(spec.dropout)
        self.dropout2 = nn.Dropout(spec.dropout)
        self.dropout3 = nn.Dropout(spec.dropout)
        self.activation = ACTIVATIONS[spec.feedforward_activation]
        self.pre_norm = spec.pre_norm

    def forward(
        self, x: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor, memory_pos: torch.Tensor
    ) -> torch.Tensor:
        h = self.norm1(x) if self.pre_norm else x
        qk = h + pos
        x = x + self.dropout1(self.self_attn(qk, qk, value=h)[0])
        if self.pre_norm:
            h = self.norm2(x)
        else:
            x = h = self.norm1(x)
        attn = self.multihead_attn(query=h + pos, key=memory + memory_pos, value=memory)[0]
        x = x + self.dropout2(attn)
        if self.pre_norm:
            h = self.norm3(x)
        else:
            x = h = self.norm2(x)
        x = x + self.dropout3(self.linear2(self.dropout(self.activation(self.linear1(h)))))
        return x if self.pre_norm else self.norm3(x)


class Decoder(nn.Module):
    def __init__(self, spec: ACTSpec) -> None:
        super().__init__()
        self.layers = nn.ModuleList([DecoderLayer(spec) for _ in range(spec.n_decoder_layers)])
        self.norm = nn.LayerNorm(spec.dim_model)

    def forward(
        self, x: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor, memory_pos: torch.Tensor
    ) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, memory, pos, memory_pos)
        return self.norm(x)


def sinusoid_table(num_positions: int, dim: int) -> torch.Tensor:
    """(num_positions, dim) 1-D sinusoids (sin on even, cos on odd channels), float64 math,
    float32 result: the VAE encoder's position buffer."""
    pos = torch.arange(num_positions, dtype=torch.float64)[:, None]
    rate = torch.pow(10000.0, 2 * (torch.arange(dim) // 2).to(torch.float64) / dim)
    table = pos / rate
    table[:, 0::2] = table[:, 0::2].sin()
    table[:, 1::2] = table[:, 1::2].cos()
    return table.float()


def sinusoid_2d(feature_map: torch.Tensor, dim: int) -> torch.Tensor:
    """(1, 2*dim, H, W) positions of a (B, C, H, W) feature map: rows then columns, each scaled
    to (0, 2*pi] (position / (count + 1e-6) * 2*pi), ``dim`` channels of interleaved sin/cos
    with frequencies ``10000 ** (2 * (i // 2) / dim)``."""
    ones = torch.ones_like(feature_map[0, :1])  # (1, H, W)
    y = ones.cumsum(1, dtype=torch.float32)
    x = ones.cumsum(2, dtype=torch.float32)
    two_pi = 2 * math.pi
    y = y / (y[:, -1:, :] + 1e-6) * two_pi
    x = x / (x[:, :, -1:] + 1e-6) * two_pi
    freq = 10000 ** (
        2 * (torch.arange(dim, dtype=torch.float32, device=feature_map.device) // 2) / dim
    )
    x = x.unsqueeze(-1) / freq
    y = y.unsqueeze(-1) / freq
    px = torch.stack((x[..., 0::2].sin(), x[..., 1::2].cos()), dim=-1).flatten(3)
    py = torch.stack((y[..., 0::2].sin(), y[..., 1::2].cos()), dim=-1).flatten(3)
    return torch.cat((py, px), dim=3).permute(0, 3, 1, 2)


class ACTModel(nn.Module):
    """The network under LeRobot's ``ACTPolicy.model`` (so its keys are ``model.<name>``
    once wrapped by ``ACTNetwork``)."""

    def __init__(self, spec: ACTSpec) -> None:
        super().__init__()
        self.spec = spec
        d = spec.dim_model
        if spec.use_vae:
            self.vae_encoder = Encoder(spec, spec.n_vae_encoder_layers)
            self.vae_encoder_cls_embed = nn.Embedding(1, d)
            if spec.state_dim:
                self.vae_encoder_robot_state_input_proj = nn.Linear(spec.state_dim, d)
            self.vae_encoder_action_input_proj = nn.Linear(spec.action_dim, d)
            self.vae_encoder_latent_output_proj = nn.Linear(d, spec.latent_dim * 2)
            n_vae_tokens = 1 + spec.chunk_size + (1 if spec.state_dim else 0)
            self.register_buffer("vae_encoder_pos_enc", sinusoid_table(n_vae_tokens, d)[None])
        if spec.image_keys:
            self.backbone = build_backbone(
                spec.vision_backbone, dilate_last=spec.replace_final_stride_with_dilation
            )
        self.encoder = Encoder(spec, spec.n_encoder_layers)
        self.decoder = Decoder(spec)
        if spec.state_dim:
            self.encoder_robot_state_input_proj = nn.Linear(spec.state_dim, d)
        if spec.env_state_dim:
            self.encoder_env_state_input_proj = nn.Linear(spec.env_state_dim, d)
        self.encoder_latent_input_proj = nn.Linear(spec.latent_dim, d)
        if spec.image_keys:
            self.encoder_img_feat_input_proj = nn.Conv2d(self.backbone.out_channels, d, 1)
        n_1d = 1 + (1 if spec.state_dim else 0) + (1 if spec.env_state_dim else 0)
        self.encoder_1d_feature_pos_embed = nn.Embedding(n_1d, d)
        self.decoder_pos_embed = nn.Embedding(spec.chunk_size, d)
        self.action_head = nn.Linear(d, spec.action_dim)

    def forward(
        self,
        images: list[torch.Tensor],
        state: torch.Tensor | None = None,
        env_state: torch.Tensor | None = None,
        latent: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Normalized inputs (images (B, 3, H, W) per camera, state (B, S)) -> normalized
        action chunk (B, chunk_size, A), with the zero latent of inference unless ``latent``
        (B, latent_dim) is given (training: the VAE sample, ``losses.act_loss``)."""
        spec = self.spec
        ref = images[0] if images else env_state
        assert ref is not None
        batch = ref.shape[0]
        if latent is None:
            latent = torch.zeros(batch, spec.latent_dim, dtype=torch.float32, device=ref.device)
        tokens = [self.encoder_latent_input_proj(latent)]
        positions = list(self.encoder_1d_feature_pos_embed.weight.unsqueeze(1))
        if spec.state_dim:
            assert state is not None
            tokens.append(self.encoder_robot_state_input_proj(state))
        if spec.env_state_dim:
            assert env_state is not None
            tokens.append(self.encoder_env_state_input_proj(env_state))
        for img in images:
            fmap = self.backbone(img)
            pos = sinusoid_2d(fmap, spec.dim_model // 2).to(dtype=fmap.dtype)
            feats = self.encoder_img_feat_input_proj(fmap)
            # (B, C, H, W) -> (H*W, B, C), cells row-major
            tokens.extend(feats.flatten(2).permute(2, 0, 1))
            positions.extend(pos.flatten(2).permute(2, 0, 1))
        x = torch.stack(tokens, dim=0)
        pos_all = torch.stack(positions, dim=0)
        memory = self.encoder(x, pos_all)
        queries = torch.zeros(
            (spec.chunk_size, batch, spec.dim_model), dtype=pos_all.dtype, device=pos_all.device
        )
        out = self.decoder(queries, memory, self.decoder_pos_embed.weight.unsqueeze(1), pos_all)
        return self.action_head(out.transpose(0, 1))


class ACTNetwork(nn.Module):
    """Holds ``model`` so that the state dict reads ``model.*`` like LeRobot's ACTPolicy."""

    def __init__(self, spec: ACTSpec) -> None:
        super().__init__()
        self.model = ACTModel(spec)


def load_act_network(folder: Path, spec: ACTSpec, device: str | torch.device = "cpu") -> ACTNetwork:
    """Build the network for ``spec`` and load ``folder/model.safetensors`` into it strictly."""
    return load_strict(lambda: ACTNetwork(spec), Path(folder) / "model.safetensors", device)
