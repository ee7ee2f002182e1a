"""LeRobot's SmolVLA network as plain modules, keyed like LeRobot's ``SmolVLAPolicy`` state dict:
the SmolVLM prefix (``smolvlm.py``), the action expert interleaved with it layer by layer, the
state/action/time projections and the flow-matching sampler.

Keys (LeRobot 0.6.1 ``policies/smolvla/modeling_smolvla.py`` ``VLAFlowMatching`` and
``smolvlm_with_expert.py`` ``SmolVLMWithExpertModel``), all under ``model.``:
``vlm_with_expert.vlm.*`` (``smolvlm.SmolVLM``), ``vlm_with_expert.lm_expert.layers.<i>.*`` and
``.norm`` (Llama decoder layers of width ``int(hidden * expert_width_multiplier)``, MLP width
``get_intermediate_size``; in ``cross_attn`` mode the ``k_proj``/``v_proj`` of every layer that is
not a self-attention layer read the VLM's K/V width instead of the expert's hidden), and
``state_proj``, ``action_in_proj``, ``action_out_proj``, ``action_time_mlp_in``,
``action_time_mlp_out``.

Inference (``SmolVLAModel.sample_actions``), as LeRobot:

* prefix = per camera the image tokens (vision tower + connector, times ``sqrt(width)``), then the
  language embeddings (times ``sqrt(width)``), then ``state_proj(state)`` as one token; block
  starts 0 for images and language, 1 for the state (``attention_2d``); positions
  ``cumsum(pad) - 1``.
* prefill: every VLM layer runs self-attention over the prefix; its post-RoPE K/V are kept.
  Only ``input_layernorm``, ``k_proj`` and ``v_proj`` of the last layer matter, so the rest of it
  is skipped (LeRobot runs it and drops the result; golden.json ``unused_at_inference``).
* each Euler step (``flow.euler_sample``, ``num_steps``): the suffix is ``action_time_mlp_out(
  silu(action_time_mlp_in([action_in_proj(x), time embedding])))``, causal among itself. Per
  layer, the expert either self-attends (``attention_mode`` not cross, or ``i %
  self_attn_every_n_layers == 0``) over [prefix K/V; its own K/V] with positions continuing the
  prefix's, or cross-attends to the prefix: ``k_proj``/``v_proj`` applied to the VLM's post-RoPE
  K/V, no RoPE on those keys, its queries at positions ``0..chunk-1``. Then ``lm_expert.norm`` and
  ``action_out_proj`` give the velocity.
* attention is LeRobot's eager one: grouped K/V repeated per query head, float32 scores times
  ``head_dim ** -0.5``, masked with ``finfo.min``, softmax; RoPE is LeRobot's ``apply_rope`` with
  wavelength 10 000 (not the text config's ``rope_theta``).

Verified against ``shared/fixtures/lerobot_policies/smolvla`` (tests/test_pretrained_lerobot_smolvla.py).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
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
from vlastack.pretrained.lerobot.folder import read_features
from vlastack.pretrained.lerobot.smolvlm import SmolVLM, decoder_layer, rms_norm
from vlastack.profiling import stage

ROPE_WAVELENGTH = 10_000  # LeRobot's apply_rope default, used instead of the config's rope_theta
EMPTY_CAMERA = "observation.images.empty_camera_"

Cache = list[tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class SmolVLASpec:
    """What config.json fixes about the SmolVLA network and its pre/post-processing."""

    image_keys: tuple[str, ...]  # VISUAL features in config order (empty cameras included)
    image_shapes: tuple[tuple[int, ...], ...]  # (C, H, W) per image key: cameras may differ
    state_key: str
    state_dim: int
    action_key: str
    action_dim: int
    chunk_size: int
    n_action_steps: int
    max_state_dim: int
    max_action_dim: int
    resize: tuple[int, int] | None  # resize_imgs_with_padding, (width, height)
    num_steps: int
    num_vlm_layers: int
    num_expert_layers: int
    self_attn_every_n_layers: int
    expert_width_multiplier: float
    attention_mode: str
    min_period: float
    max_period: float
    prefix_length: int
    tokenizer_max_length: int
    pad_language_to: str
    vlm_model_name: str

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> SmolVLASpec:
        inputs = read_features(dict(cfg), "input_features")
        outputs = read_features(dict(cfg), "output_features")
        images = [f for f in inputs if f.type == "VISUAL"]
        states = [f for f in inputs if f.type == "STATE"]
        actions = [f for f in outputs if f.type == "ACTION"]
        if not images or len(states) != 1 or len(actions) != 1:
            raise ConfigError(
                "config.json: SmolVLA needs at least one VISUAL input, exactly one STATE input "
                f"and one ACTION output (got {[f.key for f in inputs]} -> "
                f"{[f.key for f in outputs]})"
            )
        for name in (
            "adapt_to_pi_aloha",
            "use_delta_joint_actions_aloha",
            "add_image_special_tokens",
        ):
            if cfg.get(name):
                raise ConfigError(
                    f"config.json '{name}': true is not supported by vlastack's SmolVLA loader "
                    "yet; set it to false only if the checkpoint was trained that way"
                )

        def num(key: str, default: Any, kind: type = int) -> Any:
            value = cfg.get(key, default)
            try:
                return kind(value)
            except (TypeError, ValueError):
                raise ConfigError(
                    f"config.json '{key}' must be a {kind.__name__}, got {value!r}"
                ) from None

        resize = cfg.get("resize_imgs_with_padding", (512, 512))
        if resize is not None and (
            not isinstance(resize, (list, tuple))
            or len(resize) != 2
            or not all(isinstance(v, int) and v > 0 for v in resize)
        ):
            raise ConfigError(
                f"config.json 'resize_imgs_with_padding' must be [width, height] or null, got "
                f"{resize!r}"
            )
        spec = cls(
            image_keys=tuple(f.key for f in images),
            image_shapes=tuple(tuple(f.shape) for f in images),
            state_key=states[0].key,
            state_dim=int(states[0].shape[0]),
            action_key=actions[0].key,
            action_dim=int(actions[0].shape[0]),
            chunk_size=num("chunk_size", 50),
            n_action_steps=num("n_action_steps", 50),
            max_state_dim=num("max_state_dim", 32),
            max_action_dim=num("max_action_dim", 32),
            resize=None if resize is None else (int(resize[0]), int(resize[1])),
            num_steps=num("num_steps", 10),
            num_vlm_layers=num("num_vlm_layers", 16),
            num_expert_layers=num("num_expert_layers", -1),
            self_attn_every_n_layers=num("self_attn_every_n_layers", 2),
            expert_width_multiplier=num("expert_width_multiplier", 0.75, float),
            attention_mode=str(cfg.get("attention_mode", "cross_attn")),
            min_period=num("min_period", 4e-3, float),
            max_period=num("max_period", 4.0, float),
            prefix_length=num("prefix_length", -1),
            tokenizer_max_length=num("tokenizer_max_length", 48),
            pad_language_to=str(cfg.get("pad_language_to", "longest")),
            vlm_model_name=str(cfg.get("vlm_model_name") or ""),
        )
        if spec.state_dim > spec.max_state_dim or spec.action_dim > spec.max_action_dim:
            raise ConfigError(
                f"config.json: state ({spec.state_dim}) / action ({spec.action_dim}) sizes exceed "
                f"max_state_dim {spec.max_state_dim} / max_action_dim {spec.max_action_dim}"
            )
        if spec.n_action_steps > spec.chunk_size:
            raise ConfigError(
                f"config.json: n_action_steps {spec.n_action_steps} > chunk_size {spec.chunk_size}"
            )
        if not spec.vlm_model_name:
            raise ConfigError("config.json has no 'vlm_model_name' (SmolVLA's VLM architecture)")
        return spec

    @property
    def cameras(self) -> tuple[str, ...]:
        """The cameras a client sends (empty cameras are filled in by the policy)."""
        return tuple(k for k in self.image_keys if not k.startswith(EMPTY_CAMERA))


def expert_intermediate_size(width: int, multiplier: int = 4, multiple_of: int = 256) -> int:
    """LeRobot's ``get_intermediate_size``: 2/3 * 4 * width rounded up to a multiple of 256."""
    hidden = int(multiplier * int(2 * width / 3))
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


