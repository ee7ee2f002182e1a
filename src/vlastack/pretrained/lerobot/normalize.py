"""LeRobot's normalizer and unnormalizer processor steps (``normalizer_processor`` /
``unnormalizer_processor`` in the processor JSON), as plain functions of the stored stats.

The mode comes from the step's ``norm_map`` keyed by the feature's type (VISUAL, STATE, ENV,
ACTION). Per mode, with ``eps`` from the step config (1e-8 in LeRobot 0.6.1):

* MEAN_STD: ``(x - mean) / (std + eps)``; inverse ``x * std + mean`` (no eps on the way back).
* MIN_MAX: ``2 * (x - min) / d - 1`` with ``d = max - min`` (``eps`` where ``d == 0``); inverse
  ``(x + 1) / 2 * d + min``.
* QUANTILES (q01/q99) and QUANTILE10 (q10/q90): as MIN_MAX with those bounds; inverse
  ``(x + 1) * d / 2 + lo``.
* IDENTITY, or a feature without stats: unchanged (LeRobot says nothing in that case either).

No mode clips. Visual stats stored flat ``(C,)`` are reshaped to ``(C, 1, 1)``. The stats are
float32. Read from LeRobot 0.6.1 ``processor/normalize_processor.py``; the MEAN_STD branch is
verified bit-exactly by the ACT golden test (``obs<i>.preprocessed.*``) and, for the inverse,
through ``obs<i>.action_chunk``.
"""

from __future__ import annotations

from typing import Any

import torch

from vlastack.errors import ConfigError
from vlastack.pretrained.lerobot.folder import Step

MODES = ("IDENTITY", "MEAN_STD", "MIN_MAX", "QUANTILES", "QUANTILE10")
_BOUNDS = {"MIN_MAX": ("min", "max"), "QUANTILES": ("q01", "q99"), "QUANTILE10": ("q10", "q90")}


class FeatureNormalizer:
    """The stats and modes of one normalizer/unnormalizer step.

    ``features`` maps a feature key to its type, ``norm_map`` a type to its mode; ``stats`` is
    ``{feature: {stat: tensor}}`` as read from the step's state file.
    """

    def __init__(
        self,
        features: dict[str, str],
        norm_map: dict[str, str],
        stats: dict[str, dict[str, torch.Tensor]],
        eps: float = 1e-8,
    ) -> None:
        for kind, mode in norm_map.items():
            if mode not in MODES:
                raise ConfigError(
                    f"normalization mode {mode!r} for {kind} is not supported "
                    f"(supported: {', '.join(MODES)})"
                )
        self.features = dict(features)
        self.norm_map = dict(norm_map)
        self.eps = float(eps)
        self.stats: dict[str, dict[str, torch.Tensor]] = {}
        # the shapes as stored in the state file, for writing it back (``flat_stats``)
        self.stored_shapes = {
            key: {name: tuple(t.shape) for name, t in per_stat.items()}
            for key, per_stat in stats.items()
        }
        for key, per_stat in stats.items():
            visual = self.features.get(key) == "VISUAL"
            self.stats[key] = {
                name: (t.reshape(-1, 1, 1) if visual and t.ndim == 1 else t).to(torch.float32)
                for name, t in per_stat.items()
            }
        for key, kind in self.features.items():
            mode = self.norm_map.get(kind, "IDENTITY")
            needed = ("mean", "std") if mode == "MEAN_STD" else _BOUNDS.get(mode, ())
            have = self.stats.get(key)
            if have is not None:
                missing = [s for s in needed if s not in have]
                if missing:
                    raise ConfigError(
                        f"stats of {key!r} lack {', '.join(missing)}, which {mode} needs; "
                        "the checkpoint's normalizer state file is incomplete"
                    )

    @classmethod
    def from_step(cls, step: Step, stats: dict[str, dict[str, torch.Tensor]]) -> FeatureNormalizer:
        cfg = step.config
        features = {k: str(v["type"]) for k, v in (cfg.get("features") or {}).items()}
        return cls(features, dict(cfg.get("norm_map") or {}), stats, cfg.get("eps", 1e-8))

    def mode(self, key: str) -> str:
        kind = self.features.get(key)
        if kind is None or key not in self.stats:
            return "IDENTITY"
        return self.norm_map.get(kind, "IDENTITY")

    def _stat(self, key: str, name: str, like: torch.Tensor) -> torch.Tensor:
        return self.stats[key][name].to(device=like.device, dtype=like.dtype)

    def normalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        mode = self.mode(key)
        if mode == "IDENTITY":
            return x
        if mode == "MEAN_STD":
            mean, std = self._stat(key, "mean", x), self._stat(key, "std", x)
            return (x - mean) / (std + self.eps)
        lo, hi = (self._stat(key, s, x) for s in _BOUNDS[mode])
        d = self._span(lo, hi)
        return 2 * (x - lo) / d - 1

    def unnormalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        mode = self.mode(key)
        if mode == "IDENTITY":
            return x
        if mode == "MEAN_STD":
            mean, std = self._stat(key, "mean", x), self._stat(key, "std", x)
            return x * std + mean
        lo, hi = (self._stat(key, s, x) for s in _BOUNDS[mode])
        d = self._span(lo, hi)
        if mode == "MIN_MAX":
            return (x + 1) / 2 * d + lo
        return (x + 1.0) * d / 2.0 + lo

    def _span(self, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        d = hi - lo
        return torch.where(d == 0, torch.tensor(self.eps, device=d.device, dtype=d.dtype), d)

    def flat_stats(self) -> dict[str, torch.Tensor]:
        """The stats as a LeRobot state file holds them: ``'<feature>.<stat>'`` -> float32 CPU
        tensor in its stored shape (visual ``(C,)`` stats are kept ``(C, 1, 1)`` in memory)."""
        out = {}
        for key, per_stat in self.stats.items():
            shapes = self.stored_shapes.get(key, {})
            for name, t in per_stat.items():
                shape = shapes.get(name, tuple(t.shape))
                out[f"{key}.{name}"] = t.detach().to("cpu", torch.float32).reshape(shape).clone()
        return out

    def describe(self) -> dict[str, Any]:
        return {key: self.mode(key) for key in self.features}
