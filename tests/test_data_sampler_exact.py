"""The sampler's fast paths change no pixel: random-access decoding (seek + forward, channel-first
through swscale's planar output) equals a plain sequential decode of the whole file, and the
batches ``__getitems__`` builds in place (numpy conversion, recycled or shared-memory arrays) equal
the old per-sample formula ``uint8 -> .to(float32).mul_(1/255)`` on that reference, padding,
resizing, PNG cameras and DataLoader workers included."""

from __future__ import annotations

import pickle
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from vlastack.data.dataset import (
    PrebatchedSamples,
    ShippedBatch,
    WindowedDataset,
    collate,
    make_dataloader,
)
from vlastack.data.format import DatasetWriter, Feature
from vlastack.data.video import VideoDecoder

FRONT, WRIST = "observation.images.front", "observation.images.wrist"


def reference_frames(path: Path) -> dict[int, np.ndarray]:
    """Every frame of ``path`` by its index (pts / frame duration), decoded front to back with no
    seek, as packed RGB (the conversion vlastack has always used)."""
    out: dict[int, np.ndarray] = {}
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        step = 1.0 / float(s.average_rate)
        for f in c.decode(s):
            i = round(float(f.pts * s.time_base) / step)
            out[i] = f.to_ndarray(format="rgb24", interpolation="FAST_BILINEAR")
    return out


def reference_images(ds: WindowedDataset, key: str, g: int) -> torch.Tensor:
    """The old per-sample image formula on the reference decode: (T, C, H, W) float32."""
    r = ds.reader
    ep = int(r.frame_episode[g])
    lo, hi = int(ds._from[g]), int(ds._to[g])
    obs_idx = np.clip(g + ds._obs_offsets, lo, hi - 1)
    e = r.episode(ep)
    ref = reference_frames(r.video_path(key, ep))
    fps = r.fps
    first = round(e.video_from_timestamp[key] * fps)
    frames = np.stack([ref[first + int(i) - lo] for i in obs_idx])
    u8 = torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2)))
    return u8.to(torch.float32).mul_(1.0 / 255.0)


