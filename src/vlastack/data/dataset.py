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

    def __len__(self) -> int:
        return len(self.indices)

    def _to_tensor(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 (T, H, W, C) -> float (T, C, H, W) in [0, 1] at ``image_size``."""
        # contiguous uint8 (T, C, H, W) first, so the float conversion runs over contiguous
        # memory (about 3x faster than converting the permuted view)
        imgs = torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2)))
        imgs = imgs.to(torch.float32).mul_(1.0 / 255.0)
        if self.image_size is not None and tuple(imgs.shape[-2:]) != tuple(self.image_size):
            imgs = torch.nn.functional.interpolate(
                imgs, size=self.image_size, mode="bilinear", align_corners=False, antialias=True
            ).clamp_(0.0, 1.0)
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
            # Decode the distinct frames once (a contiguous range), then expand the repeats.
            first, last = int(obs_idx[0]), int(obs_idx[-1])
            frames = r.decode_frames(k, ep, np.arange(first - lo, last - lo + 1))
            out[k] = self._to_tensor(frames[obs_idx - first])
            if self.future_offset:
                fut = min(g + self.future_offset, hi - 1)
                frame = r.decode_frames(k, ep, np.array([fut - lo]))
                out["future." + k.removeprefix("observation.")] = self._to_tensor(frame)[0]
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


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors (and ints) along a new leading B axis; strings become ``list[str]``."""
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
