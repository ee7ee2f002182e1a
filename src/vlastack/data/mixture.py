"""Weighted mixtures of windowed datasets from different robots in one training stream.

State and action vectors are zero-padded to the largest size (``embodiment.pad_vector``) with
``state_dim_mask`` / ``action_dim_mask`` saying which dims are real, and a camera a dataset lacks
becomes a zero image with ``observation.images.<cam>_is_pad`` set, as in Octo's and openpi's
cross-embodiment training (Octo: Team et al. 2024; π0: Black et al. 2024).
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, Sampler

from vlastack.embodiment import pad_vector
from vlastack.errors import DataError

log = logging.getLogger(__name__)

IMAGE_PREFIX = "observation.images."
STATE, ACTION = "observation.state", "action"
VECTOR_STATS = ("mean", "std", "min", "max", "q01", "q10", "q50", "q90", "q99")
# Values given to a padded dim that no dataset has, so that zeros stay zeros under every mode.
PAD_STATS = {"mean": 0.0, "std": 1.0, "min": -1.0, "max": 1.0, "q01": -1.0, "q99": 1.0}


def _is_camera(key: str) -> bool:
    return key.startswith(IMAGE_PREFIX) and not key.endswith(("_is_pad", "_mask"))


def _to_numpy(x: Any) -> np.ndarray:
    return x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _like(template: Any, arr: np.ndarray) -> Any:
    """Return ``arr`` in the container type of ``template`` (torch tensor or numpy)."""
    return (
        torch.from_numpy(np.ascontiguousarray(arr)) if isinstance(template, torch.Tensor) else arr
    )


class DatasetMixture(Dataset):
    """Concatenation of map-style datasets whose samples are padded to a common layout.

    ``datasets`` is ``[(dataset, weight), ...]``; each dataset returns ARCHITECTURE.md samples.
    Index ``i`` walks the datasets one after the other; use ``sampler()`` to draw dataset ``d``
    with probability ``weight_d / Σ weight``. Each sample gains ``dataset_index`` (int),
    ``state_dim_mask`` (S,), ``action_dim_mask`` (A,) and, for every camera in the union,
    ``observation.images.<cam>_is_pad`` (T,).
    """

    def __init__(
        self,
        datasets: Sequence[tuple[Any, float]],
        *,
        pad_state_dim: int | None = None,
        pad_action_dim: int | None = None,
    ) -> None:
        if not datasets:
            raise DataError("DatasetMixture needs at least one (dataset, weight) pair")
        self.datasets = [d for d, _ in datasets]
        weights = np.asarray([float(w) for _, w in datasets], dtype=np.float64)
        if np.any(~np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0:
            raise DataError(
                f"mixture weights {weights.tolist()} must be finite, non-negative and not all 0"
            )
        self.weights = weights / weights.sum()
        self.lengths = [len(d) for d in self.datasets]
        for i, n in enumerate(self.lengths):
            if n == 0:
                raise DataError(f"mixture dataset {i} is empty; remove it or check its filters")
        self._offsets = np.concatenate([[0], np.cumsum(self.lengths)]).tolist()

        # Probe one sample per dataset to learn dims, cameras and image shapes.
        probes = [d[0] for d in self.datasets]
        self.state_dims = [int(_to_numpy(p[STATE]).shape[-1]) if STATE in p else 0 for p in probes]
        self.action_dims = [int(_to_numpy(p[ACTION]).shape[-1]) for p in probes]
        self.state_dim = self._target(pad_state_dim, max(self.state_dims), "state")
        self.action_dim = self._target(pad_action_dim, max(self.action_dims), "action")

        self.camera_shapes: dict[str, tuple[int, ...]] = {}
        self.camera_dtypes: dict[str, np.dtype] = {}
        self._camera_template: dict[str, Any] = {}  # a real image, for the container type
        self._cameras_of: list[set[str]] = []
        for i, p in enumerate(probes):
            cams = {k for k in p if _is_camera(k)}
            self._cameras_of.append(cams)
            for k in sorted(cams):
                shape = tuple(_to_numpy(p[k]).shape)
                if k in self.camera_shapes and self.camera_shapes[k] != shape:
                    raise DataError(
                        f"camera {k!r} has shape {shape} in mixture dataset {i} but "
                        f"{self.camera_shapes[k]} in another; resize the images to one size "
                        "(the dataset's image transform) before mixing"
                    )
                self.camera_shapes[k] = shape
                self.camera_dtypes[k] = _to_numpy(p[k]).dtype
                self._camera_template.setdefault(k, p[k])
        self.camera_keys = sorted(self.camera_shapes)
        # Keys every dataset provides; anything else would break default collation.
        common = set.intersection(*(set(p) - {k for k in p if _is_camera(k)} for p in probes))
        dropped = set().union(*(set(p) for p in probes)) - common - set(self.camera_keys)
        dropped = {k for k in dropped if not k.endswith("_is_pad") and k != STATE}
        if dropped:
            log.warning("mixture: keys not present in every dataset are dropped: %s", dropped)
        self._common = common
        # (T, S_max) zeros for members without state, so every sample has the same keys.
        self._state_template: np.ndarray | None = None
        with_state = [p for p in probes if STATE in p]
        if with_state and len(with_state) < len(probes):
            steps = _to_numpy(with_state[0][STATE]).shape[:-1]
            self._state_template = np.zeros((*steps, self.state_dim), dtype=np.float32)

    @staticmethod
    def _target(requested: int | None, needed: int, what: str) -> int:
        if requested is None:
            return needed
        if requested < needed:
            raise DataError(
                f"pad_{what}_dim={requested} is smaller than the largest {what} in the mixture "
                f"({needed}); set pad_{what}_dim >= {needed} or leave it unset"
            )
        return requested

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def locate(self, index: int) -> tuple[int, int]:
        """Global index -> (dataset index, index inside that dataset)."""
        if not 0 <= index < len(self):
            raise IndexError(f"mixture index {index} out of range 0..{len(self) - 1}")
        d = bisect.bisect_right(self._offsets, index) - 1
        return d, index - int(self._offsets[d])

    def __getitem__(self, index: int) -> dict[str, Any]:
        d, local = self.locate(int(index))
        return self.pad_sample(self.datasets[d][local], d)

    @property
    def image_keys(self) -> list[str]:
        """Cameras the samples carry as images (empty when frames come as cached features)."""
        return list(self.camera_keys)

    def pad_sample(self, sample: Mapping[str, Any], d: int) -> dict[str, Any]:
        """One sample of dataset ``d`` in the mixture's layout (padded vectors, all cameras).

        Also used for held-out windows of member ``d`` (``PaddedView``), so validation batches
        have exactly the training layout.
        """
        out: dict[str, Any] = {k: sample[k] for k in self._common if k in sample}
        out["dataset_index"] = d
        if STATE in sample:
            padded, smask = pad_vector(_to_numpy(sample[STATE]), self.state_dim)
            out[STATE] = _like(sample[STATE], padded)
        else:
            smask = np.zeros(self.state_dim, dtype=bool)
            if self._state_template is not None:  # another member has state: zeros keep collation
                out[STATE] = _like(sample[ACTION], np.zeros_like(self._state_template))
        padded, amask = pad_vector(_to_numpy(sample[ACTION]), self.action_dim)
        out[ACTION] = _like(sample[ACTION], padded)
        out["state_dim_mask"] = _like(sample[ACTION], smask)
        out["action_dim_mask"] = _like(sample[ACTION], amask)
        for k in self.camera_keys:
            shape = self.camera_shapes[k]
            steps = shape[0] if len(shape) == 4 else 1  # (T, C, H, W) or (C, H, W)
            if k in sample:
                out[k] = sample[k]
                pad = np.zeros(steps, dtype=bool)
                if f"{k}_is_pad" in sample:
                    pad = _to_numpy(sample[f"{k}_is_pad"]).astype(bool)
            else:
                out[k] = _like(self._camera_template[k], np.zeros(shape, self.camera_dtypes[k]))
                pad = np.ones(steps, dtype=bool)
            out[f"{k}_is_pad"] = _like(sample[ACTION], pad)
        return out

    def sampler(self, num_samples: int | None = None, *, seed: int | None = None) -> MixtureSampler:
        """A sampler drawing dataset ``d`` with probability ``weights[d]``, then a uniform index."""
        return MixtureSampler(self.lengths, self.weights, num_samples=num_samples, seed=seed)

    @property
    def stats(self) -> dict[str, dict[str, np.ndarray]]:
        """State/action stats pooled over the datasets and padded to the mixture's dims.

        Each dataset must expose ``stats`` (feature -> stat -> array) or a ``reader`` that does.
        """
        per: list[Mapping[str, Mapping[str, Any]]] = []
        counts: list[int] = []
        for i, d in enumerate(self.datasets):
            st = getattr(d, "stats", None)
            if st is None and hasattr(d, "reader"):  # WindowedDataset keeps its DatasetReader
                st = d.reader.stats
            if st is None:
                raise DataError(
                    f"mixture dataset {i} ({type(d).__name__}) exposes no .stats; "
                    "compute them with `vlastack data stats PATH`"
                )
            per.append(st)
            counts.append(self.lengths[i])
        out: dict[str, dict[str, np.ndarray]] = {}
        for key, dim in ((STATE, self.state_dim), (ACTION, self.action_dim)):
            have = [(st[key], n) for st, n in zip(per, counts) if key in st]
            if have:
                out[key] = combine_vector_stats([s for s, _ in have], [n for _, n in have], dim)
        return out


def combine_vector_stats(
    stats: Sequence[Mapping[str, Any]], counts: Sequence[int], dim: int
) -> dict[str, np.ndarray]:
    """Pool per-dataset stats of vectors (possibly of different sizes) into ``dim``-sized stats.

    mean/std are pooled exactly from counts; min/max are the extremes; quantiles are the
    count-weighted mean of the datasets' quantiles (an approximation, as LeRobot's aggregation).
    A dim no dataset has gets mean 0, std 1, range [−1, 1], so padded zeros stay zero.
    """
    n = np.zeros(dim)
    acc: dict[str, np.ndarray] = {s: np.zeros(dim) for s in ("mean", "sq", "q01", "q99")}
    lo, hi = np.full(dim, np.inf), np.full(dim, -np.inf)
    extra: dict[str, np.ndarray] = {s: np.zeros(dim) for s in ("q10", "q50", "q90")}
    has = {s: True for s in ("min", "max", "q01", "q99", "q10", "q50", "q90")}
    for st, c in zip(stats, counts):
        mean = np.asarray(st["mean"], dtype=np.float64).reshape(-1)
        std = np.asarray(st["std"], dtype=np.float64).reshape(-1)
        k = mean.shape[0]
        if k > dim:
            raise DataError(f"cannot pool {k}-dim stats into {dim} dims; raise the padded size")
        n[:k] += c
        acc["mean"][:k] += c * mean
        acc["sq"][:k] += c * (std**2 + mean**2)
        for s in has:
            if s not in st:
                has[s] = False
                continue
            v = np.asarray(st[s], dtype=np.float64).reshape(-1)
            if s == "min":
                lo[:k] = np.minimum(lo[:k], v)
            elif s == "max":
                hi[:k] = np.maximum(hi[:k], v)
            elif s in ("q01", "q99"):
                acc[s][:k] += c * v
            else:
                extra[s][:k] += c * v
    real = n > 0
    safe = np.where(real, n, 1.0)
    mean = acc["mean"] / safe
    var = np.maximum(acc["sq"] / safe - mean**2, 0.0)
    out = {
        "mean": np.where(real, mean, PAD_STATS["mean"]),
        "std": np.where(real, np.sqrt(var), PAD_STATS["std"]),
        "count": np.array([int(sum(counts))]),
    }
    if has["min"]:
        out["min"] = np.where(real, lo, PAD_STATS["min"])
    if has["max"]:
        out["max"] = np.where(real, hi, PAD_STATS["max"])
    for s in ("q01", "q99"):
        if has[s]:
            out[s] = np.where(real, acc[s] / safe, PAD_STATS[s])
    for s in ("q10", "q50", "q90"):
        if has[s]:
            out[s] = np.where(real, extra[s] / safe, 0.0)
    return out


class MixtureSampler(Sampler[int]):
    """Draws ``num_samples`` global indices: a dataset by weight, then a uniform index in it.

    Hand-written rather than ``WeightedRandomSampler`` because that needs a weight per frame and
    ``torch.multinomial`` refuses more than 2^24 categories, which large mixtures exceed.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        weights: Sequence[float] | np.ndarray,
        *,
        num_samples: int | None = None,
        seed: int | None = None,
    ) -> None:
        self.lengths = [int(n) for n in lengths]
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)
        w = torch.as_tensor(np.asarray(weights, dtype=np.float64))
        self.weights = w / w.sum()
        self.num_samples = int(num_samples) if num_samples is not None else sum(self.lengths)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Different draws each epoch while staying reproducible from ``seed``."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator()
        if self.seed is None:
            g.seed()
        else:
            g.manual_seed(self.seed + self.epoch)
        which = torch.multinomial(self.weights, self.num_samples, replacement=True, generator=g)
        u = torch.rand(self.num_samples, generator=g, dtype=torch.float64).numpy()
        lengths = np.asarray(self.lengths)[which.numpy()]
        local = np.minimum((u * lengths).astype(np.int64), lengths - 1)
        yield from (self.offsets[which.numpy()] + local).tolist()


