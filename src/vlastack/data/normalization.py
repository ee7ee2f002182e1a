"""Per-feature normalization of batches with dataset statistics, saved with every checkpoint.

Modes: ``mean_std`` (x−μ)/σ; ``min_max`` to [−1, 1]; ``quantile`` q01/q99 to [−1, 1] exactly as
openpi's ``normalize_quantile`` ((x−q01)/(q99−q01+1e-6)·2−1); ``identity`` only when a config names
it for a feature. Missing, mis-shaped or non-finite stats are a ``DataError`` naming the key: a
silently skipped normalization is the most damaging bug VLA users report (USERS.md #2).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from vlastack.errors import DataError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
Mode = Literal["mean_std", "min_max", "quantile", "identity"]
MODES: tuple[str, ...] = ("mean_std", "min_max", "quantile", "identity")
# Which stats each mode reads.
REQUIRED_STATS: dict[str, tuple[str, ...]] = {
    "mean_std": ("mean", "std"),
    "min_max": ("min", "max"),
    "quantile": ("q01", "q99"),
    "identity": (),
}
# Added to std / range, as LeRobot (1e-8 for mean_std/min_max) and openpi (1e-6 for quantile) do.
EPS: dict[str, float] = {"mean_std": 1e-8, "min_max": 1e-8, "quantile": 1e-6, "identity": 0.0}
# A dimension whose std / range is below this is "zero-range" (a constant joint, an unused
# gripper). Dividing by ~eps would turn sensor noise at inference into values of ~1e6, so such
# dimensions get scale 1: training values map to ~0 and deviations pass through unscaled.
ZERO_RANGE = 1e-6

StatsDict = Mapping[str, Mapping[str, Any]]


@dataclass
class NormalizationConfig:
    """Feature key -> mode. Features not listed are left untouched (they are not model inputs)."""

    modes: dict[str, str] = field(
        default_factory=lambda: {"observation.state": "mean_std", "action": "mean_std"}
    )

    def __post_init__(self) -> None:
        for key, mode in self.modes.items():
            if mode not in MODES:
                raise DataError(
                    f"normalization mode {mode!r} for feature {key!r} is unknown; "
                    f"choose one of {list(MODES)}"
                )

    @classmethod
    def preset(cls, name: str) -> NormalizationConfig:
        """Named presets that follow the papers' released code."""
        presets = {
            # LeRobot's ACT / pi0 / SmolVLA defaults
            "mean_std": {"observation.state": "mean_std", "action": "mean_std"},
            # Diffusion Policy normalizes state and action to [-1, 1] by min/max.
            "diffusion_policy": {"observation.state": "min_max", "action": "min_max"},
            # openpi pi0-FAST / pi05 use q01/q99.
            "quantile": {"observation.state": "quantile", "action": "quantile"},
        }
        if name not in presets:
            raise DataError(f"unknown normalization preset {name!r}; choose one of {list(presets)}")
        return cls(dict(presets[name]))

    def to_dict(self) -> dict[str, Any]:
        return {"modes": dict(self.modes)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> NormalizationConfig:
        return cls(dict(d["modes"]))


def _buffer_name(key: str) -> str:
    # nn.Module buffer names may not contain "."; feature keys do ("observation.state").
    return key.replace(".", "__")


def _as_array(value: Any, key: str, stat: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(
            f"stats[{key!r}][{stat!r}] is not numeric ({type(value).__name__}); "
            "recompute the stats with `vlastack data stats PATH`"
        ) from None
    return arr


def _affine(mode: str, st: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(offset, scale, zero_range_mask) such that normalized = (x − offset) / scale."""
    eps = EPS[mode]
    if mode == "mean_std":
        offset, spread = st["mean"], st["std"]
        scale = spread + eps
    elif mode in ("min_max", "quantile"):
        lo, hi = (st["min"], st["max"]) if mode == "min_max" else (st["q01"], st["q99"])
        spread = hi - lo
        # (x−lo)/(hi−lo+eps)·2−1 == (x − (lo + r/2)) / (r/2) with r = hi−lo+eps
        half = (spread + eps) / 2.0
        offset, scale = lo + half, half
    else:
        raise AssertionError(mode)
    zero = spread < ZERO_RANGE
    if np.any(zero):
        scale = np.where(zero, 1.0, scale)
        if mode != "mean_std":
            offset = np.where(zero, (lo + hi) / 2.0, offset)
    return offset, scale, zero


class Normalizer(nn.Module):
    """Normalizes the features named in ``modes`` and unnormalizes predicted actions.

    The affine parameters are buffers (so ``state_dict`` carries them); ``to_dict()`` keeps the
    raw stats and modes as JSON for ``checkpoint/normalization.json``. Stats shapes broadcast
    against the trailing axes of a batch: (S,) against (B, T, S), (C, 1, 1) against (B, T, C, H, W).
    """

    def __init__(
        self,
        stats: StatsDict,
        modes: Mapping[str, str] | NormalizationConfig,
        *,
        feature_shapes: Mapping[str, tuple[int, ...]] | None = None,
        source: str = "stats",
    ) -> None:
        super().__init__()
        if isinstance(modes, NormalizationConfig):
            modes = modes.modes
        NormalizationConfig(dict(modes))  # validates mode names
        self.modes: dict[str, str] = dict(modes)
        self.source = source
        self.raw_stats: dict[str, dict[str, np.ndarray]] = {}
        self.zero_range_dims: dict[str, list[int]] = {}
        for key, mode in self.modes.items():
            if mode == "identity":
                continue
            if key not in stats:
                raise DataError(
                    f"{source}: no statistics for feature {key!r} (needed by mode {mode!r}); "
                    f"available: {sorted(stats)}. Recompute them with `vlastack data stats PATH`, "
                    f"or set mode 'identity' for {key!r} if it really must stay unnormalized"
                )
            st: dict[str, np.ndarray] = {}
            for name in REQUIRED_STATS[mode]:
                if name not in stats[key]:
                    raise DataError(
                        f"{source}: stats[{key!r}] has no {name!r} (needed by mode {mode!r}); "
                        f"it has {sorted(stats[key])}. Recompute with `vlastack data stats PATH` "
                        "or pick a mode whose stats exist"
                    )
                arr = _as_array(stats[key][name], key, name)
                if not np.all(np.isfinite(arr)):
                    raise DataError(
                        f"{source}: stats[{key!r}][{name!r}] contains NaN or inf ({arr.tolist()}); "
                        "the dataset has non-finite values: run `vlastack data doctor PATH`, fix "
                        "the episodes, then `vlastack data stats PATH`"
                    )
                st[name] = arr
            shapes = {n: a.shape for n, a in st.items()}
            if len(set(shapes.values())) > 1:
                raise DataError(
                    f"{source}: stats for {key!r} have inconsistent shapes {shapes}; "
                    "recompute them with `vlastack data stats PATH`"
                )
            shape = next(iter(shapes.values()))
            if feature_shapes is not None and key in feature_shapes:
                want = tuple(feature_shapes[key])
                if not _broadcasts(shape, want):
                    raise DataError(
                        f"{source}: stats for {key!r} have shape {shape} but the feature has "
                        f"shape {want}; the stats belong to another dataset or robot. "
                        "Recompute them with `vlastack data stats PATH`"
                    )
            offset, scale, zero = _affine(mode, st)
            if np.any(zero):
                dims = [int(i) for i in np.flatnonzero(zero.reshape(-1))]
                self.zero_range_dims[key] = dims
                log.warning(
                    "%s: feature %r dims %s have (near-)zero range for mode %s; "
                    "using scale 1 there so noise is not amplified",
                    source,
                    key,
                    dims,
                    mode,
                )
            self.raw_stats[key] = st
            self.register_buffer(
                f"{_buffer_name(key)}__offset", torch.as_tensor(offset, dtype=torch.float32)
            )
            self.register_buffer(
                f"{_buffer_name(key)}__scale", torch.as_tensor(scale, dtype=torch.float32)
            )

    # ---- application -------------------------------------------------------------------
    def _params(self, key: str) -> tuple[torch.Tensor, torch.Tensor]:
        offset = getattr(self, f"{_buffer_name(key)}__offset")
        scale = getattr(self, f"{_buffer_name(key)}__scale")
        return offset, scale

    def _check(self, key: str, x: torch.Tensor, offset: torch.Tensor) -> None:
        if not _broadcasts(tuple(offset.shape), tuple(x.shape)):
            raise DataError(
                f"feature {key!r} has shape {tuple(x.shape)} but its normalization stats have "
                f"shape {tuple(offset.shape)}; the stats come from a different dataset or robot"
            )

    def normalize_key(self, key: str, x: torch.Tensor) -> torch.Tensor:
        mode = self.modes.get(key)
        if mode is None:
            raise DataError(f"no normalization mode for feature {key!r}; modes: {self.modes}")
        if mode == "identity":
            return x
        offset, scale = self._params(key)
        self._check(key, x, offset)
        return (x - offset.to(x.dtype)) / scale.to(x.dtype)

    def unnormalize_key(self, key: str, x: torch.Tensor) -> torch.Tensor:
        mode = self.modes.get(key)
        if mode is None:
            raise DataError(f"no normalization mode for feature {key!r}; modes: {self.modes}")
        if mode == "identity":
            return x
        offset, scale = self._params(key)
        self._check(key, x, offset)
        return x * scale.to(x.dtype) + offset.to(x.dtype)

    def normalize(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """Return a new batch with every feature in ``modes`` normalized; others are copied.

        A feature named in ``modes`` but absent from the batch (``action`` at inference) is
        skipped; there is nothing to normalize.
        """
        out = dict(batch)
        for key in self.modes:
            if key in out and isinstance(out[key], torch.Tensor):
                out[key] = self.normalize_key(key, out[key])
        return out

    def unnormalize_actions(self, x: torch.Tensor, key: str = "action") -> torch.Tensor:
        """Map model-space actions (…, A) back to the robot's units."""
        return self.unnormalize_key(key, x)

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        return self.normalize(batch)

    # ---- persistence -------------------------------------------------------------------
    @property
    def stats(self) -> dict[str, dict[str, np.ndarray]]:
        return {k: dict(v) for k, v in self.raw_stats.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "modes": dict(self.modes),
            "stats": {
                k: {n: a.tolist() for n, a in st.items()} for k, st in self.raw_stats.items()
            },
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "normalization") -> Normalizer:
        version = int(d.get("format_version", FORMAT_VERSION))
        if version > FORMAT_VERSION:
            raise DataError(
                f"{source}: normalization format_version {version} is newer than this vlastack "
                f"understands ({FORMAT_VERSION}); upgrade vlastack"
            )
        for field_name in ("modes", "stats"):
            if field_name not in d:
                raise DataError(f"{source}: normalization is missing the field {field_name!r}")
        return cls(d["stats"], d["modes"], source=source)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}: {m}" for k, m in self.modes.items())


def _broadcasts(stat_shape: tuple[int, ...], x_shape: tuple[int, ...]) -> bool:
    """True if stats of ``stat_shape`` broadcast against the trailing axes of ``x_shape``."""
    if len(stat_shape) > len(x_shape):
        # (1,) stats of a scalar feature vs a (B,) tensor are fine
        return all(s == 1 for s in stat_shape[: len(stat_shape) - len(x_shape)]) and _broadcasts(
            stat_shape[len(stat_shape) - len(x_shape) :], x_shape
        )
    tail = x_shape[len(x_shape) - len(stat_shape) :] if stat_shape else ()
    return all(s == 1 or s == t for s, t in zip(stat_shape, tail))


def check_stats_match(
    a: StatsDict,
    b: StatsDict,
    *,
    keys: list[str] | None = None,
    stat_names: tuple[str, ...] = ("mean", "std", "min", "max", "q01", "q99"),
    rtol: float = 1e-4,
    atol: float = 1e-6,
    names: tuple[str, str] = ("checkpoint", "dataset"),
) -> list[str]:
    """List the differences between two stats dicts (empty when they agree).

    Used when a checkpoint meets a dataset or robot: its stats must be the ones it was trained
    with. ``keys`` limits the comparison to those features (default: the union of both).
    """
    na, nb = names
    out: list[str] = []
    all_keys = keys if keys is not None else sorted(set(a) | set(b))
    for key in all_keys:
        if key not in a:
            out.append(f"{key!r}: missing in {na} stats")
            continue
        if key not in b:
            out.append(f"{key!r}: missing in {nb} stats")
            continue
        for s in stat_names:
            in_a, in_b = s in a[key], s in b[key]
            if not in_a and not in_b:
                continue
            if in_a != in_b:
                out.append(f"{key!r}.{s}: present only in {na if in_a else nb} stats")
                continue
            xa = np.asarray(a[key][s], dtype=np.float64)
            xb = np.asarray(b[key][s], dtype=np.float64)
            if xa.shape != xb.shape:
                out.append(f"{key!r}.{s}: shape {xa.shape} in {na} vs {xb.shape} in {nb}")
                continue
            if not np.allclose(xa, xb, rtol=rtol, atol=atol, equal_nan=True):
                diff = np.abs(xa - xb)
                i = int(np.argmax(diff))
                out.append(
                    f"{key!r}.{s}: differs (max |Δ| {diff.max():.4g} at dim {i}: "
                    f"{xa.reshape(-1)[i]:.6g} in {na} vs {xb.reshape(-1)[i]:.6g} in {nb})"
                )
    return out
