"""FAST action tokenizer (Pertsch et al. 2501.09747; ``physical-intelligence/fast``).

A normalized chunk a (T, D) → DCT-II per dimension along time (orthonormal) → round(C·scale) →
flatten row-major over (T, D) (all dims' lowest frequency first) → one unicode char per integer,
``chr(q − min_token)`` → byte-level BPE from the ``tokenizers`` library. Decoding inverts each step;
a token sequence that does not decode to exactly T·D in-range coefficients gives a chunk of zeros
(as the reference does), reported through ``decode_with_validity``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from vlastack import atomic
from vlastack.errors import ConfigError, DataError, require

CONFIG_NAME = "fast_config.json"
TOKENIZER_NAME = "tokenizer.json"
FORMAT_VERSION = 1


def _dct(a: np.ndarray) -> np.ndarray:
    fft = require("scipy.fft", "hf", "the FAST tokenizer's DCT")
    return fft.dct(a, type=2, axis=-2, norm="ortho")


def _idct(c: np.ndarray) -> np.ndarray:
    fft = require("scipy.fft", "hf", "the FAST tokenizer's DCT")
    return fft.idct(c, type=2, axis=-2, norm="ortho")


def _new_bpe(vocab_size: int, chars: Iterable[str]):
    """Train a byte-level BPE over ``chars`` (strings); returns a ``tokenizers.Tokenizer``.

    FAST passes the raw coefficient chars as ``initial_alphabet``; under a byte-level
    pre-tokenizer those never occur, so we pass the 256-symbol byte alphabet instead, which makes
    every coefficient string encodable (no unknown tokens, lossless round trip).
    """
    tk = require("tokenizers", "hf", "the FAST tokenizer")
    tokenizer = tk.Tokenizer(tk.models.BPE())
    tokenizer.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        show_progress=False,
        special_tokens=[],
        initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(),
        max_token_length=10000,
    )
    tokenizer.train_from_iterator(chars, trainer=trainer)
    return tokenizer


class FastTokenizer:
    """DCT + BPE tokenizer for fixed-shape (time_horizon, action_dim) chunks of normalized actions."""

    def __init__(
        self,
        bpe,
        *,
        time_horizon: int,
        action_dim: int,
        scale: float = 10.0,
        min_token: int,
        max_token: int,
        extra: dict | None = None,
    ) -> None:
        self.bpe = bpe
        self.time_horizon = int(time_horizon)
        self.action_dim = int(action_dim)
        self.scale = float(scale)
        self.min_token = int(min_token)
        self.max_token = int(max_token)
        self.extra = dict(extra or {})

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        chunks: np.ndarray | Sequence[np.ndarray],
        *,
        vocab_size: int = 1024,
        scale: float = 10.0,
    ) -> FastTokenizer:
        """Fit min/max coefficient and BPE merges on normalized chunks (N, T, D)."""
        arr = np.asarray(chunks, dtype=np.float64)
        if arr.ndim != 3 or arr.shape[0] == 0:
            raise DataError(f"FAST fit needs chunks of shape (N, T, D) with N > 0, got {arr.shape}")
        if vocab_size < 256:
            raise ConfigError(
                f"FAST vocab_size must be >= 256 (the byte alphabet), got {vocab_size}"
            )
        q = np.around(_dct(arr) * scale).astype(np.int64)
        min_token, max_token = int(q.min()), int(q.max())
        flat = (q - min_token).reshape(q.shape[0], -1)
        strings = ("".join(map(chr, row)) for row in flat)
        bpe = _new_bpe(vocab_size, strings)
        return cls(
            bpe,
            time_horizon=arr.shape[1],
            action_dim=arr.shape[2],
            scale=scale,
            min_token=min_token,
            max_token=max_token,
        )

    @classmethod
    def untrained(
        cls, time_horizon: int, action_dim: int, scale: float = 10.0, coeff_bound: int | None = None
    ) -> FastTokenizer:
        """A tokenizer with no merges (vocabulary = the 256 byte symbols).

        For chunks in [−1, 1] the orthonormal DCT gives |C_k| ≤ ‖a‖₂ ≤ √T, so the default coefficient
        range is ±ceil(scale·√T). Each coefficient costs one or two tokens; fit on data
        (``vlastack fast fit``) to get FAST's compression.
        """
        bound = (
            coeff_bound if coeff_bound is not None else math.ceil(scale * math.sqrt(time_horizon))
        )
        return cls(
            _new_bpe(256, []),
            time_horizon=time_horizon,
            action_dim=action_dim,
            scale=scale,
            min_token=-bound,
            max_token=bound,
        )

    # ---- coding -------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return int(self.bpe.get_vocab_size())

    @property
    def max_tokens_per_chunk(self) -> int:
        """Upper bound on tokens for one chunk: ≤ UTF-8 bytes ≤ (1 or 2)·T·D."""
        per_char = 1 if self.max_token - self.min_token < 128 else 2
        return per_char * self.time_horizon * self.action_dim

    def _check_shape(self, arr: np.ndarray) -> None:
        if arr.shape[-2:] != (self.time_horizon, self.action_dim):
            raise DataError(
                f"FAST tokenizer was fit on chunks ({self.time_horizon}, {self.action_dim}); got "
                f"{tuple(arr.shape[-2:])}. Refit with `vlastack fast fit` for this horizon/action size."
            )

    def encode(self, chunks: np.ndarray) -> list[list[int]]:
        """(N, T, D) or (T, D) normalized chunks → N token-id lists.

        Coefficients outside the fitted [min_token, max_token] are clamped to it (the reference
        clamps only below).
        """
        arr = np.asarray(chunks, dtype=np.float64)
        if arr.ndim == 2:
            arr = arr[None]
        self._check_shape(arr)
        q = np.around(_dct(arr) * self.scale).astype(np.int64)
        q = np.clip(q - self.min_token, 0, self.max_token - self.min_token).reshape(
            arr.shape[0], -1
        )
        return [enc.ids for enc in self.bpe.encode_batch(["".join(map(chr, row)) for row in q])]

    def decode_with_validity(
        self, token_lists: Sequence[Sequence[int]]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Token lists → (N, T, D) float32 chunks and (N,) bool: False where decoding failed (zeros)."""
        T, D = self.time_horizon, self.action_dim
        out = np.zeros((len(token_lists), T, D), dtype=np.float64)
        valid = np.zeros(len(token_lists), dtype=bool)
        span = self.max_token - self.min_token
        for i, ids in enumerate(token_lists):
            text = self.bpe.decode(list(ids), skip_special_tokens=False)
            codes = np.fromiter((ord(c) for c in text), dtype=np.int64, count=len(text))
            if codes.size != T * D or (codes.size and (codes.max() > span)):
                continue
            out[i] = _idct((codes + self.min_token).reshape(T, D) / self.scale)
            valid[i] = True
        return out.astype(np.float32), valid

    def decode(self, token_lists: Sequence[Sequence[int]]) -> np.ndarray:
        """Token lists → (N, T, D) chunks; invalid sequences give zeros."""
        return self.decode_with_validity(token_lists)[0]

    # ---- persistence --------------------------------------------------------------------
    def config_dict(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "kind": "fast",
            "time_horizon": self.time_horizon,
            "action_dim": self.action_dim,
            "scale": self.scale,
            "min_token": self.min_token,
            "max_token": self.max_token,
            "vocab_size": self.vocab_size,
            **({"extra": self.extra} if self.extra else {}),
        }

    def to_dict(self) -> dict:
        """JSON-able dict holding the config and the BPE (used to embed a tokenizer in a head config)."""
        return {**self.config_dict(), "bpe": json.loads(self.bpe.to_str())}

    @classmethod
    def from_dict(cls, d: dict) -> FastTokenizer:
        tk = require("tokenizers", "hf", "the FAST tokenizer")
        return cls._from_config(d, tk.Tokenizer.from_str(json.dumps(d["bpe"])), "<dict>")

    @classmethod
    def _from_config(cls, cfg: dict, bpe, where: str) -> FastTokenizer:
        if cfg.get("format_version") != FORMAT_VERSION:
            raise DataError(
                f"{where}: FAST format_version {cfg.get('format_version')!r} is not {FORMAT_VERSION}; "
                "refit the tokenizer with `vlastack fast fit`."
            )
        try:
            return cls(
                bpe,
                time_horizon=cfg["time_horizon"],
                action_dim=cfg["action_dim"],
                scale=cfg["scale"],
                min_token=cfg["min_token"],
                max_token=cfg["max_token"],
                extra=cfg.get("extra"),
            )
        except KeyError as exc:
            raise DataError(f"{where}: missing field {exc} in the FAST config") from None

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``fast_config.json`` and ``tokenizer.json`` into ``folder`` (atomic per file)."""
        d = Path(folder)
        d.mkdir(parents=True, exist_ok=True)
        for name, text in (
            (TOKENIZER_NAME, self.bpe.to_str(pretty=True)),
            (CONFIG_NAME, json.dumps(self.config_dict(), indent=2)),
        ):
            atomic.write_text(d / name, text)
        return d

    @classmethod
    def load(cls, folder: str | os.PathLike) -> FastTokenizer:
        tk = require("tokenizers", "hf", "the FAST tokenizer")
        d = Path(folder)
        cfg_path = d / CONFIG_NAME
        if not cfg_path.exists() or not (d / TOKENIZER_NAME).exists():
            raise DataError(
                f"{d}: not a FAST tokenizer folder (needs {CONFIG_NAME} and {TOKENIZER_NAME}); "
                "create one with `vlastack fast fit DATASET --out DIR`."
            )
        cfg = json.loads(cfg_path.read_text())
        return cls._from_config(cfg, tk.Tokenizer.from_file(str(d / TOKENIZER_NAME)), str(cfg_path))
