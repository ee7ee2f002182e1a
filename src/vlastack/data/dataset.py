"""Windowed training samples over a LeRobot v3 dataset: observation history + action chunk.

Sample i is global frame ``index``; it carries the last ``obs_horizon`` observations (oldest
first) and the next ``action_horizon`` actions starting at the current frame. Windows that cross
an episode boundary repeat the edge frame and set ``*_is_pad`` (LeRobot's delta_timestamps rule,
REFERENCE.md §6). Non-image columns live in memory as numpy; each camera's window is one
contiguous frame range decoded in a single seek + forward pass.
"""

from __future__ import annotations

import functools
import sys
import threading
from collections.abc import Callable, Iterator
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
        future_offset: int = 0,
    ) -> None:
        """``action_offset``: the action window starts that many frames after the observation
        (negative: before it, as LeRobot's Diffusion Policy trains on actions from the first
        observation step on); steps outside the episode are clamped to its edge and flagged in
        ``action_is_pad``. ``future_offset`` k > 0 adds each camera's frame t+k as
        ``future.images.<cam>`` (C, H, W) (the target of a predicted subgoal / world model,
        models/foresight.py); past the episode end it is the last frame, with ``future_is_pad``."""
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
        if future_offset < 0:
            raise DataError(f"future_offset={future_offset}; it must be >= 0 (frames ahead)")
        self.obs_horizon = obs_horizon
        self.action_horizon = action_horizon
        self.future_offset = future_offset
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
        self._buffers = BatchBuffers()

    def __len__(self) -> int:
        return len(self.indices)

    def _camera_window(
        self,
        key: str,
        ep: int,
        lo: int,
        obs_idx: np.ndarray,
        out: np.ndarray | Callable[[tuple[int, ...]], np.ndarray] | None = None,
    ) -> torch.Tensor:
        """float32 (T, C, H, W) in [0, 1] of one camera at frames ``obs_idx``, resized to
        ``image_size``, written into ``out`` when given (a slot of the batch, or a function
        that returns that slot given the window's shape).

        The distinct frames are decoded once (one contiguous range, a single seek + forward
        pass) as channel-first uint8, then each time step is converted with numpy into its
        slot: uint8 * float32(1/255), the same bits as torch's ``.to(float32).mul_(1/255)``, in
        one single-threaded pass. torch would split each small op over its OpenMP pool, whose
        spinning threads cost several times the work itself on a busy machine.
        """
        first = int(obs_idx[0])
        frames = self._window_frames(key, ep, lo, obs_idx)
        shape = (len(obs_idx), *frames.shape[1:])
        resize = self.image_size is not None and tuple(shape[-2:]) != tuple(self.image_size)
        if callable(out):
            out = out((*shape[:2], *(self.image_size if resize else shape[2:])))  # type: ignore[misc]
        dst = out if out is not None and not resize else np.empty(shape, np.float32)
        for t, src in enumerate(obs_idx - first):
            np.multiply(frames[src], _INV255, out=dst[t], dtype=np.float32)
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
            out[k] = self._camera_window(k, ep, lo, obs_idx)
            if self.future_offset:
                fut = np.array([min(g + self.future_offset, hi - 1)])
                out[_future_key(k)] = self._camera_window(k, ep, lo, fut)[0]
        if self.future_offset:
            out["future_is_pad"] = torch.tensor(g + self.future_offset >= hi)
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

    def _first_slot(self, n: int, held: list[torch.Tensor], shape: tuple[int, ...]) -> np.ndarray:
        held.append(self._buffers.get((n, *shape)))
        return held[0].numpy()[0]

    def _window_frames(self, key: str, ep: int, lo: int, obs_idx: np.ndarray) -> np.ndarray:
        """uint8 (F, C, H, W): the frames obs_idx[0]..obs_idx[-1] of one camera, one contiguous
        range decoded in a single seek + forward pass."""
        first, last = int(obs_idx[0]), int(obs_idx[-1])
        return self.reader.decode_frames(
            key, ep, np.arange(first - lo, last - lo + 1), channels_first=True
        )

    def _image_batch(
        self, key: str, ep: np.ndarray, lo: np.ndarray, idx: np.ndarray
    ) -> tuple[torch.Tensor, bool]:
        """One camera's (B, T, C, H, W) batch of windows ``idx`` (B, T): float32 in [0, 1], or,
        in a DataLoader worker when no resize is needed, the uint8 frames (True second), which
        ``collate`` ships for the trainer to convert (``ShippedBatch``)."""
        n = len(idx)
        if get_worker_info() is not None:
            frames = self._window_frames(key, int(ep[0]), int(lo[0]), idx[0])
            if self.image_size is None or tuple(frames.shape[-2:]) == tuple(self.image_size):
                batch = self._buffers.get((n, idx.shape[1], *frames.shape[1:]), np.uint8)
                dst = batch.numpy()
                for b in range(n):
                    if b:
                        frames = self._window_frames(key, int(ep[b]), int(lo[b]), idx[b])
                    for t, src in enumerate(idx[b] - idx[b, 0]):
                        np.copyto(dst[b, t], frames[src])
                return batch, True
        # the first window's shape sizes the batch array
        held: list[torch.Tensor] = []
        self._camera_window(
            key, int(ep[0]), int(lo[0]), idx[0], out=functools.partial(self._first_slot, n, held)
        )
        batch = held.pop()
        dst = batch.numpy()
        for b in range(1, n):
            self._camera_window(key, int(ep[b]), int(lo[b]), idx[b], out=dst[b])
        return batch, False

    def __getitems__(self, indices: list[int]) -> PrebatchedSamples:
        """The samples at ``indices``, built straight into one batch (what DataLoader calls with
        a batch size): each camera window is converted into its slot of a (B, T, C, H, W) array
        (in-process: recycled arrays, ``BatchBuffers``), and the vector columns are gathered for
        the whole batch at once. In a DataLoader worker the camera batches stay uint8 (in fresh
        shared memory, a quarter of the float32 size) and are converted to float32 in the
        process that receives the batch, into its recycled arrays (``ShippedBatch``): the same
        bits. ``collate`` returns that batch as is; any other collate function sees the usual
        list of per-sample float32 dicts. The batch equals ``collate([self[i] for i in
        indices])`` exactly."""
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
        uint8_keys: list[str] = []
        for k in self.image_keys:
            dst, u8 = self._image_batch(k, ep, lo, obs_idx)
            batch[k] = dst
            if u8:
                uint8_keys.append(k)
        if self.future_offset:
            fut = np.minimum(g + self.future_offset, hi - 1)[:, None]
            for k in self.image_keys:
                dst, u8 = self._image_batch(k, ep, lo, fut)
                batch[_future_key(k)] = dst[:, 0]
                if u8:
                    uint8_keys.append(_future_key(k))
            batch["future_is_pad"] = torch.from_numpy(g + self.future_offset >= hi)
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
        return PrebatchedSamples(batch, n, uint8_keys)