def assert_same_batch(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
            assert torch.equal(a[k], b[k]), k
        else:
            assert a[k] == b[k], k


@pytest.fixture
def av1_dataset(tmp_path: Path) -> Path:
    """Two 20-frame episodes of moving colour patterns at 40x56 (the writer's AV1, GOP 2)."""
    feats = {
        FRONT: Feature("video", (40, 56, 3)),
        "observation.state": Feature("float32", (2,)),
        "action": Feature("float32", (3,)),
    }
    yy, xx = np.mgrid[0:40, 0:56].astype(np.float32) / 40
    with DatasetWriter.create(tmp_path / "ds", fps=10, features=feats) as w:
        for e in range(2):
            for i in range(20):
                ph = 0.3 * i + e
                img = np.stack(
                    [
                        127 + 120 * np.sin(6 * xx + ph),
                        127 + 120 * np.cos(5 * yy - ph),
                        127 + 120 * np.sin(4 * (xx + yy) + 2 * ph),
                    ],
                    -1,
                ).astype(np.uint8)
                w.add_frame(
                    {
                        FRONT: img,
                        "observation.state": np.array([e, i], np.float32),
                        "action": np.array([e, i, -i], np.float32),
                    },
                    task=f"task {e}",
                )
            w.save_episode()
    return tmp_path / "ds"


@pytest.mark.parametrize("which", ["fixture", "av1"])
def test_random_access_equals_sequential_decode(
    which: str, lerobot_fixture: Path, av1_dataset: Path
) -> None:
    root = lerobot_fixture if which == "fixture" else av1_dataset
    ds = WindowedDataset(root)
    for key in ds.image_keys:
        path = ds.reader.video_path(key, 0)
        ref = reference_frames(path)
        n = len(ref)
        # shuffled, with repeats and neighbours: seeks backwards, forwards and within a GOP
        idx = np.random.default_rng(1).choice(n, size=3 * n)
        dec = VideoDecoder()
        for lo in range(0, len(idx), 3):
            want = idx[lo : lo + 3]
            ts = want / ds.reader.fps
            packed = dec.decode(path, ts)
            planar = dec.decode(path, ts, channels_first=True)
            expected = np.stack([ref[int(i)] for i in want])
            np.testing.assert_array_equal(packed, expected)
            np.testing.assert_array_equal(planar, expected.transpose(0, 3, 1, 2))
        # the fixture's widths (64, 32) take the planar path; 56 is not a multiple of 16, where
        # swscale's planar output is wrong in the last columns, so it keeps the packed one
        assert dec._open_planar[str(path)] is (which == "fixture")


def test_batches_equal_the_reference_formula(lerobot_fixture: Path) -> None:
    ds = WindowedDataset(lerobot_fixture, obs_horizon=3, action_horizon=5)
    idx = [12, 0, 13, 30, 46, 1, 12]  # episode starts (padding), ends, a repeat
    batch = collate(ds.__getitems__(idx))
    assert_same_batch(batch, collate([ds[i] for i in idx]))
    for key in ds.image_keys:
        ref = torch.stack([reference_images(ds, key, int(ds.indices[i])) for i in idx])
        assert torch.equal(batch[key], ref), key
    # any other collate function sees the per-sample dicts
    samples = ds.__getitems__(idx)
    assert isinstance(samples, PrebatchedSamples) and len(samples) == len(idx)
    assert_same_batch(torch.utils.data.default_collate(list(samples)), batch)
    assert samples[3]["index"] == 30 and samples[3]["task"] == ds[30]["task"]


def test_resize_and_png_cameras_match_per_sample(lerobot_fixture: Path, tmp_path: Path) -> None:
    ds = WindowedDataset(lerobot_fixture, obs_horizon=2, image_size=(16, 24))
    idx = [0, 5, 12, 40]
    assert_same_batch(collate(ds.__getitems__(idx)), collate([ds[i] for i in idx]))
    feats = {
        "observation.images.cam": Feature("image", (12, 10, 3)),
        "action": Feature("float32", (2,)),
    }
    rng = np.random.default_rng(0)
    with DatasetWriter.create(tmp_path / "png", fps=5, features=feats) as w:
        for _ in range(6):
            img = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
            w.add_frame({"observation.images.cam": img, "action": np.ones(2, np.float32)}, "t")
        w.save_episode()
    png = WindowedDataset(tmp_path / "png", obs_horizon=2, action_horizon=2)
    b = collate(png.__getitems__([0, 3, 5]))
    assert_same_batch(b, collate([png[i] for i in [0, 3, 5]]))
    frames = png.reader.decode_frames("observation.images.cam", 0, [2, 3])
    u8 = torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2)))
    assert torch.equal(b["observation.images.cam"][1], u8.to(torch.float32).mul_(1 / 255))


def test_batch_arrays_are_reused_only_when_dropped(lerobot_fixture: Path) -> None:
    ds = WindowedDataset(lerobot_fixture, obs_horizon=2)
    first = collate(ds.__getitems__([0, 1, 2, 3]))
    keep = first[FRONT].clone()
    view = first[FRONT][1]  # a view alone keeps the array in use
    ptr = first[FRONT].data_ptr()
    del first
    second = collate(ds.__getitems__([20, 21, 22, 23]))
    assert second[FRONT].data_ptr() != ptr
    assert torch.equal(view, keep[1])
    ptr2 = second[FRONT].data_ptr()
    del view, second
    third = collate(ds.__getitems__([30, 31, 32, 33]))
    assert third[FRONT].data_ptr() in (ptr, ptr2)  # a dropped batch's array, not a new one
    reused = collate(ds.__getitems__([0, 1, 2, 3]))
    assert torch.equal(reused[FRONT], keep)
    assert not torch.equal(third[FRONT], reused[FRONT])  # both alive: different arrays


