"""``video_backend="torchcodec"``: the opt-in decoder gives the PyAV path's frames (within
``PIXEL_TOLERANCE`` per pixel; measured 0 here, see data/video_torchcodec.py), picks exactly the
frame at each timestamp (a time between frames or past the end is an error, not a neighbour),
feeds the windowed sampler with 0 and 2 DataLoader workers, and says how to install it when it
is missing."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vlastack.data.dataset import WindowedDataset, make_dataloader
from vlastack.data.format import DatasetReader, DatasetWriter, Feature
from vlastack.data.video_torchcodec import PIXEL_TOLERANCE, load_torchcodec
from vlastack.errors import ConfigError, DataError

FRONT, WRIST = "observation.images.front", "observation.images.wrist"


def _torchcodec_missing() -> str | None:
    try:
        load_torchcodec()
    except DataError as exc:
        return str(exc)
    return None


needs_torchcodec = pytest.mark.skipif(
    _torchcodec_missing() is not None,
    reason=f"torchcodec unavailable: {_torchcodec_missing()}",
)


@pytest.fixture(scope="module")
def moving(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two episodes of a moving colour pattern: width 56 (PyAV's packed RGB path) and 96 (its
    planar path); consecutive frames differ by far more than PIXEL_TOLERANCE."""
    root = tmp_path_factory.mktemp("moving") / "ds"
    feats = {
        FRONT: Feature("video", (48, 96, 3)),
        WRIST: Feature("video", (40, 56, 3)),
        "observation.state": Feature("float32", (2,)),
        "action": Feature("float32", (3,)),
    }

    def pattern(h: int, w: int, phase: float) -> np.ndarray:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) / 16
        rgb = [np.sin(6 * xx + phase), np.cos(5 * yy - phase), np.sin(4 * (xx + yy) + 2 * phase)]
        return (127 + 120 * np.stack(rgb, -1)).astype(np.uint8)

    with DatasetWriter.create(root, fps=10, features=feats) as w:
        for e, n in enumerate([9, 12]):
            for i in range(n):
                phase = 0.7 * i + 2.0 * e
                w.add_frame(
                    {
                        FRONT: pattern(48, 96, phase),
                        WRIST: pattern(40, 56, -phase),
                        "observation.state": np.array([e, i], np.float32),
                        "action": np.array([e, i, -i], np.float32),
                    },
                    task=f"task {e}",
                )
            w.save_episode()
    return root


def test_unknown_backend_names_the_choices(lerobot_fixture: Path) -> None:
    with pytest.raises(DataError, match=r"video_backend='ffmpeg'.*pyav, torchcodec"):
        DatasetReader(lerobot_fixture, video_backend="ffmpeg")