_INV255 = np.float32(1.0 / 255.0)


def _future_key(camera_key: str) -> str:
    """``observation.images.top`` -> ``future.images.top`` (frame t+k of that camera)."""
    return "future." + camera_key.removeprefix("observation.")


class BatchBuffers:
    """Arrays for the image batches ``__getitems__`` builds (float32, or uint8 in a worker).

    Inside a DataLoader worker each batch gets fresh shared memory, so sending it to the main
    process passes a handle, not the data (a worker cannot tell when the trainer has dropped a
    batch, so it cannot recycle one). In the process that trains, a batch array whose tensors
    have all been dropped is handed out again: a 2x224² batch of 32 is 38 MB per camera, above
    glibc's mmap threshold, so a fresh one would be mapped and faulted in page by page on every
    batch (~25% of the sampler's CPU time at 224², measured). An array is free when nothing but
    this pool refers to it: ``torch.from_numpy`` holds a reference to the array for as long as
    any tensor (or view) on its memory lives. Thread-safe (a DataLoader's pin-memory thread
    receives batches beside the main thread).
    """

    def __init__(self, keep: int = 4) -> None:
        self.keep = keep
        self._pool: list[np.ndarray] = []
        self._lock = threading.Lock()

    def get(self, shape: tuple[int, ...], dtype: Any = np.float32) -> torch.Tensor:
        """A (shape, dtype) tensor to fill (write through ``.numpy()``): in a worker, on its own
        shared-memory storage, which pickles as a handle (a tensor made by ``torch.from_numpy``
        on that memory would not count as shared and would be copied into new shared memory on
        its way out); in-process, on a free pooled array."""
        dtype = np.dtype(dtype)
        if get_worker_info() is not None:
            t = torch.empty(0, dtype=_TORCH_DTYPES[dtype])
            storage = t._typed_storage()._new_shared(int(np.prod(shape)), device=t.device)
            return t.new(storage).view(shape)  # allocated in shared memory, not copied there
        with self._lock:
            for arr in self._pool:
                # free: referred to only by the pool, the loop variable and getrefcount's argument
                if arr.shape == shape and arr.dtype == dtype and sys.getrefcount(arr) == 3:
                    return torch.from_numpy(arr)
            arr = np.empty(shape, dtype)
            if len(self._pool) >= self.keep:
                self._pool.pop(0)
            self._pool.append(arr)
            return torch.from_numpy(arr)

    def __getstate__(self) -> dict[str, Any]:
        return {"keep": self.keep}  # a worker starts with an empty pool

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]


