"""Loading a LeRobot X-VLA ``model.safetensors`` into ``XVLANetwork``, strictly.

The key mapping: the network is built from transformers' ``Florence2Model`` and vlastack's
soft-prompted transformer with LeRobot 0.6.1's module names, so a LeRobot 0.6.1 file's keys
are the network's ``state_dict`` keys one for one, except one:

* ``model.vlm.language_model.shared.weight`` (BART's token embedding) is the same tensor as
  ``model.vlm.language_model.encoder.embed_tokens.weight`` (tied); ``safetensors.save_model``
  writes only one of two tied tensors, so the file holds just the encoder's name (the fixture:
  222 keys in the file, 223 in the state dict). ``shared`` is the one X-VLA reads (its
  ``get_input_embeddings()``); it is filled from whichever alias the file holds, as LeRobot's
  ``XVLAPolicy.from_pretrained`` does.

Files saved with the Microsoft remote-code Florence-2 module layout (X-VLA checkpoints written
before transformers had Florence-2: ``model.vlm.image_projection``,
``model.vlm.language_model.model.*``) are renamed to the native layout first, by the rules
LeRobot 0.6.1 applies (``modeling_xvla._remap_vendored_florence_state_dict``): the DaViT
stem's ``proj`` -> ``conv``, the flattened PreNorm/Mlp wrappers of the blocks, the projector
pieces moved under ``multi_modal_projector``, ``image_projection`` (a (in, out) matrix used as
``x @ p``) transposed into a Linear weight, ``language_model.model.`` -> ``language_model.``,
and the generation-only ``final_logits_bias`` dropped.

Then ``weights.check_state_dict`` compares keys and shapes with the network the config builds
(a missing, extra or resized key is a ConfigError naming it and the config fields to check),
and the tensors are assigned to the meta-built network.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from vlastack.errors import ConfigError
from vlastack.pretrained.lerobot.legacy import weight_key
from vlastack.pretrained.lerobot.weights import check_state_dict

PREFIX = "model.vlm."
SHARED = PREFIX + "language_model.shared.weight"
EMBED = PREFIX + "language_model.encoder.embed_tokens.weight"
XVLA_HINT = (
    "florence_config (DaViT depths/embed_dim/num_heads/projection_dim, BART d_model/"
    "encoder_layers/vocab_size), hidden_size, depth, num_heads, mlp_ratio, num_domains, "
    "len_soft_prompts, dim_time, max_len_seq, use_hetero_proj, action_mode, max_action_dim, "
    "max_state_dim and use_proprio in config.json"
)
_P = re.escape(PREFIX)
_BLOCK = _P + r"vision_tower\.blocks\.(\d+)\.(\d+)\.(spatial_block|channel_block)\."
_NEW = PREFIX + r"vision_tower.blocks.\1.\2.\3."
VENDORED_RULES: tuple[tuple[str, str], ...] = (
    (_P + r"vision_tower\.convs\.(\d+)\.proj\.", PREFIX + r"vision_tower.convs.\1.conv."),
    (_BLOCK + r"conv1\.fn\.dw\.", _NEW + "conv1."),
    (_BLOCK + r"conv2\.fn\.dw\.", _NEW + "conv2."),
    (_BLOCK + r"(window_attn|channel_attn)\.norm\.", _NEW + "norm1."),
    (_BLOCK + r"(window_attn|channel_attn)\.fn\.", _NEW + r"\4."),
    (_BLOCK + r"ffn\.norm\.", _NEW + "norm2."),
    (_BLOCK + r"ffn\.fn\.net\.", _NEW + "ffn."),
    (_P + r"image_proj_norm\.", PREFIX + "multi_modal_projector.image_proj_norm."),
    (_P + r"image_pos_embed\.", PREFIX + "multi_modal_projector.image_position_embed."),
    (
        _P + r"visual_temporal_embed\.",
        PREFIX + "multi_modal_projector.visual_temporal_embed.",
    ),
    (_P + r"language_model\.model\.", PREFIX + "language_model."),
)
VENDORED_PROJECTION = PREFIX + "image_projection"
PROJECTION = PREFIX + "multi_modal_projector.image_projection.weight"
VENDORED_DROPPED = PREFIX + "language_model.final_logits_bias"


def is_vendored(keys: Iterable[str]) -> bool:
    """A file in the remote-code Florence-2 layout (its signature keys)."""
    keys = list(keys)
    return VENDORED_PROJECTION in keys or any(
        k.startswith(PREFIX + "language_model.model.") for k in keys
    )


def native_key(key: str) -> str | None:
    """A remote-code layout key's native name; None: dropped (``final_logits_bias``). The
    projection keeps its name here (it is transposed when read, ``load_xvla_network``)."""
    if key == VENDORED_DROPPED:
        return None
    if key == VENDORED_PROJECTION:
        return PROJECTION
    for pattern, repl in VENDORED_RULES:
        new, n = re.subn(pattern, repl, key, count=1)
        if n:
            return new
    return key


def file_names(keys: Iterable[str]) -> dict[str, str]:
    """Network key -> file key for every tensor of the file the network loads (LeRobot < 0.4
    stats buffers and torch.compile's ``_orig_mod`` handled by ``legacy.weight_key``)."""
    keys = list(keys)
    vendored = is_vendored(keys)
    out: dict[str, str] = {}
    for k in keys:
        m = weight_key(k)
        if m is not None and vendored:
            m = native_key(m)
        if m is not None:
            out[m] = k
    return out


def load_xvla_network(
    file: Path, build: Any, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> Any:
    """``build()`` (an ``XVLANetwork``) with the file's tensors: keys and shapes checked
    first (header only), then assigned; cast to ``dtype`` (config.json ``dtype``)."""
    from safetensors import safe_open

    with torch.device("meta"):
        net = build()
    want = net.state_dict()
    shapes = {k: tuple(v.shape) for k, v in want.items()}
    with safe_open(str(file), framework="pt") as f:
        names = file_names(f.keys())

        def shape(m: str) -> tuple[int, ...]:
            s = tuple(f.get_slice(names[m]).get_shape())
            return s[::-1] if m == PROJECTION and names[m] == VENDORED_PROJECTION else s

        found = {m: shape(m) for m in names}
        tied = {SHARED: EMBED, EMBED: SHARED}
        for key, alias in tied.items():  # safetensors keeps one of two tied tensors
            if key not in found and alias in found:
                found[key] = found[alias]
        check_state_dict(shapes, found, str(file), XVLA_HINT)
        weights = {}
        for m, k in names.items():
            t = f.get_tensor(k)
            if m == PROJECTION and k == VENDORED_PROJECTION:
                t = t.transpose(0, 1)
            # cloned: an aligned allocation (pi0_weights), float32 as LeRobot's model holds it
            weights[m] = t.to(want[m].dtype).contiguous().clone()
    for key, alias in tied.items():
        if key not in weights:
            weights[key] = weights[alias]
    net.load_state_dict(weights, strict=True, assign=True)
    leftover = [n for n, b in net.named_buffers() if b.is_meta]
    if leftover:
        raise ConfigError(f"X-VLA build left buffers without values: {leftover[:5]}")
    return net.to(device=device, dtype=dtype).eval()
