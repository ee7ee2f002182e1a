"""Batch plumbing for the training loop: the per-rank batch size, the endless resumable stream
of training batches (``EpochBatches`` order, one DataLoader for every epoch, ``ReadAhead`` one
batch ahead on a thread), and the first batch the loop probes the model with."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler

from vlastack.batch import as_batch
from vlastack.errors import ConfigError, DataError
from vlastack.training import distributed
from vlastack.training.config import TrainConfig
from vlastack.training.parts import Batch, TrainingParts


def per_rank_batch(cfg: TrainConfig, dist: distributed.DistInfo) -> int:
    if cfg.batch_size % dist.world_size:
        raise ConfigError(
            f"batch_size={cfg.batch_size} is not divisible by the {dist.world_size} processes; "
            "batch_size is the global batch per micro-step"
        )
    return cfg.batch_size // dist.world_size


def first_batch(parts: TrainingParts, batch_size: int) -> Batch:
    n = min(batch_size, len(parts.train_dataset))  # type: ignore[arg-type]
    collate = parts.collate_fn or torch.utils.data.default_collate
    return as_batch(collate([parts.train_dataset[i] for i in range(n)]))


def batch_stream(
    parts: TrainingParts,
    cfg: TrainConfig,
    dist: distributed.DistInfo,
    micro_bs: int,
    epoch: int,
    batch_in_epoch: int,
    num_workers: int = 0,
) -> Generator[tuple[int, int, Batch], None, None]:
    """Yield (epoch, batches consumed in this epoch, batch) forever, resumable mid-epoch.

    The order is a pure function of (seed, epoch): ``DistributedSampler`` shards one shuffled
    permutation across ranks, and the first ``batch_in_epoch`` batches are skipped on resume.
    One DataLoader serves every epoch (``EpochBatches`` runs on), so data workers start once
    instead of once per epoch (a small dataset has only a few batches per epoch).
    """
    from vlastack.data.dataset import watched_worker_init

    num_samples = len(parts.train_dataset)  # type: ignore[arg-type]
    batches = EpochBatches(
        num_samples, dist, cfg.seed, micro_bs, epoch, batch_in_epoch, order=parts.epoch_indices
    )
    if batches.per_epoch == 0:
        raise DataError(
            f"the training split has {num_samples} samples, fewer than one batch of "
            f"{cfg.batch_size}; lower --batch_size or add episodes"
        )
    extra: dict[str, Any] = {}
    if num_workers > 0:
        # forkserver, not fork: a worker forked after a multi-threaded torch op inherits a broken
        # OpenMP pool; each worker decodes on one thread (data/dataset.py make_dataloader).
        extra = dict(
            multiprocessing_context="forkserver",
            worker_init_fn=watched_worker_init(),
            prefetch_factor=4,
        )
    loader = DataLoader(
        parts.train_dataset,
        batch_sampler=batches,
        num_workers=num_workers,
        collate_fn=parts.collate_fn,
        # Worker seeds come from this generator, not the global RNG, so resume is exact.
        generator=torch.Generator().manual_seed(cfg.seed * 100003 + epoch),
        pin_memory=dist.device.type == "cuda",
        **extra,
    )
    # Without workers the batches are read on a thread one step ahead, so decoding overlaps the
    # step (the decoders and torch ops release the GIL). Same batches in the same order.
    it = iter(loader) if num_workers > 0 or not decodes_frames(parts) else ReadAhead(iter(loader))
    try:
        while True:
            batch = as_batch(next(it))  # keys checked: one spelling each (vlastack.batch)
            batch_in_epoch += 1
            yield epoch, batch_in_epoch, batch
            if batch_in_epoch == batches.per_epoch:
                epoch, batch_in_epoch = epoch + 1, 0
    finally:
        if isinstance(it, ReadAhead):
            it.close()
        del it


class ReadAhead:
    """An iterator that computes its source's next item on a background thread while the caller
    works on the current one (one item ahead). Items come in the source's order; an exception
    raised by the source is raised by ``next`` for the item that raised it."""

    def __init__(self, source: Iterator[Any]) -> None:
        self._source = source
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="vlastack-read")
        self._ahead: concurrent.futures.Future | None = None

    def _read(self) -> Any:
        return next(self._source)

    def __iter__(self) -> ReadAhead:
        return self

    def __next__(self) -> Any:
        ahead = self._ahead or self._pool.submit(self._read)
        item = ahead.result()  # StopIteration and errors re-raise here
        self._ahead = self._pool.submit(self._read)
        return item

    def close(self) -> None:
        if self._ahead is not None:
            self._ahead.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)


class EpochBatches(torch.utils.data.Sampler):
    """Index lists of ``micro_bs`` for epoch after epoch, starting at (epoch, batch_in_epoch).

    Each epoch is ``DistributedSampler(shuffle=True, seed, drop_last=True)`` at that epoch, cut
    into whole batches (the ragged tail is dropped), exactly as a fresh DataLoader per epoch.
    With ``order`` (a weighted mixture) epoch e is ``order(e)``, a pure function of the seed and
    e, dealt round-robin to the ranks; resume stays exact either way.
    """

    def __init__(
        self,
        num_samples: int,
        dist: distributed.DistInfo,
        seed: int,
        micro_bs: int,
        epoch: int = 0,
        batch_in_epoch: int = 0,
        order: Callable[[int], Sequence[int]] | None = None,
    ) -> None:
        self.num_samples, self.dist, self.seed, self.micro_bs = num_samples, dist, seed, micro_bs
        self.epoch, self.batch_in_epoch = epoch, batch_in_epoch
        self.order = order
        self.per_epoch = len(self._epoch_indices(0)) // micro_bs

    def _epoch_indices(self, epoch: int) -> list[int]:
        if self.order is not None:
            idx = [int(i) for i in self.order(epoch)]
            world = self.dist.world_size
            return idx[self.dist.rank : len(idx) - len(idx) % world : world]
        sampler: DistributedSampler = DistributedSampler(
            range(self.num_samples),  # type: ignore[arg-type]
            num_replicas=self.dist.world_size,
            rank=self.dist.rank,
            shuffle=True,
            seed=self.seed,
            drop_last=True,
        )
        sampler.set_epoch(epoch)
        return list(sampler)

    def __iter__(self) -> Iterator[list[int]]:
        epoch, skip = self.epoch, self.batch_in_epoch
        while True:
            idx = self._epoch_indices(epoch)
            for b in range(skip, self.per_epoch):
                yield idx[b * self.micro_bs : (b + 1) * self.micro_bs]
            epoch, skip = epoch + 1, 0


def decodes_frames(parts: TrainingParts) -> bool:
    """Samples decode camera frames (not in memory: no frozen-feature cache, cameras present)."""
    return bool(getattr(parts.train_dataset, "image_keys", None))


def episode_indices(batch: Batch) -> list[int]:
    e = batch.get("episode_index")
    return [int(x) for x in torch.as_tensor(e).reshape(-1).tolist()] if e is not None else []
