"""The loop's CPU plumbing: one DataLoader across epochs, automatic workers and threads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DistributedSampler

from vlastack.training.batches import EpochBatches
from vlastack.training.config import TrainConfig
from vlastack.training.distributed import DistInfo
from vlastack.training.parts import TrainingParts
from vlastack.training.threads import pick_threads, pick_workers


def per_epoch_reference(n: int, seed: int, bs: int, epoch: int, rank: int, world: int) -> list:
    s = DistributedSampler(
        range(n), num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True
    )  # type: ignore[arg-type]
    s.set_epoch(epoch)
    idx = list(s)
    return [idx[b * bs : (b + 1) * bs] for b in range(len(idx) // bs)]


def test_epoch_batches_match_a_fresh_sampler_per_epoch_and_resume_mid_epoch() -> None:
    for world in (1, 2):
        for rank in range(world):
            dist = DistInfo(rank=rank, world_size=world)
            want = [b for e in range(3) for b in per_epoch_reference(23, 7, 4, e, rank, world)]
            it = iter(EpochBatches(23, dist, seed=7, micro_bs=4))
            got = [next(it) for _ in range(len(want))]
            assert got == want
            per = EpochBatches(23, dist, 7, 4).per_epoch
            assert per == len(per_epoch_reference(23, 7, 4, 0, rank, world))
            resumed = iter(EpochBatches(23, dist, seed=7, micro_bs=4, epoch=1, batch_in_epoch=1))
            assert next(resumed) == want[per + 1]


class _Frames(torch.utils.data.Dataset):
    image_keys = ["observation.images.front"]

    def __len__(self) -> int:
        return 10


def test_auto_workers_only_for_long_runs_that_decode_video() -> None:
    parts = TrainingParts(model=torch.nn.Linear(1, 1), train_dataset=_Frames())
    assert pick_workers(TrainConfig(num_workers=3), parts) == 3
    assert pick_workers(TrainConfig(steps=20), parts) == 0  # too short to repay worker start
    assert pick_workers(TrainConfig(steps=1000), parts) >= 1
    cached = TrainingParts(
        model=torch.nn.Linear(1, 1), train_dataset=torch.utils.data.TensorDataset(torch.zeros(3))
    )
    assert pick_workers(TrainConfig(steps=1000), cached) == 0


def test_auto_workers_cap_is_higher_on_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import vlastack.training.threads as threads

    monkeypatch.setattr(threads, "cores_per_rank", lambda: 16)
    parts = TrainingParts(model=torch.nn.Linear(1, 1), train_dataset=_Frames())
    assert pick_workers(TrainConfig(steps=1000), parts, "cpu") == 4
    assert pick_workers(TrainConfig(steps=1000), parts, "cuda") == 8
    monkeypatch.setattr(threads, "cores_per_rank", lambda: 2)
    assert pick_workers(TrainConfig(steps=1000), parts, "cuda") == 1


def test_auto_threads_leave_cores_to_workers_and_other_processes() -> None:
    assert pick_threads(TrainConfig(num_threads=3), other_load=50.0, num_workers=2) == 3
    cores = len(__import__("os").sched_getaffinity(0))
    assert pick_threads(TrainConfig(), other_load=0.0, num_workers=0) == cores
    assert pick_threads(TrainConfig(), other_load=0.0, num_workers=1) == max(1, cores - 1)
    assert pick_threads(TrainConfig(), other_load=100.0, num_workers=0) == 1


def test_read_ahead_keeps_order_and_reraises_the_sources_error() -> None:
    from vlastack.training.batches import ReadAhead

    def source():
        yield from range(5)
        raise ValueError("bad episode 7")

    it = ReadAhead(source())
    assert [next(it) for _ in range(5)] == list(range(5))
    with pytest.raises(ValueError, match="bad episode 7"):
        next(it)
    it.close()
    # closing mid-stream stops the reader thread
    it = ReadAhead(iter(range(100)))
    assert next(it) == 0
    it.close()
    assert it._pool._shutdown


def test_video_decoder_keeps_one_container_table_per_thread(tmp_path) -> None:
    import threading

    from vlastack.data.video import VideoDecoder

    dec = VideoDecoder()
    dec._open["main"] = object()
    seen: list[dict] = []
    t = threading.Thread(target=lambda: seen.append(dict(dec._open)))
    t.start()
    t.join()
    assert seen == [{}] and "main" in dec._open


_HEAP_SCRIPT = r"""
import sys, torch
from vlastack.training.host_memory import retain_freed_memory
if sys.argv[1] == "retain":
    assert retain_freed_memory() and retain_freed_memory()  # idempotent
x = torch.ones(12 << 20)  # 48 MiB: above glibc's largest automatic mmap threshold (32 MiB)
heap = [ln.split()[0] for ln in open("/proc/self/maps") if ln.rstrip().endswith("[heap]")]
lo, hi = (int(v, 16) for v in heap[0].split("-"))
print(lo <= x.data_ptr() < hi)
"""


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or not Path("/proc/self/maps").exists(),
    reason="glibc mallopt and /proc/self/maps are Linux-only",
)
def test_retained_host_memory_serves_large_tensors_from_the_heap() -> None:
    """By default glibc maps a large tensor on its own and unmaps it when freed, so the next step's
    tensor page-faults afresh; retained, it lives in the heap, whose pages stay mapped."""
    where = {}
    for mode in ("default", "retain"):
        out = subprocess.run(
            [sys.executable, "-c", _HEAP_SCRIPT, mode], capture_output=True, text=True, check=True
        )
        where[mode] = out.stdout.split()[-1]
    assert where == {"default": "False", "retain": "True"}
