"""Decoder-only language models from ``transformers`` (Llama, Gemma, Qwen2, SmolLM) as VLA backbones.

The VLA feeds ``inputs_embeds`` = [projected image tokens, text token embeddings, state token] and
reads the last hidden states as context (PaliGemma in π0, Llama-2 in OpenVLA, SmolLM2 in SmolVLA).
Loads a local folder or hub id with ``from_pretrained``, or builds the real class from a small
config dict with random weights. ``num_layers`` keeps only the first layers (SmolVLA uses 16 of 32);
``layer_fraction`` keeps that share of them, rounded up (FLOWER's intermediate fusion: 0.5 keeps the
lower half, whatever the loaded model's depth). The dropped layers are deleted at build time: they
are neither stored in a checkpoint nor computed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from vlastack.errors import ConfigError, require

TINY_DEFAULTS: dict[str, Any] = {
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
}


@dataclass
class HFCausalLMConfig:
    pretrained: str | None = None  # local folder or hub id; None = random init from ``config``
    config: dict[str, Any] = field(
        default_factory=dict
    )  # overrides of TINY_DEFAULTS (model_type ...)
    tokenizer: str | None = None  # default: ``pretrained``, else the offline MiniLM WordPiece vocab
    max_text_tokens: int = 32
    num_layers: int | None = None
    layer_fraction: float | None = None  # keep ceil(fraction × layers) (FLOWER: 0.5)


class HFCausalLM(nn.Module):
    """A ``transformers`` causal LM with helpers to tokenize, embed, run on embeddings and decode."""

    kind = "decoder"

    def __init__(
        self,
        pretrained: str | None = None,
        config: dict[str, Any] | None = None,
        tokenizer: str | None = None,
        max_text_tokens: int = 32,
        num_layers: int | None = None,
        layer_fraction: float | None = None,
    ) -> None:
        super().__init__()
        transformers = require("transformers", "hf", "decoder language-model backbones")
        tok_path = tokenizer or pretrained
        if tok_path is None:
            from vlastack.models.language.minilm import default_path

            tok_path = default_path()
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(tok_path)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"language_kwargs.tokenizer: cannot load a tokenizer from '{tok_path}' ({exc})"
            ) from exc
        # Left padding keeps the last prefix position a real token (greedy decoding starts there).
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        if pretrained:
            try:
                self.model = transformers.AutoModelForCausalLM.from_pretrained(pretrained)
            except (OSError, ValueError) as exc:
                raise ConfigError(
                    f"language_kwargs.pretrained: cannot load a causal LM from '{pretrained}' ({exc}). "
                    "Give a local folder, or a hub id present in the local cache (the hub is offline)."
                ) from exc
        else:
            kw = {**TINY_DEFAULTS, **(config or {})}
            model_type = kw.pop("model_type")
            kw.setdefault("vocab_size", len(self.tokenizer))
            try:
                cfg = transformers.AutoConfig.for_model(model_type, **kw)
            except ValueError as exc:
                raise ConfigError(f"language_kwargs.config.model_type: {exc}") from exc
            self.model = transformers.AutoModelForCausalLM.from_config(cfg)
        if len(self.tokenizer) > self.vocab_size:
            raise ConfigError(
                f"tokenizer '{tok_path}' has {len(self.tokenizer)} tokens but the LM's vocab_size is "
                f"{self.vocab_size}; set language_kwargs.config.vocab_size >= {len(self.tokenizer)}"
            )
        if layer_fraction is not None:
            if num_layers is not None:
                raise ConfigError(
                    "language_kwargs: give num_layers or layer_fraction, not both "
                    f"(got {num_layers} and {layer_fraction})"
                )
            if not 0.0 < layer_fraction <= 1.0:
                raise ConfigError(
                    f"language_kwargs.layer_fraction must be in (0, 1], got {layer_fraction}"
                )
            total = len(self.model.get_decoder().layers)
            num_layers = max(1, math.ceil(layer_fraction * total - 1e-9))
        if num_layers is not None:
            self._truncate(num_layers)
        self.max_text_tokens = max_text_tokens
        self.out_dim = int(self.model.config.hidden_size)

    def _truncate(self, num_layers: int) -> None:
        base = self.model.get_decoder()
        if not 0 < num_layers <= len(base.layers):
            raise ConfigError(
                f"language_kwargs.num_layers must be in 1..{len(base.layers)}, got {num_layers}"
            )
        base.layers = base.layers[:num_layers]
        cfg = self.model.config
        cfg.num_hidden_layers = num_layers
        if getattr(cfg, "layer_types", None):
            cfg.layer_types = cfg.layer_types[:num_layers]

    @property
    def vocab_size(self) -> int:
        return int(self.model.get_input_embeddings().num_embeddings)

    def tokenize(
        self, texts: list[str], device: torch.device | str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> ids (B, L) and mask (B, L) bool, right-padded, at most ``max_text_tokens``."""
        enc = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_text_tokens,
            return_tensors="pt",
        )
        return enc["input_ids"].to(device), enc["attention_mask"].bool().to(device)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(ids)

    def hidden_states(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        past_key_values: Any = None,
        use_cache: bool = False,
    ) -> tuple[torch.Tensor, Any]:
        """(B, N, D) embeddings + (B, N_total) mask -> last hidden states (B, N, D), cache."""
        out = self.model.get_decoder()(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask.long(),
            past_key_values=past_key_values,
            use_cache=use_cache,
        )
        return out.last_hidden_state, out.past_key_values

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.get_output_embeddings()(hidden)


def build(cfg: HFCausalLMConfig) -> HFCausalLM:
    return HFCausalLM(
        cfg.pretrained,
        cfg.config,
        cfg.tokenizer,
        cfg.max_text_tokens,
        cfg.num_layers,
        cfg.layer_fraction,
    )
