"""Windowed training samples over a LeRobot v3 dataset: observation history + action chunk.

Sample i is global frame ``index``; it carries the last ``obs_horizon`` observations (oldest
first) and the next ``action_horizon`` actions starting at the current frame. Windows that cross
an episode boundary repeat the edge frame and set ``*_is_pad`` (LeRobot's delta_timestamps rule,
REFERENCE.md §6). Non-image columns live in memory as numpy; each camera's window is one
contiguous frame range decoded in a single seek + forward pass.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from vlastack.data.reader import DatasetReader
from vlastack.errors import DataError


def split_episodes(
    num_episodes: int, val_fraction: float = 0.1, seed: int = 0
) -> tuple[list[int], list[int]]:
    """Shuffle episode ids with ``seed`` and hold out ``val_fraction`` of them (at least one
    when there are two or more episodes and val_fraction > 0). Returns sorted (train, val)."""
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction={val_fraction}; it must be in [0, 1)")
    ids = np.random.default_rng(seed).permutation(num_episodes)
    n_val = int(round(num_episodes * val_fraction))
    if val_fraction > 0 and num_episodes >= 2:
        n_val = min(max(n_val, 1), num_episodes - 1)
    return sorted(int(i) for i in ids[n_val:]), sorted(int(i) for i in ids[:n_val])


class WindowedDataset(Dataset):
    """A torch Dataset of dicts in the ARCHITECTURE.md sample format."""

    def __init__(
        self,
        reader_or_root: DatasetReader | str | Path,
        *,
        obs_horizon: int = 1,
        action_horizon: int = 16,
        episodes: list[int] | None = None,
        tasks: list[str] | None = None,
        image_keys: list[str] | None = None,
        image_size: tuple[int, int] | None = None,
        action_offset: int = 0,
    ) -> None:
        """``action_offset``: the action window starts that many frames after the observation
        (negative: before it, as LeRobot's Diffusion Policy trains on actions from the first
        observation step on); steps outside the episode are clamped to its edge and flagged in
        ``action_is_pad``."""
        self.reader = (
            reader_or_root
            if isinstance(reader_or_root, DatasetReader)
            else DatasetReader(reader_or_root)
        )
        r = self.reader
        if obs_horizon < 1 or action_horizon < 1:
            raise DataError(
                f"obs_horizon={obs_horizon}, action_horizon={action_horizon}; both must be >= 1"
            )
        self.obs_horizon = obs_horizon
        self.action_horizon = action_horizon
        self.image_size = image_size
        if image_keys is None:
            image_keys = list(r.camera_keys)
        bad = [k for k in image_keys if k not in r.camera_keys]
        if bad:
            raise DataError(f"{r.root}: image_keys {bad} are not cameras; cameras: {r.camera_keys}")
        self.image_keys = image_keys
        ep_ids = list(range(r.num_episodes)) if episodes is None else list(episodes)
        for e in ep_ids:
            r.episode(e)
        if tasks is not None:
            unknown = [t for t in tasks if t not in r.tasks]
            if unknown:
                raise DataError(f"{r.root}: tasks {unknown} not in the dataset; tasks: {r.tasks}")
            wanted = set(tasks)
            ep_ids = [e for e in ep_ids if wanted.intersection(r.episode(e).tasks)]
        self.episodes = ep_ids
        self.indices = (
            np.concatenate(
                [
                    np.arange(r.episode(e).dataset_from_index, r.episode(e).dataset_to_index)
                    for e in ep_ids
                ]
            )
            if ep_ids
            else np.zeros(0, dtype=np.int64)
        )
        if tasks is not None:
            task_ids = [r.tasks.index(t) for t in tasks]
            self.indices = self.indices[np.isin(r.column("task_index")[self.indices], task_ids)]
        # In-memory columns (N, ...) and per-frame episode bounds for O(1) window arithmetic.
        self._obs_vectors = {
            k: r.column(k).astype(np.float32, copy=False)
            for k, f in r.features.items()
            if k.startswith("observation.") and not f.is_camera and f.dtype != "string"
        }
        self._action = (
            r.column("action").astype(np.float32, copy=False) if "action" in r.features else None
        )
        ep_from = np.array([e.dataset_from_index for e in r.episodes], dtype=np.int64)
        ep_to = np.array([e.dataset_to_index for e in r.episodes], dtype=np.int64)
        self._from = ep_from[r.frame_episode] if r.num_frames else ep_from
        self._to = ep_to[r.frame_episode] if r.num_frames else ep_to
        self._obs_offsets = np.arange(-(obs_horizon - 1), 1)
        self._act_offsets = np.arange(action_offset, action_offset + action_horizon)

    def __len__(self) -> int:
        return len(self.indices)

    def _camera_window(self, key: str, ep: int, lo: int, obs_idx: np.ndarray) -> np.ndarray:
        """uint8 frames (T, H, W, C) of one camera at ``obs_idx``: the distinct frames are decoded
        once (one contiguous range, a single seek + forward pass), then the repeats expanded."""
        first, last = int(obs_idx[0]), int(obs_idx[-1])
        frames = self.reader.decode_frames(key, ep, np.arange(first - lo, last - lo + 1))
        return frames[obs_idx - first]

    def _to_float(self, frames: np.ndarray, out: np.ndarray | None = None) -> torch.Tensor:
        """uint8 (T, H, W, C) -> float32 (T, C, H, W) in [0, 1], resized to ``image_size``.

        numpy, not torch: one single-threaded pass (uint8 * float32(1/255), the same bits as
        torch's ``.to(float32).mul_(1/255)``) that reads the channel-last frames and writes the
        channel-first result, into ``out`` when given (a slot of the batch). torch would split
        each small op over its OpenMP pool, whose spinning threads cost several times the work
        itself on a busy machine.
        """
        chw = frames.transpose(0, 3, 1, 2)
        resize = self.image_size is not None and tuple(chw.shape[-2:]) != tuple(self.image_size)
        if out is None or resize:
            dst = np.empty(chw.shape, np.float32)
        else:
            dst = out
        np.multiply(chw, _INV255, out=dst, dtype=np.float32)
        imgs = torch.from_numpy(dst)
        if resize:
            imgs = torch.nn.functional.interpolate(
                imgs, size=self.image_size, mode="bilinear", align_corners=False, antialias=True
            ).clamp_(0.0, 1.0)
            if out is not None:
                torch.from_numpy(out).copy_(imgs)
        return imgs

    def __getitem__(self, i: int) -> dict[str, Any]:
        r = self.reader
        g = int(self.indices[i])
        lo, hi = int(self._from[g]), int(self._to[g])
        obs_raw = g + self._obs_offsets
        obs_idx = np.clip(obs_raw, lo, hi - 1)
        out: dict[str, Any] = {}
        ep = int(r.frame_episode[g])
        for k in self.image_keys:
            out[k] = self._to_float(self._camera_window(k, ep, lo, obs_idx))
        obs_pad = torch.from_numpy(obs_raw < lo)
        for k, col in self._obs_vectors.items():
            v = col[obs_idx]
            out[k] = torch.from_numpy(v if v.ndim > 1 else v[:, None])  # (T, S)
            out[f"{k}_is_pad"] = obs_pad
        if self._action is not None:
            act_raw = g + self._act_offsets
            out["action"] = torch.from_numpy(self._action[np.clip(act_raw, lo, hi - 1)])  # (H, A)
            out["action_is_pad"] = torch.from_numpy((act_raw < lo) | (act_raw >= hi))
        out["task"] = r.task_of(g)
        out["episode_index"] = ep
        out["index"] = g
        return out

    def __getitems__(self, indices: list[int]) -> PrebatchedSamples:
        """The samples at ``indices``, built straight into one batch (what DataLoader calls with
        a batch size): each camera window is converted into its slot of a (B, T, C, H, W) array
        (shared memory in a worker, so the batch crosses to the trainer without a copy), and the
        vector columns are gathered for the whole batch at once. ``collate`` returns that batch
        as is; any other collate function sees the usual list of per-sample dicts (views into
        the batch). The batch equals ``collate([self[i] for i in indices])`` exactly."""
        r = self.reader
        g = self.indices[np.asarray(indices, dtype=np.int64).reshape(-1)]
        n = len(g)
        if n == 0:
            raise DataError("__getitems__ got no indices; ask for at least one sample")
        lo, hi = self._from[g], self._to[g]
        obs_raw = g[:, None] + self._obs_offsets[None, :]
        obs_idx = np.clip(obs_raw, lo[:, None], hi[:, None] - 1)
        ep = r.frame_episode[g]
        batch: dict[str, Any] = {}
        for k in self.image_keys:
            dst: np.ndarray | None = None
            for b in range(n):
                frames = self._camera_window(k, int(ep[b]), int(lo[b]), obs_idx[b])
                if dst is None:
                    t, h, w, c = frames.shape
                    if self.image_size is not None:
                        h, w = self.image_size
                    dst = _batch_array((n, t, c, h, w))
                self._to_float(frames, out=dst[b])
            assert dst is not None
            batch[k] = torch.from_numpy(dst)
        obs_pad = obs_raw < lo[:, None]
        for k, col in self._obs_vectors.items():
            v = col[obs_idx]
            batch[k] = torch.from_numpy(v if v.ndim > 2 else v[..., None])  # (B, T, S)
            batch[f"{k}_is_pad"] = torch.from_numpy(obs_pad.copy())
        if self._action is not None:
            act_raw = g[:, None] + self._act_offsets[None, :]
            act_idx = np.clip(act_raw, lo[:, None], hi[:, None] - 1)
            batch["action"] = torch.from_numpy(self._action[act_idx])  # (B, H, A)
            batch["action_is_pad"] = torch.from_numpy(
                (act_raw < lo[:, None]) | (act_raw >= hi[:, None])
            )
        batch["task"] = [r.task_of(int(x)) for x in g]
        batch["episode_index"] = torch.from_numpy(ep.astype(np.int64))
        batch["index"] = torch.from_numpy(g.astype(np.int64))
        return PrebatchedSamples(batch, n)


_INV255 = np.float32(1.0 / 255.0)


def _batch_array(shape: tuple[int, ...]) -> np.ndarray:
    """A float32 array for a batch: in shared memory inside a DataLoader worker (so sending the
    batch to the main process passes a handle, not the data), ordinary memory elsewhere."""
    if get_worker_info() is None:
        return np.empty(shape, np.float32)
    numel = int(np.prod(shape))
    t = torch.empty(0, dtype=torch.float32)
    storage = t._typed_storage()._new_shared(numel, device=t.device)
    return t.new(storage).view(shape).numpy()


class PrebatchedSamples(list):
    """What ``WindowedDataset.__getitems__`` returns: the per-sample dicts (views into one
    batch) for any collate function, and ``batch``, the whole batch, for ``collate``."""

    def __init__(self, batch: dict[str, Any], n: int) -> None:
        super().__init__(
            {
                k: (v[b] if isinstance(v, torch.Tensor) and k not in _INT_KEYS else _item(v, b))
                for k, v in batch.items()
            }
            for b in range(n)
        )
        self.batch = batch


_INT_KEYS = ("episode_index", "index")


def _item(v: Any, b: int) -> Any:
    return int(v[b]) if isinstance(v, torch.Tensor) else v[b]


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors (and ints) along a new leading B axis; strings become ``list[str]``."""
    if isinstance(samples, PrebatchedSamples):
        return samples.batch
    if not samples:
        raise DataError("collate got an empty list of samples")
    out: dict[str, Any] = {}
    for k, v in samples[0].items():
        vals = [s[k] for s in samples]
        if isinstance(v, torch.Tensor):
            out_buf = None
            if get_worker_info() is not None:
                # In a worker, stack straight into shared memory so the batch is not copied again
                # on its way to the main process (what torch's default_collate does too).
                numel = sum(x.numel() for x in vals)
                storage = v._typed_storage()._new_shared(numel, device=v.device)
                out_buf = v.new(storage).resize_(len(vals), *v.shape)
            out[k] = torch.stack(vals, out=out_buf)
        elif isinstance(v, str):
            out[k] = vals
        elif isinstance(v, (int, np.integer)):
            out[k] = torch.tensor(vals, dtype=torch.int64)
        elif isinstance(v, (float, np.floating)):
            out[k] = torch.tensor(vals, dtype=torch.float32)
        else:
            out[k] = vals
    return out


def worker_init(_: int, parent_pid: int | None = None) -> None:
    # Each worker decodes on one thread: workers already use the cores, and oversubscribed
    # decoder threads slow everyone down.
    torch.set_num_threads(1)
    if parent_pid is not None:  # a forkserver worker outlives a killed trainer otherwise
        from vlastack.lifeline import watch_parent

        watch_parent(parent_pid)


def watched_worker_init() -> Any:
    """``worker_init`` for a DataLoader started from this process: its workers also die when
    this process does (kill -9 included; ``vlastack.lifeline``)."""
    import functools
    import os

    return functools.partial(worker_init, parent_pid=os.getpid())


def make_dataloader(
    dataset: Dataset,
    *,
    batch_size: int = 32,
    shuffle: bool = True,
    num_workers: int = 0,
    seed: int = 0,
    drop_last: bool = False,
    persistent_workers: bool | None = None,
    prefetch_factor: int | None = None,
    multiprocessing_context: str | None = "forkserver",
) -> DataLoader:
    """A DataLoader with ``collate``, a seeded shuffle and per-worker decoders.

    Workers start by ``forkserver`` (not ``fork``): a worker forked after the parent ran a
    multi-threaded torch op inherits a broken OpenMP pool and hangs on its first tensor op.
    """
    gen = torch.Generator()
    gen.manual_seed(seed)
    kwargs: dict[str, Any] = {}
    if num_workers > 0:
        kwargs["persistent_workers"] = True if persistent_workers is None else persistent_workers
        kwargs["prefetch_factor"] = prefetch_factor or 4
        kwargs["worker_init_fn"] = watched_worker_init()
        kwargs["multiprocessing_context"] = multiprocessing_context
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        collate_fn=collate,
        generator=gen,
        drop_last=drop_last,
        **kwargs,
    )