class PaddedView(Dataset):
    """Samples of ``dataset`` laid out as member ``index`` of ``mixture`` (held-out windows).

    The view keeps the mixture's cameras and padded sizes even when the held-out split of some
    other member is empty, so a validation batch always fits the model trained on the mixture.
    """

    def __init__(self, mixture: DatasetMixture, dataset: Any, index: int) -> None:
        self.mixture, self.dataset, self.index = mixture, dataset, int(index)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.mixture.pad_sample(self.dataset[i], self.index)


def _vector_dims(normalizer: Any) -> dict[str, int]:
    """Feature -> real size, read off a ``Normalizer``'s stats (identity features have none)."""
    dims: dict[str, int] = {}
    for key, st in normalizer.raw_stats.items():
        shapes = {np.asarray(a).shape for a in st.values()}
        shape = next(iter(shapes))
        if len(shape) != 1:
            raise DataError(
                f"{normalizer.source}: stats of {key!r} have shape {shape}; a mixture pads only "
                "vector features (state, action). Use mode 'identity' for that feature"
            )
        dims[key] = int(shape[0])
    return dims


class MixtureNormalizer(nn.Module):
    """Each member's own ``Normalizer`` applied row by row (``batch["dataset_index"]``).

    Different robots have different ranges, so every dataset is normalized with its own
    statistics before its vectors meet in one padded tensor. The per-member affine parameters
    are stacked into (D, K_max) buffers (offset 0, scale 1 on padded dims) so one gather
    normalizes a whole batch; padded dims are then set to exactly 0, whatever the dataset wrote
    there, so the model sees the same input for a dim no member has.
    """

    def __init__(self, members: Sequence[Any], names: Sequence[str], dims: Mapping[str, int]):
        super().__init__()
        if not members or len(members) != len(names):
            raise DataError("MixtureNormalizer needs one Normalizer per named member")
        modes = [dict(m.modes) for m in members]
        if any(m != modes[0] for m in modes):
            raise DataError(f"mixture members use different normalization modes: {modes}")
        self.members: Any = nn.ModuleList(members)
        self.names = list(names)
        self.modes: dict[str, str] = modes[0]
        self.member_dims = [_vector_dims(m) for m in members]
        self.padded_dims = {k: int(v) for k, v in dims.items()}
        for key in self.modes:
            if key not in self.padded_dims or self.modes[key] == "identity":
                continue
            K = self.padded_dims[key]
            offset = torch.zeros(len(members), K)
            scale = torch.ones(len(members), K)
            mask = torch.zeros(len(members), K)
            for d, m in enumerate(members):
                k = self.member_dims[d].get(key)
                if k is None:
                    continue
                if k > K:
                    raise DataError(
                        f"{m.source}: {key!r} has {k} dims, more than the mixture's {K}"
                    )
                off, sc = m._params(key)
                offset[d, :k], scale[d, :k], mask[d, :k] = off.reshape(-1), sc.reshape(-1), 1.0
            name = key.replace(".", "__")
            self.register_buffer(f"{name}__offset", offset)
            self.register_buffer(f"{name}__scale", scale)
            self.register_buffer(f"{name}__mask", mask)

    def _rows(self, key: str, index: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(offset, scale, mask) gathered for the rows of ``x`` (B, ..., K), broadcastable."""
        name = key.replace(".", "__")
        out = []
        for part in ("offset", "scale", "mask"):
            t = getattr(self, f"{name}__{part}")[index.to(x.device).long()]  # (B, K)
            if t.shape[-1] != x.shape[-1]:
                raise DataError(
                    f"feature {key!r} has {x.shape[-1]} dims in the batch but the mixture pads "
                    f"it to {t.shape[-1]}; build batches with the training DatasetMixture"
                )
            out.append(t.view(t.shape[0], *([1] * (x.dim() - 2)), t.shape[-1]).to(x.dtype))
        return tuple(out)

    def _index(self, batch: Mapping[str, Any]) -> torch.Tensor:
        idx = batch.get("dataset_index")
        if idx is None:
            raise DataError(
                "a mixture batch needs 'dataset_index' (which member each row came from); "
                "build it with DatasetMixture, or use member(NAME) for one embodiment"
            )
        return torch.as_tensor(idx).reshape(-1)

    def normalize(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(batch)
        index = self._index(batch)
        for key in self.modes:
            x = out.get(key)
            if not isinstance(x, torch.Tensor):
                continue
            if key not in self.padded_dims or self.modes[key] == "identity":
                continue
            offset, scale, mask = self._rows(key, index, x)
            out[key] = (x - offset) / scale * mask
        return out

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        return self.normalize(batch)

    def unnormalize_actions(
        self, x: torch.Tensor, dataset_index: torch.Tensor | None = None, key: str = "action"
    ) -> torch.Tensor:
        """Padded model-space actions (B, ..., A_max) -> each row in its own robot's units
        (padded dims 0). Use ``member(d).unnormalize_actions`` for one robot's own size."""
        if dataset_index is None:
            raise DataError(
                "MixtureNormalizer.unnormalize_actions needs dataset_index (B,); each row is "
                "un-normalized with its own dataset's stats"
            )
        if self.modes.get(key, "identity") == "identity":
            return x
        offset, scale, mask = self._rows(key, torch.as_tensor(dataset_index).reshape(-1), x)
        return (x * scale + offset) * mask

    def member(self, which: int | str) -> MemberNormalizer:
        """The normalizer of one member, reading and writing that robot's own sizes."""
        d = self.names.index(which) if isinstance(which, str) else int(which)
        return MemberNormalizer(self.members[d], self.padded_dims)

    def to_dict(self) -> dict[str, Any]:
        """The first member's dict (what a single-robot reader of normalization.json sees) plus
        ``members``: every member's own dict under its name."""
        first = self.members[0].to_dict()
        first["members"] = [
            {"name": n, **m.to_dict()} for n, m in zip(self.names, self.members, strict=True)
        ]
        return first


class MemberNormalizer(nn.Module):
    """One robot's ``Normalizer`` in front of a model trained on a padded mixture.

    ``normalize`` accepts a feature padded to the mixture's size or at the robot's own size,
    normalizes the robot's dims with its own stats and zeroes the rest (as in training);
    ``unnormalize_actions`` takes the model's padded actions and returns the robot's own dims.
    """

    def __init__(self, inner: Any, padded_dims: Mapping[str, int]) -> None:
        super().__init__()
        self.inner = inner
        self.modes: dict[str, str] = dict(inner.modes)
        self.dims = _vector_dims(inner)
        self.padded_dims = dict(padded_dims)
        self.source = getattr(inner, "source", "normalization")

    @property
    def raw_stats(self) -> dict[str, dict[str, np.ndarray]]:
        return self.inner.raw_stats

    @property
    def stats(self) -> dict[str, dict[str, np.ndarray]]:
        return self.inner.stats

    def normalize_key(self, key: str, x: torch.Tensor) -> torch.Tensor:
        k = self.dims.get(key)
        if k is None or x.shape[-1] < k:
            return self.inner.normalize_key(key, x)  # identity, or the inner error for a misfit
        real = self.inner.normalize_key(key, x[..., :k])
        if x.shape[-1] == k:
            return real
        return torch.cat([real, torch.zeros_like(x[..., k:])], dim=-1)

    def unnormalize_key(self, key: str, x: torch.Tensor) -> torch.Tensor:
        k = self.dims.get(key)
        return self.inner.unnormalize_key(key, x if k is None else x[..., :k])

    def normalize(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(batch)
        for key in self.modes:
            if key in out and isinstance(out[key], torch.Tensor):
                out[key] = self.normalize_key(key, out[key])
        return out

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        return self.normalize(batch)

    def unnormalize_actions(self, x: torch.Tensor, key: str = "action") -> torch.Tensor:
        return self.unnormalize_key(key, x)

    def action_scale(self, key: str = "action") -> np.ndarray:
        """Per-dim divisor from robot units to normalized units (1 for identity), e.g. to put
        open-loop errors of different robots on one scale."""
        if self.modes.get(key, "identity") == "identity":
            return np.ones(self.dims.get(key, 1))
        return self.inner._params(key)[1].detach().cpu().numpy().reshape(-1)

    def to_dict(self) -> dict[str, Any]:
        return self.inner.to_dict()