def apply_rope(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """RoPE of LeRobot's ``apply_rope`` on (B, L, H, D) at (B, L) positions, in float32: the
    first and second halves of D rotate together (wavelength ``ROPE_WAVELENGTH``)."""
    half = x.shape[-1] // 2
    dtype = x.dtype
    x = x.to(torch.float32)
    exponents = (2.0 / x.shape[-1]) * torch.arange(half, dtype=torch.float32, device=x.device)
    timescale = ROPE_WAVELENGTH**exponents
    radians = positions[..., None].to(torch.float32) / timescale[None, None, :]
    radians = radians[..., None, :]
    sin, cos = torch.sin(radians), torch.cos(radians)
    x1, x2 = x.split(half, dim=-1)
    out = torch.empty_like(x)
    out[..., :half] = x1 * cos - x2 * sin
    out[..., half:] = x2 * cos + x1 * sin
    return out.to(dtype)


def eager_attention(
    mask: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, kv_heads: int
) -> torch.Tensor:
    """(B, Lq, H, D) queries over (B, Lk, KVH, D) keys/values with a (B, Lq, Lk) bool mask ->
    (B, Lq, H * D), as LeRobot's ``eager_attention_forward``."""
    b, lk, _, d = k.shape
    groups = heads // kv_heads
    k = k[:, :, :, None, :].expand(b, lk, kv_heads, groups, d).reshape(b, lk, heads, d)
    v = v[:, :, :, None, :].expand(b, lk, kv_heads, groups, d).reshape(b, lk, heads, d)
    qf = q.to(torch.float32).transpose(1, 2)
    kf = k.to(torch.float32).transpose(1, 2)
    scores = torch.matmul(qf, kf.transpose(2, 3))
    scores *= d**-0.5
    scores = torch.where(mask[:, None, :, :], scores, torch.finfo(scores.dtype).min)
    probs = F.softmax(scores, dim=-1).to(v.dtype)
    out = torch.matmul(probs, v.permute(0, 2, 1, 3)).permute(0, 2, 1, 3)
    return out.reshape(b, -1, heads * d)


def resize_with_pad(img: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """LeRobot's smolvla ``resize_with_pad``: keep the aspect ratio (bilinear, align_corners
    False), then pad with 0 on the LEFT and TOP up to (height, width)."""
    h, w = img.shape[2:]
    if (h, w) == (height, width):
        return img
    ratio = max(w / width, h / height)
    rh, rw = int(h / ratio), int(w / ratio)
    out = F.interpolate(img, size=(rh, rw), mode="bilinear", align_corners=False)
    return F.pad(out, (max(0, width - rw), 0, max(0, height - rh), 0), value=0)


def pad_vector(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Zero-pad the last dimension to ``dim`` (LeRobot's ``pad_vector``)."""
    return x if x.shape[-1] >= dim else F.pad(x, (0, dim - x.shape[-1]))


class Expert(nn.Module):
    """``vlm_with_expert.lm_expert``: Llama decoder layers and the final norm."""

    def __init__(self, config: Any, vlm_kv_width: int, cross_layers: set[int]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [decoder_layer(config, i) for i in range(config.num_hidden_layers)]
        )
        width = config.num_key_value_heads * config.head_dim
        for i in cross_layers:
            attn: Any = self.layers[i].self_attn
            bias = bool(getattr(config, "attention_bias", False))
            attn.k_proj = nn.Linear(vlm_kv_width, width, bias=bias)
            attn.v_proj = nn.Linear(vlm_kv_width, width, bias=bias)
        self.norm = rms_norm(config.hidden_size, config.rms_norm_eps)


class VLMWithExpert(nn.Module):
    """``model.vlm_with_expert``: the VLM and the action expert, run layer by layer."""

    def __init__(self, spec: SmolVLASpec, vlm_config: Any) -> None:
        super().__init__()
        text = vlm_config.text_config
        self.vlm = SmolVLM(vlm_config, spec.num_vlm_layers)
        n = spec.num_vlm_layers
        expert_cfg = copy.deepcopy(text)
        expert_cfg.hidden_size = int(text.hidden_size * spec.expert_width_multiplier)
        expert_cfg.intermediate_size = expert_intermediate_size(expert_cfg.hidden_size)
        expert_cfg.num_hidden_layers = n
        if spec.num_expert_layers > 0:
            if n % spec.num_expert_layers:
                raise ConfigError(
                    f"config.json: num_vlm_layers {n} is not a multiple of num_expert_layers "
                    f"{spec.num_expert_layers} (LeRobot refuses it too)"
                )
            expert_cfg.num_hidden_layers = spec.num_expert_layers
        self.heads = int(text.num_attention_heads)
        self.kv_heads = int(text.num_key_value_heads)
        self.head_dim = int(text.head_dim)
        self.num_layers = n
        self.cross = "cross" in spec.attention_mode
        self.every = spec.self_attn_every_n_layers
        cross_layers = {
            i for i in range(expert_cfg.num_hidden_layers) if self.cross and not self._self_attn(i)
        }
        self.lm_expert = Expert(expert_cfg, self.kv_heads * self.head_dim, cross_layers)
        self.expert_width = int(expert_cfg.hidden_size)
        # VLM layer i -> expert layer (LeRobot's get_model_layers); None: no expert layer there
        m = n // expert_cfg.num_hidden_layers
        self.expert_of = [None if (i > 0 and i % m) else i // m for i in range(n)]
        for i, e in enumerate(self.expert_of):
            if e is None and self._self_attn(i):
                raise ConfigError(
                    f"config.json: VLM layer {i} is a self-attention layer without an expert "
                    "layer (num_expert_layers / self_attn_every_n_layers); LeRobot cannot run it"
                )

    def _self_attn(self, i: int) -> bool:
        return not self.cross or (self.every > 0 and i % self.every == 0)

    def _qkv(self, layer: Any, h: torch.Tensor) -> tuple[torch.Tensor, ...]:
        attn = layer.self_attn
        shape = (*h.shape[:-1], -1, self.head_dim)
        return tuple(p(h).view(shape) for p in (attn.q_proj, attn.k_proj, attn.v_proj))

    @staticmethod
    def _finish(layer: Any, att: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        out = layer.self_attn.o_proj(att)
        out += x
        residual = out.clone()
        out = layer.mlp(layer.post_attention_layernorm(out))
        out += residual
        return out

    def prefill(self, x: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> Cache:
        """Run the VLM over the prefix (B, Lp, W); per layer the post-RoPE (K, V)."""
        cache: Cache = []
        layers: list[Any] = list(self.vlm.model.text_model.layers)
        for i, layer in enumerate(layers):
            h = layer.input_layernorm(x)
            if i == len(layers) - 1:  # only the K/V of the last layer reach the actions
                shape = (*h.shape[:-1], -1, self.head_dim)
                k = layer.self_attn.k_proj(h).view(shape)
                cache.append((apply_rope(k, positions), layer.self_attn.v_proj(h).view(shape)))
                break
            q, k, v = self._qkv(layer, h)
            q, k = apply_rope(q, positions), apply_rope(k, positions)
            cache.append((k, v))
            att = eager_attention(mask, q, k, v, self.heads, self.kv_heads)
            x = self._finish(layer, att, x)
        return cache

    def expert_forward(
        self, x: torch.Tensor, cache: Cache, full_mask: torch.Tensor, positions: torch.Tensor
    ) -> torch.Tensor:
        """The suffix (B, Ls, We) through the expert layers beside the cached prefix;
        ``full_mask`` (B, Ls, Lp + Ls), ``positions`` (B, Ls) continuing the prefix's."""
        lp = cache[0][0].shape[1]
        for i in range(self.num_layers):
            e = self.expert_of[i]
            if e is None:
                continue
            layer: Any = self.lm_expert.layers[e]
            h = layer.input_layernorm(x)
            pk, pv = cache[i]
            if self._self_attn(i):
                q, k, v = self._qkv(layer, h)
                q, k = apply_rope(q, positions), apply_rope(k, positions)
                k, v = torch.cat([pk, k], dim=1), torch.cat([pv, v], dim=1)
                mask = full_mask
            else:
                attn = layer.self_attn
                shape = (*h.shape[:-1], -1, self.head_dim)
                q = attn.q_proj(h).view(shape)
                start = positions - torch.min(positions, dim=1, keepdim=True).values
                q = apply_rope(q, start)
                k = attn.k_proj(pk.reshape(*pk.shape[:2], -1)).view(
                    *pk.shape[:2], -1, self.head_dim
                )
                v = attn.v_proj(pv.reshape(*pv.shape[:2], -1)).view(
                    *pv.shape[:2], -1, self.head_dim
                )
                mask = full_mask[:, :, :lp]
            att = eager_attention(mask, q, k, v, self.heads, self.kv_heads)
            x = self._finish(layer, att, x)
        return self.lm_expert.norm(x)


class SmolVLAModel(nn.Module):
    """LeRobot's ``VLAFlowMatching`` (the ``model.`` of the state dict)."""

    def __init__(self, spec: SmolVLASpec, vlm_config: Any) -> None:
        super().__init__()
        self.spec = spec
        self.vlm_with_expert = VLMWithExpert(spec, vlm_config)
        width = int(vlm_config.text_config.hidden_size)
        ew = self.vlm_with_expert.expert_width
        self.state_proj = nn.Linear(spec.max_state_dim, width)
        self.action_in_proj = nn.Linear(spec.max_action_dim, ew)
        self.action_out_proj = nn.Linear(ew, spec.max_action_dim)
        self.action_time_mlp_in = nn.Linear(ew * 2, ew)
        self.action_time_mlp_out = nn.Linear(ew, ew)

    def embed_prefix(
        self,
        images: list[torch.Tensor],
        img_masks: list[torch.Tensor],
        tokens: torch.Tensor,
        lang_mask: torch.Tensor,
        state: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(embeddings (B, Lp, W), pad mask (B, Lp), block starts (B, Lp))."""
        vlm = self.vlm_with_expert.vlm
        embs, pads = [], []
        for img, m in zip(images, img_masks, strict=True):
            with stage("vision"):
                e = vlm.embed_image(img)
            e = e * torch.tensor(e.shape[-1] ** 0.5, dtype=e.dtype, device=e.device)
            embs.append(e)
            pads.append(m[:, None].expand(e.shape[0], e.shape[1]))
        with stage("language"):
            lang = vlm.embed_tokens(tokens)
        embs.append(lang * math.sqrt(lang.shape[-1]))
        pads.append(lang_mask)
        st = self.state_proj(state)
        st = st[:, None, :] if st.ndim == 2 else st
        embs.append(st)
        b = st.shape[0]
        state_pad = torch.ones(b, st.shape[1], dtype=torch.bool, device=st.device)
        # block starts: 0 for images and language, 1 for the state; built from the pad tensors
        # (not a Python list of lengths) so that an ONNX trace keeps the token length dynamic
        att = torch.cat([torch.zeros_like(p, dtype=torch.bool) for p in pads] + [state_pad], dim=1)[
            :1
        ]
        pads.append(state_pad)
        emb, pad = torch.cat(embs, dim=1), torch.cat(pads, dim=1)
        n = self.spec.prefix_length
        if pad.shape[1] < n:  # LeRobot's pad_tensor: zeros after the prefix
            extra = n - pad.shape[1]
            emb = F.pad(emb, (0, 0, 0, extra))
            pad = F.pad(pad, (0, extra))
            att = F.pad(att, (0, extra))
        return emb, pad, att.expand(b, -1)

    def embed_suffix(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self.action_in_proj(x)
        te = sinusoidal_time_embedding(
            t, self.vlm_with_expert.expert_width, self.spec.min_period, self.spec.max_period
        ).type(a.dtype)
        h = torch.cat([a, te[:, None, :].expand_as(a)], dim=2)
        return self.action_time_mlp_out(F.silu(self.action_time_mlp_in(h)))

    def velocity(
        self, x: torch.Tensor, t: torch.Tensor, cache: Cache, prefix_pad: torch.Tensor
    ) -> torch.Tensor:
        suffix = self.embed_suffix(x, t)
        b, ls = suffix.shape[:2]
        blocks = torch.ones(b, ls, dtype=suffix.dtype, device=x.device)  # causal
        full, positions = suffix_attention(prefix_pad, blocks)
        out = self.vlm_with_expert.expert_forward(suffix, cache, full, positions)
        out = out[:, -self.spec.chunk_size :].to(torch.float32)
        return self.action_out_proj(out)

    def prefix_cache(
        self,
        images: list[torch.Tensor],
        img_masks: list[torch.Tensor],
        tokens: torch.Tensor,
        lang_mask: torch.Tensor,
        state: torch.Tensor,
    ) -> tuple[Cache, torch.Tensor]:
        """Prefill the prefix (images, language, state): (per VLM layer the post-RoPE (K, V),
        each (B, Lp, kv_heads, head_dim); the prefix pad mask (B, Lp))."""
        emb, pad, ar = self.embed_prefix(images, img_masks, tokens, lang_mask, state)
        mask = attention_2d(pad, ar)
        with stage("backbone"):
            cache = self.vlm_with_expert.prefill(emb, mask, pad_positions(pad))
        return cache, pad

    def prefix_velocity(
        self,
        images: list[torch.Tensor],
        img_masks: list[torch.Tensor],
        tokens: torch.Tensor,
        lang_mask: torch.Tensor,
        state: torch.Tensor,
    ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """Prefill the prefix once (``prefix_cache``); the returned ``velocity(x_t, t)``
        runs the action expert over that cache (differentiable in ``x_t`` when called with
        autograd on and the cache made under ``no_grad``, as guided sampling needs)."""
        cache, pad = self.prefix_cache(images, img_masks, tokens, lang_mask, state)
        return lambda x, t: self.velocity(x, t, cache, pad)

    def sample_actions(
        self,
        images: list[torch.Tensor],
        img_masks: list[torch.Tensor],
        tokens: torch.Tensor,
        lang_mask: torch.Tensor,
        state: torch.Tensor,
        noise: torch.Tensor,
    ) -> torch.Tensor:
        """LeRobot's ``sample_actions``: images already resized/padded in [-1, 1], state padded
        to max_state_dim, noise (B, chunk_size, max_action_dim) -> (B, chunk_size,
        max_action_dim) normalized actions."""
        velocity = self.prefix_velocity(images, img_masks, tokens, lang_mask, state)
        with stage("head"):
            return euler_sample(velocity, noise, self.spec.num_steps)

    def sample_actions_guided(
        self,
        images: list[torch.Tensor],
        img_masks: list[torch.Tensor],
        tokens: torch.Tensor,
        lang_mask: torch.Tensor,
        state: torch.Tensor,
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
            velocity = self.prefix_velocity(images, img_masks, tokens, lang_mask, state)
        with stage("head"):
            return guided_euler_sample(
                velocity, noise, target, weights, self.spec.num_steps, max_guidance_weight
            )


class SmolVLANetwork(nn.Module):
    """The whole state dict: ``model.*``."""

    def __init__(self, spec: SmolVLASpec, vlm_config: Any) -> None:
        super().__init__()
        self.model = SmolVLAModel(spec, vlm_config)


def unused_at_inference(spec: SmolVLASpec) -> list[str]:
    """The keys LeRobot saves that never reach the actions: the last VLM layer's query, output
    projection, MLP and post-attention norm, the VLM's final norm and ``lm_head``."""
    last = f"model.vlm_with_expert.vlm.model.text_model.layers.{spec.num_vlm_layers - 1}."
    return [
        *(
            last + s
            for s in (
                "self_attn.q_proj.weight",
                "self_attn.o_proj.weight",
                "mlp.gate_proj.weight",
                "mlp.up_proj.weight",
                "mlp.down_proj.weight",
                "post_attention_layernorm.weight",
            )
        ),
        "model.vlm_with_expert.vlm.model.text_model.norm.weight",
        "model.vlm_with_expert.vlm.lm_head.weight",
    ]