def test_workers_deliver_the_same_batches(lerobot_fixture: Path) -> None:
    ds = WindowedDataset(lerobot_fixture, obs_horizon=2, action_horizon=4)
    plain = list(make_dataloader(ds, batch_size=8, shuffle=True, num_workers=0, seed=3))
    workers = list(make_dataloader(ds, batch_size=8, shuffle=True, num_workers=2, seed=3))
    assert len(plain) == len(workers) == 6
    for a, b in zip(plain, workers):
        assert_same_batch(a, b)


class _InWorker:
    """Stands in for ``get_worker_info()`` inside a DataLoader worker."""

    id, num_workers = 0, 1


def test_worker_batches_ship_uint8_and_arrive_float32(
    lerobot_fixture: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = WindowedDataset(lerobot_fixture, obs_horizon=2, action_horizon=4, future_offset=3)
    idx = [12, 0, 13, 30, 46]
    local = collate(ds.__getitems__(idx))
    monkeypatch.setattr("vlastack.data.dataset.get_worker_info", lambda: _InWorker())
    samples = ds.__getitems__(idx)
    futures = ["future.images." + k.removeprefix("observation.images.") for k in ds.image_keys]
    assert samples.uint8_keys == (*ds.image_keys, *futures)
    shipped = collate(samples)
    assert isinstance(shipped, ShippedBatch)
    assert all(shipped[k].dtype == torch.uint8 for k in samples.uint8_keys)
    assert shipped[ds.image_keys[0]].is_shared()  # shared memory: a handle crosses, not data
    arrived = pickle.loads(pickle.dumps(shipped))  # what the worker's queue does
    assert type(arrived) is dict
    assert_same_batch(arrived, local)
    # the receiving side recycles its float32 arrays once the batch is dropped
    ptr = arrived[ds.image_keys[0]].data_ptr()
    del arrived
    again = pickle.loads(pickle.dumps(shipped))
    assert ptr in {again[k].data_ptr() for k in samples.uint8_keys}
    assert_same_batch(again, local)
    # another collate function still sees float32 per-sample dicts
    assert_same_batch(torch.utils.data.default_collate(list(samples)), local)
    # a resize happens in float32 in the worker, as before: nothing left to convert
    small = WindowedDataset(lerobot_fixture, obs_horizon=2, image_size=(16, 24))
    resized = small.__getitems__([0, 5])
    assert resized.uint8_keys == () and not isinstance(collate(resized), ShippedBatch)


@pytest.mark.parametrize("size", [96, 224])
def test_workers_match_in_process_at_training_sizes(size: int, tmp_path: Path) -> None:
    """Two cameras at 96² and 224² (the benchmark's shapes): 2 workers (uint8 shipped, converted
    on arrival) deliver the batches of 0 workers, which are the old per-sample formula."""
    feats = {
        FRONT: Feature("video", (size, size, 3)),
        WRIST: Feature("video", (size, size, 3)),
        "action": Feature("float32", (2,)),
    }
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    with DatasetWriter.create(tmp_path / "ds", fps=10, features=feats) as w:
        for e in range(2):
            for i in range(6):
                ph = 0.5 * i + e
                img = np.stack(
                    [127 + 120 * np.sin(6 * xx + ph), 127 + 120 * np.cos(5 * yy - ph), 99 + 0 * xx],
                    -1,
                ).astype(np.uint8)
                w.add_frame(
                    {FRONT: img, WRIST: img[::-1].copy(), "action": np.ones(2, np.float32)}, "t"
                )
            w.save_episode()
    ds = WindowedDataset(tmp_path / "ds", obs_horizon=2, action_horizon=3)
    plain = list(make_dataloader(ds, batch_size=4, shuffle=True, num_workers=0, seed=1))
    workers = list(make_dataloader(ds, batch_size=4, shuffle=True, num_workers=2, seed=1))
    assert len(plain) == len(workers) == 3
    for a, b in zip(plain, workers):
        assert_same_batch(a, b)
        assert b[FRONT].shape == (4, 2, 3, size, size) and b[FRONT].dtype == torch.float32
    for key in (FRONT, WRIST):
        ref = torch.stack([reference_images(ds, key, int(g)) for g in workers[0]["index"]])
        assert torch.equal(workers[0][key], ref), key
