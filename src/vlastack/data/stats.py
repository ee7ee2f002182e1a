"""Per-feature normalization statistics, per episode and aggregated, in LeRobot v3's layout.

Each feature gets min, max, mean, std, count and the quantiles q01, q10, q50, q90, q99. They are
computed per episode while writing (stored as ``stats/<feature>/<stat>`` columns of
``meta/episodes``) and aggregated into ``meta/stats.json``. Images are reduced per channel to
shape (3, 1, 1) in [0, 1] from a subsample of frames, as LeRobot does.

Aggregation (the same rule LeRobot 0.6 uses, checked against its fixture): min/max are the
elementwise min/max, mean is the count-weighted mean, std comes from the pooled variance
(sum of count·(var + (mean_ep − mean)²) / total count), and every quantile is the count-weighted
mean of the per-episode quantiles. That last rule is an approximation (a weighted mean of
quantiles is not the quantile of the union), cheap and mergeable; ``compute_stats(reader,
exact_quantiles=True)`` gives the exact global quantiles of the non-image features instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from vlastack.errors import DataError

QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}
STAT_NAMES = ("min", "max", "mean", "std", "count", *QUANTILES)

Stats = dict[str, np.ndarray]


class _Feature(Protocol):
    @property
    def dtype(self) -> str: ...


class _Episode(Protocol):
    @property
    def length(self) -> int: ...
    @property
    def dataset_from_index(self) -> int: ...
    @property
    def dataset_to_index(self) -> int: ...


class FrameSource(Protocol):
    """What ``compute_stats`` reads a dataset through (``DatasetReader`` is one); a protocol, so
    that this module needs no import of the reader, which imports it."""

    @property
    def num_episodes(self) -> int: ...
    @property
    def features(self) -> Mapping[str, _Feature]: ...
    def episode(self, i: int) -> _Episode: ...
    def column(self, key: str) -> np.ndarray: ...
    def decode_frames(
        self, camera_key: str, episode_index: int, frame_indices: Any
    ) -> np.ndarray: ...


def num_image_samples(length: int, lo: int = 100, hi: int = 10_000, power: float = 0.75) -> int:
    """How many frames of an episode feed its image stats: all up to ``lo``, then ~length**0.75."""
    if length < lo:
        return length
    return max(lo, min(int(length**power), hi))


def image_sample_indices(length: int) -> np.ndarray:
    """Evenly spaced frame indices of an episode used for image stats (LeRobot's rule)."""
    n = num_image_samples(length)
    return np.round(np.linspace(0, length - 1, n)).astype(np.int64)


def _downsample(frames: np.ndarray, target_px: int = 150, threshold_px: int = 300) -> np.ndarray:
    # (N, H, W, C): images of 300 px or more are strided down to ~150 px; stats barely change and
    # the quantile sort gets 4-16x cheaper.
    h, w = frames.shape[1:3]
    if max(h, w) < threshold_px:
        return frames
    step = max(h, w) // target_px
    return frames[:, ::step, ::step]


def vector_stats(x: np.ndarray) -> Stats:
    """Stats over axis 0 of (N, *shape) numbers; every stat has ``shape`` (count has (1,))."""
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[:, None]
    if x.shape[0] == 0:
        raise DataError("cannot compute stats of an empty episode")
    xf = x.astype(np.float64)
    out: Stats = {
        "min": xf.min(axis=0),
        "max": xf.max(axis=0),
        "mean": xf.mean(axis=0),
        "std": xf.std(axis=0),
        "count": np.array([x.shape[0]], dtype=np.int64),
    }
    qs = np.quantile(xf, list(QUANTILES.values()), axis=0)
    for i, name in enumerate(QUANTILES):
        out[name] = qs[i]
    return out


def image_stats(frames: np.ndarray) -> Stats:
    """Per-channel stats, shape (C, 1, 1) in [0, 1], of (N, H, W, C) uint8 frames."""
    if frames.ndim != 4 or frames.dtype != np.uint8:
        raise DataError(
            f"image stats need uint8 (N, H, W, C) frames, got {frames.dtype} {frames.shape}"
        )
    small = _downsample(frames)
    c = small.shape[-1]
    # (C, P) pixels per channel; quantiles of uint8 values are exact via a 256-bin histogram.
    pix = small.reshape(-1, c).T
    out: Stats = {"count": np.array([frames.shape[0]], dtype=np.int64)}
    mins, maxs, means, stds = [], [], [], []
    qvals: dict[str, list[float]] = {k: [] for k in QUANTILES}
    for ch in pix:
        hist = np.bincount(ch, minlength=256).astype(np.float64)
        levels = np.arange(256, dtype=np.float64)
        n = hist.sum()
        mean = (hist * levels).sum() / n
        mins.append(float(ch.min()))
        maxs.append(float(ch.max()))
        means.append(mean)
        stds.append(float(np.sqrt((hist * (levels - mean) ** 2).sum() / n)))
        qs = _hist_quantiles(hist, list(QUANTILES.values()))
        for k, v in zip(QUANTILES, qs):
            qvals[k].append(v)

    def shaped(v: list[float]) -> np.ndarray:
        return np.asarray(v, dtype=np.float64).reshape(c, 1, 1) / 255.0

    out.update(min=shaped(mins), max=shaped(maxs), mean=shaped(means), std=shaped(stds))
    for k in QUANTILES:
        out[k] = shaped(qvals[k])
    return {k: out[k] for k in STAT_NAMES}


def _hist_quantiles(hist: np.ndarray, qs: list[float]) -> list[float]:
    # Linear-interpolated quantiles (numpy's default) of integer samples given by their histogram.
    n = hist.sum()
    cum = np.cumsum(hist)
    out = []
    for q in qs:
        pos = q * (n - 1)
        lo_i, frac = int(np.floor(pos)), pos - np.floor(pos)
        lo_v = int(np.searchsorted(cum, lo_i + 1))
        hi_v = int(np.searchsorted(cum, min(lo_i + 2, n)))
        out.append(lo_v + frac * (hi_v - lo_v))
    return out


def aggregate_stats(per_episode: list[dict[str, Stats]]) -> dict[str, Stats]:
    """Combine per-episode stats into dataset stats (rules in the module docstring)."""
    keys: list[str] = []
    for ep in per_episode:
        keys.extend(k for k in ep if k not in keys)
    out: dict[str, Stats] = {}
    for key in keys:
        items = [ep[key] for ep in per_episode if key in ep]
        counts = np.array([float(s["count"][0]) for s in items])
        total = counts.sum()
        shape = np.asarray(items[0]["mean"]).shape
        w = (counts / total).reshape(-1, *([1] * len(shape)))
        means = np.stack([np.asarray(s["mean"], dtype=np.float64) for s in items])
        var = np.stack([np.asarray(s["std"], dtype=np.float64) ** 2 for s in items])
        mean = (w * means).sum(axis=0)
        agg: Stats = {
            "min": np.min(np.stack([s["min"] for s in items]), axis=0),
            "max": np.max(np.stack([s["max"] for s in items]), axis=0),
            "mean": mean,
            "std": np.sqrt((w * (var + (means - mean) ** 2)).sum(axis=0)),
            "count": np.array([int(total)], dtype=np.int64),
        }
        for q in QUANTILES:
            if all(q in s for s in items):
                agg[q] = (w * np.stack([np.asarray(s[q], dtype=np.float64) for s in items])).sum(0)
        out[key] = agg
    return out


def stats_to_json(stats: dict[str, Stats]) -> dict[str, dict[str, Any]]:
    return {k: {s: np.asarray(v).tolist() for s, v in st.items()} for k, st in stats.items()}


def stats_from_json(d: dict[str, dict[str, Any]], source: str = "stats") -> dict[str, Stats]:
    try:
        return {k: {s: np.asarray(v) for s, v in st.items()} for k, st in d.items()}
    except (AttributeError, TypeError) as exc:
        raise DataError(
            f"{source}: malformed stats ({exc}); recompute them with compute_stats"
        ) from None


def compute_episode_stats(
    reader: FrameSource, episode_index: int, keys: list[str] | None = None
) -> dict[str, Stats]:
    """Recompute one episode's stats from its stored frames (images from a frame subsample)."""
    ep = reader.episode(episode_index)
    out: dict[str, Stats] = {}
    for key, feat in reader.features.items():
        if keys is not None and key not in keys:
            continue
        if feat.dtype == "string":
            continue
        if feat.dtype in ("video", "image"):
            idx = image_sample_indices(ep.length)
            out[key] = image_stats(reader.decode_frames(key, episode_index, idx))
        else:
            col = reader.column(key)[ep.dataset_from_index : ep.dataset_to_index]
            out[key] = vector_stats(col)
    return out


def compute_stats(
    reader: FrameSource, keys: list[str] | None = None, exact_quantiles: bool = False
) -> dict[str, Stats]:
    """Recompute the dataset stats from the stored data (per episode, then aggregated).

    With ``exact_quantiles`` the non-image quantiles (and everything else) are computed over all
    frames at once instead of aggregated from episodes.
    """
    per_ep = [compute_episode_stats(reader, e, keys) for e in range(reader.num_episodes)]
    stats = aggregate_stats(per_ep)
    if exact_quantiles:
        for key, feat in reader.features.items():
            if key in stats and feat.dtype not in ("video", "image", "string"):
                stats[key] = vector_stats(reader.column(key))
    return stats