_TORCH_DTYPES = {np.dtype(np.float32): torch.float32, np.dtype(np.uint8): torch.uint8}


def _to_float(u8: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 [0, 1] into ``out``: uint8 * float32(1/255), the bits of the in-process
    path (and of torch's ``.to(float32).mul_(1/255)``), numpy on one thread."""
    np.multiply(u8.numpy(), _INV255, out=out.numpy(), dtype=np.float32)
    return out


# Where batches from DataLoader workers are converted to float32: recycled arrays of the
# receiving process (the current batch and the next one of a few cameras stay alive at once).
_RECEIVED = BatchBuffers(keep=8)


def _received_batch(batch: dict[str, Any], uint8_keys: tuple[str, ...]) -> dict[str, Any]:
    """A ``ShippedBatch`` arriving in the process that trains: its uint8 cameras become float32
    in [0, 1], in that process's recycled arrays (``_RECEIVED``)."""
    for k in uint8_keys:
        batch[k] = _to_float(batch[k], _RECEIVED.get(tuple(batch[k].shape)))
    return batch


class ShippedBatch(dict):
    """A batch ``collate`` made in a DataLoader worker with its camera images still uint8
    (``uint8_keys``). Unpickled on the other side of the worker's queue (in the main thread or
    the pin-memory thread), it becomes a plain dict with those images float32 in [0, 1]
    (``_received_batch``): the training loop sees the usual batch, and the worker sends a
    quarter of the shared memory. Only a worker makes one; it is never used where it was made."""

    def __init__(self, batch: dict[str, Any], uint8_keys: tuple[str, ...]) -> None:
        super().__init__(batch)
        self.uint8_keys = uint8_keys

    def __reduce__(self) -> tuple[Any, ...]:
        return (_received_batch, (dict(self), self.uint8_keys))


class PrebatchedSamples(list):
    """What ``WindowedDataset.__getitems__`` returns: the per-sample dicts (views into one
    batch) for any collate function, and ``batch``, the whole batch, for ``collate``.

    From a DataLoader worker the camera batches named in ``uint8_keys`` are still uint8; the
    per-sample dicts (float32, as always) are then built only when something reads this list
    (a collate function other than ``collate``), so ``collate`` pays nothing for them."""

    def __init__(
        self, batch: dict[str, Any], n: int, uint8_keys: list[str] | tuple[str, ...] = ()
    ) -> None:
        super().__init__()
        self.batch = batch
        self.uint8_keys = tuple(uint8_keys)
        self._n = n
        if not self.uint8_keys:
            self._fill()

    def _fill(self) -> None:
        if list.__len__(self) == self._n:
            return
        batch = dict(self.batch)
        for k in self.uint8_keys:
            batch[k] = _to_float(batch[k], torch.empty(batch[k].shape))
        list.extend(
            self,
            (
                {
                    k: (v[b] if isinstance(v, torch.Tensor) and k not in _INT_KEYS else _item(v, b))
                    for k, v in batch.items()
                }
                for b in range(self._n)
            ),
        )

    def __len__(self) -> int:
        self._fill()
        return list.__len__(self)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self._fill()
        return list.__iter__(self)

    def __reversed__(self) -> Iterator[dict[str, Any]]:
        self._fill()
        return list.__reversed__(self)

    def __getitem__(self, i: Any) -> Any:
        self._fill()
        return list.__getitem__(self, i)


_INT_KEYS = ("episode_index", "index")


def _item(v: Any, b: int) -> Any:
    return int(v[b]) if isinstance(v, torch.Tensor) else v[b]


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors (and ints) along a new leading B axis; strings become ``list[str]``."""
    if isinstance(samples, PrebatchedSamples):
        if samples.uint8_keys:
            return ShippedBatch(samples.batch, samples.uint8_keys)
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