def test_missing_torchcodec_says_how_to_install(
    lerobot_fixture: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a None entry in sys.modules makes `import torchcodec...` raise ImportError
    for name in [m for m in sys.modules if m.startswith("torchcodec")] or ["torchcodec"]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", None)
    with pytest.raises(DataError, match=r"torchcodec is not installed.*vlastack\[torchcodec\]"):
        DatasetReader(lerobot_fixture, video_backend="torchcodec")
    DatasetReader(lerobot_fixture)  # the default needs no torchcodec


def test_train_config_option() -> None:
    from vlastack.training.config import TrainConfig, apply_overrides

    cfg = TrainConfig()
    assert cfg.video_backend == "pyav"
    apply_overrides(cfg, ["--video_backend=torchcodec"])
    assert cfg.video_backend == "torchcodec"
    with pytest.raises(ConfigError, match="video_backend"):
        apply_overrides(cfg, ["--video_backend=ffmpeg"])


def _all_frames(r: DatasetReader, cam: str, ep: int, channels_first: bool) -> np.ndarray:
    return r.decode_frames(cam, ep, np.arange(r.episode(ep).length), channels_first=channels_first)


@needs_torchcodec
@pytest.mark.parametrize("which", ["lerobot", "moving"])
def test_same_frames_as_pyav(which: str, lerobot_fixture: Path, moving: Path) -> None:
    root = lerobot_fixture if which == "lerobot" else moving
    ref, tc = DatasetReader(root), DatasetReader(root, video_backend="torchcodec")
    worst, total, count = 0, 0.0, 0
    for cam in ref.video_keys:
        for ep in range(ref.num_episodes):
            for cf in (True, False):
                a = _all_frames(ref, cam, ep, cf).astype(np.int16)
                b = _all_frames(tc, cam, ep, cf).astype(np.int16)
                assert a.shape == b.shape
                d = np.abs(a - b)
                worst, total, count = (
                    max(worst, int(d.max())),
                    total + float(d.sum()),
                    count + d.size,
                )
            if which == "moving":
                # the test can tell frames apart: a neighbour is far outside the tolerance
                step = np.abs(np.diff(_all_frames(ref, cam, ep, True).astype(np.int16), axis=0))
                assert step.max(axis=(1, 2, 3)).min() > 10 * PIXEL_TOLERANCE
    assert worst <= PIXEL_TOLERANCE, f"max |torchcodec - pyav| = {worst}"
    assert total / count <= 0.05, f"mean |torchcodec - pyav| = {total / count}"


@needs_torchcodec
def test_exact_timestamp_selection(moving: Path) -> None:
    ref, tc = DatasetReader(moving), DatasetReader(moving, video_backend="torchcodec")
    path = ref.video_path(FRONT, 1)
    e = ref.episode(1)
    start = e.video_from_timestamp[FRONT]
    times = start + np.arange(e.length) / ref.fps
    want = ref._decoder.decode(path, times, channels_first=True)
    # float32 parquet timestamps land a hair before or after the frame's pts: still that frame
    jitter = np.where(np.arange(e.length) % 2 == 0, -0.9, 0.9) * tc.tolerance_s
    got = tc._decoder.decode(path, times + jitter, channels_first=True)
    assert np.abs(got.astype(np.int16) - want).max() <= PIXEL_TOLERANCE
    # any order, repeats allowed; channels-last is the same pixels
    order = np.array([5, 2, 2, 11, 0, 5])
    got = tc._decoder.decode(path, times[order])
    assert got.shape == (6, 48, 96, 3)
    assert np.abs(got.transpose(0, 3, 1, 2).astype(np.int16) - want[order]).max() <= PIXEL_TOLERANCE
    # between two frames: an error, not the nearest frame
    with pytest.raises(DataError, match=r"no frame at t=.*within tolerance_s"):
        tc._decoder.decode(path, [times[3] + 0.5 / ref.fps])
    with pytest.raises(DataError, match=r"no frame at t=.*within tolerance_s"):
        tc._decoder.decode(path, [times[-1] + 1.0 / ref.fps])
    with pytest.raises(DataError, match="video file is missing"):
        tc._decoder.decode(moving / "nope.mp4", times[:1])
    with pytest.raises(DataError, match="no timestamps"):
        tc._decoder.decode(path, [])


@needs_torchcodec
@pytest.mark.parametrize("workers", [0, 2])
def test_windowed_batches_with_workers(moving: Path, workers: int) -> None:
    def batches(backend: str) -> list[dict]:
        ds = WindowedDataset(
            DatasetReader(moving, video_backend=backend), obs_horizon=2, action_horizon=3
        )
        loader = make_dataloader(ds, batch_size=4, shuffle=True, num_workers=workers, seed=0)
        return list(loader)

    ref, got = batches("pyav"), batches("torchcodec")
    assert sum(len(b["index"]) for b in got) == 21
    for a, b in zip(ref, got, strict=True):
        assert torch.equal(a["index"], b["index"])
        assert torch.equal(a["action"], b["action"])
        for cam in (FRONT, WRIST):
            assert a[cam].shape == b[cam].shape
            assert (a[cam] - b[cam]).abs().max().item() <= PIXEL_TOLERANCE / 255 + 1e-7


TRAIN = ["--steps=1", "--batch_size=4", "--log=none", "--progress=false", "--num_workers=0"]
TRAIN += ["--num_threads=1", "--val_fraction=0"]


@needs_torchcodec
def test_train_decodes_with_torchcodec(
    lerobot_fixture: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vlastack.cli.main import main
    from vlastack.data.video_torchcodec import TorchCodecDecoder

    calls = []
    real = TorchCodecDecoder.decode

    def counting(self, *a, **k):
        calls.append(1)
        return real(self, *a, **k)

    monkeypatch.setattr(TorchCodecDecoder, "decode", counting)
    argv = ["train", "cpu_default", "--data", str(lerobot_fixture), f"--out_dir={tmp_path / 'r'}"]
    assert main([*argv, *TRAIN, "--video_backend=torchcodec"]) == 0
    assert calls, "the training windows were not decoded by torchcodec"


def test_train_without_torchcodec_says_how_to_install(
    lerobot_fixture: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from vlastack.cli.main import main

    for name in [m for m in sys.modules if m.startswith("torchcodec")] or ["torchcodec"]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", None)
    argv = ["train", "cpu_default", "--data", str(lerobot_fixture), f"--out_dir={tmp_path / 'r'}"]
    assert main([*argv, *TRAIN, "--video_backend=torchcodec"]) == 2
    assert "vlastack[torchcodec]" in capsys.readouterr().err
    assert not (tmp_path / "r" / "checkpoints").exists()
