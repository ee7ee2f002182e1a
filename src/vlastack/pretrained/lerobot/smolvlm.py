"""The SmolVLM pieces SmolVLA uses, keyed like LeRobot's ``vlm_with_expert.vlm`` and built from
transformers' own modules; and where the SmolVLM architecture config comes from.

LeRobot 0.6.1 (``policies/smolvla/smolvlm_with_expert.py``) builds
``SmolVLMForConditionalGeneration(AutoConfig.from_pretrained(vlm_model_name))`` and keeps only the
first ``num_vlm_layers`` text layers. SmolVLA runs: the vision tower
(``model.vision_model``: transformers' ``SmolVLMVisionTransformer``, called without a patch mask,
SDPA attention as transformers picks by default), the connector (``model.connector``:
transformers' ``SmolVLMConnector``, pixel shuffle by ``scale_factor`` then a bias-free
projection), the token embedding (``model.text_model.embed_tokens``) and the decoder layers
(``model.text_model.layers.<i>``: transformers' ``LlamaDecoderLayer``, of which SmolVLA calls the
norms, projections and MLP itself, ``smolvla.py``). ``model.text_model.norm`` and ``lm_head`` are
built so that every checkpoint key loads, and never run (LeRobot does not either).

The architecture config (``vlm_config``): ``vlm_model_name`` of config.json as a folder holding a
config.json (absolute, relative to the checkpoint folder, or to the working directory), else as a
hub id from the local Hugging Face cache, else, for a VLM in ``KNOWN_VLMS``, vlastack's restatement
of its config (the tokenizer still has to come from a local folder or the cache). Anything else is
a ConfigError naming the id and the download command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from vlastack.errors import ConfigError
from vlastack.pretrained.lerobot.hub import hub_cache_dir, looks_like_hub_id
from vlastack.pretrained.lerobot.tokenizer import cached_snapshot, local_folder

SMOLVLM2_500M = "HuggingFaceTB/SmolVLM2-500M-Video-Instruct"

# Known SmolVLM configs, for building the architecture when the hub config is not cached.
# SmolVLM2-500M-Video-Instruct, the VLM of LeRobot's smolvla_base; the numbers are those LeRobot
# 0.6.1 read from the hub config (lerobot_policies/smolvla/full_keys.json "smolvlm_config") and
# agree with the state-dict shapes of full_keys.json:
#
# | field                       | value  | shape it shows in                                   |
# |-----------------------------|--------|-----------------------------------------------------|
# | vision hidden_size          | 768    | vision_model.embeddings.patch_embedding [768,3,16,16]|
# | vision patch_size           | 16     | same                                                |
# | vision image_size           | 512    | position_embedding [1024, 768]: (512/16)^2 = 1024   |
# | vision intermediate_size    | 3072   | encoder.layers.N.mlp.fc1 [3072, 768]                |
# | vision num_hidden_layers    | 12     | encoder.layers.0..11                                |
# | vision num_attention_heads  | 12     | (config; head dim 64)                               |
# | scale_factor                | 4      | connector.modality_projection.proj [960, 12288]:    |
# |                             |        | 12288 = 768 * 4^2                                   |
# | text vocab_size             | 49280  | text_model.embed_tokens [49280, 960]                |
# | text hidden_size            | 960    | same                                                |
# | text intermediate_size      | 2560   | mlp.gate_proj [2560, 960]                           |
# | text num_attention_heads    | 15     | q_proj [960, 960] = 15 heads x head_dim 64 (config) |
# | text num_key_value_heads    | 5      | k_proj [320, 960] = 5 x 64                          |
# | text head_dim               | 64     | (config)                                            |
# | text num_hidden_layers      | 32     | (config; SmolVLA keeps the first num_vlm_layers=16) |
# | text rms_norm_eps           | 1e-5   | (config)                                            |
# | text rope_theta             | 100000 | (config; SmolVLA's own RoPE uses 10000 instead)     |
KNOWN_VLMS: dict[str, dict[str, Any]] = {
    SMOLVLM2_500M: {
        "model_type": "smolvlm",
        "scale_factor": 4,
        "image_token_id": 49190,
        "pad_token_id": 2,
        "tie_word_embeddings": False,
        "text_config": {
            "model_type": "llama",
            "vocab_size": 49280,
            "hidden_size": 960,
            "intermediate_size": 2560,
            "num_hidden_layers": 32,
            "num_attention_heads": 15,
            "num_key_value_heads": 5,
            "head_dim": 64,
            "max_position_embeddings": 8192,
            "rms_norm_eps": 1e-5,
            "rope_theta": 100000.0,
            "hidden_act": "silu",
            "tie_word_embeddings": False,
        },
        "vision_config": {
            "model_type": "smolvlm_vision",
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "image_size": 512,
            "patch_size": 16,
        },
    }
}


def _smolvlm_classes() -> Any:
    try:
        from transformers.models.smolvlm import modeling_smolvlm
    except ImportError as exc:
        raise ConfigError(
            f"SmolVLA needs transformers with SmolVLM (>= 4.50; {exc}): pip install -U transformers"
        ) from None
    return modeling_smolvlm


def _from_dict(data: dict[str, Any]) -> Any:
    from transformers import SmolVLMConfig

    return SmolVLMConfig(**data)


def vlm_config(name: str, base: Path) -> tuple[Any, str]:
    """(SmolVLMConfig, where it came from) for config.json's ``vlm_model_name`` (module
    docstring)."""
    from transformers import AutoConfig

    folder = local_folder(name, base)
    if folder is not None:
        if not (folder / "config.json").is_file():
            raise ConfigError(
                f"vlm_model_name {name!r} is the folder {folder}, which has no config.json (the "
                "SmolVLM config SmolVLA's architecture is read from); copy the VLM's config.json "
                "there"
            )
        cfg, source = AutoConfig.from_pretrained(str(folder), local_files_only=True), str(folder)
    else:
        if not looks_like_hub_id(name):
            raise ConfigError(
                f"vlm_model_name {name!r} is neither a folder (looked in {base} and the working "
                "directory) nor a hub id"
            )
        try:
            snap = cached_snapshot(name, "vlm_model_name")
            if not (snap / "config.json").is_file():
                raise ConfigError(f"{snap} has no config.json")
            cfg = AutoConfig.from_pretrained(str(snap), local_files_only=True)
            source = f"{name} (local Hugging Face cache, {snap})"
        except ConfigError:
            if name not in KNOWN_VLMS:
                raise ConfigError(
                    f"vlm_model_name {name!r} is not in the local Hugging Face cache "
                    f"({hub_cache_dir()}) and is not one of the VLMs vlastack knows "
                    f"({', '.join(KNOWN_VLMS)}); download its config with `hf download {name} "
                    "config.json` (or the whole repo, which the tokenizer needs too)"
                ) from None
            cfg, source = _from_dict(KNOWN_VLMS[name]), f"{name} (vlastack's KNOWN_VLMS table)"
    if getattr(cfg, "model_type", None) != "smolvlm":
        raise ConfigError(
            f"vlm_model_name {name!r} ({source}) is a {getattr(cfg, 'model_type', '?')!r} "
            "config; SmolVLA needs a SmolVLM ('smolvlm') one"
        )
    return cfg, source


def rms_norm(dim: int, eps: float) -> nn.Module:
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    return LlamaRMSNorm(dim, eps=eps)


def decoder_layer(text_config: Any, index: int) -> nn.Module:
    """transformers' ``LlamaDecoderLayer`` (keys ``self_attn.{q,k,v,o}_proj``,
    ``mlp.{gate,up,down}_proj``, ``input_layernorm``, ``post_attention_layernorm``)."""
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    return LlamaDecoderLayer(text_config, index)


class TextModel(nn.Module):
    """``vlm.model.text_model``: token embedding, the kept decoder layers, the final norm."""

    def __init__(self, text_config: Any, num_layers: int) -> None:
        super().__init__()
        c = text_config
        self.embed_tokens = nn.Embedding(
            c.vocab_size, c.hidden_size, getattr(c, "pad_token_id", None)
        )
        self.layers = nn.ModuleList([decoder_layer(c, i) for i in range(num_layers)])
        self.norm = rms_norm(c.hidden_size, c.rms_norm_eps)


class SmolVLMBody(nn.Module):
    """``vlm.model``: vision tower, connector, text model."""

    def __init__(self, config: Any, num_layers: int) -> None:
        super().__init__()
        m = _smolvlm_classes()
        self.vision_model = m.SmolVLMVisionTransformer(config.vision_config)
        self.connector = m.SmolVLMConnector(config)
        self.text_model = TextModel(config.text_config, num_layers)


class SmolVLM(nn.Module):
    """``model.vlm_with_expert.vlm``: what SmolVLA keeps of SmolVLMForConditionalGeneration."""

    def __init__(self, config: Any, num_layers: int) -> None:
        super().__init__()
        t = config.text_config
        if num_layers > t.num_hidden_layers:
            raise ConfigError(
                f"num_vlm_layers {num_layers} exceeds the VLM's {t.num_hidden_layers} text layers"
            )
        self.model = SmolVLMBody(config, num_layers)
        self.lm_head = nn.Linear(t.hidden_size, t.vocab_size, bias=False)

    def embed_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, tokens, text hidden) image embeddings."""
        vision = self.model.vision_model
        dtype = next(vision.parameters()).dtype
        hidden = vision(pixel_values=pixels.to(dtype), patch_attention_mask=None).last_hidden_state
        return self.model.connector(hidden)

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.text_model.embed_tokens(ids)
