"""Windowed training samples: the fixture's frame 13, padding at episode edges, filters, split,
collate, DataLoader workers, and LeRobot 0.6.1 loading a vlastack-written dataset."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from _lerobot_python import lerobot_python
from vlastack.data.dataset import WindowedDataset, collate, make_dataloader, split_episodes
from vlastack.data.format import DatasetReader, DatasetWriter, Feature
from vlastack.errors import DataError

FRONT, WRIST = "observation.images.front", "observation.images.wrist"
CODEC_TOL = 6.0 / 255


def test_fixture_frame_13(lerobot_fixture: Path) -> None:
    ds = WindowedDataset(lerobot_fixture, obs_horizon=2, action_horizon=3)
    x = ds[13]
    assert x["task"] == "press the button from the top"
    assert (x["episode_index"], x["index"]) == (1, 13)
    assert x[FRONT].shape == (2, 3, 48, 64) and x[FRONT].dtype == torch.float32
    assert x[WRIST].shape == (2, 3, 32, 32)
    # frame 13 is frame 1 of episode 1: obs frames 0 and 1 have grey 0 and 12
    np.testing.assert_allclose(x[WRIST].mean(dim=(1, 2, 3)).numpy(), [0, 12 / 255], atol=CODEC_TOL)
    assert x["observation.state"].shape == (2, 4)
    assert not x["observation.state_is_pad"].any()
    r = ds.reader
    np.testing.assert_array_equal(x["action"].numpy(), r.column("action")[13:16])
    np.testing.assert_array_equal(
        x["observation.state"].numpy(), r.column("observation.state")[12:14]
    )


def test_padding_repeats_edge_frames(lerobot_fixture: Path) -> None:
    ds = WindowedDataset(lerobot_fixture, obs_horizon=3, action_horizon=5)
    r = ds.reader
    first = ds[12]  # frame 0 of episode 1
    assert first["observation.state_is_pad"].tolist() == [True, True, False]
    st = first["observation.state"].numpy()
    np.testing.assert_array_equal(st, np.repeat(r.column("observation.state")[12:13], 3, axis=0))
    np.testing.assert_allclose(first[WRIST].mean(dim=(1, 2, 3)).numpy(), [0, 0, 0], atol=CODEC_TOL)
    last = ds[30]  # frame 18 of 20
    assert last["action_is_pad"].tolist() == [False, False, True, True, True]
    act = r.column("action")
    np.testing.assert_array_equal(last["action"].numpy(), act[[30, 31, 31, 31, 31]])
    np.testing.assert_allclose(
        last[WRIST].mean(dim=(1, 2, 3)).numpy(), np.array([16, 17, 18]) * 12 / 255, atol=CODEC_TOL
    )


def test_filters_resize_and_image_keys(lerobot_fixture: Path) -> None:
    ds = WindowedDataset(
        lerobot_fixture, episodes=[0, 2], image_keys=[WRIST], image_size=(16, 24), action_horizon=2
    )
    assert len(ds) == 12 + 15
    x = ds[0]
    assert x[WRIST].shape == (1, 3, 16, 24) and FRONT not in x
    assert float(x[WRIST].min()) >= 0.0 and float(x[WRIST].max()) <= 1.0
    by_task = WindowedDataset(lerobot_fixture, tasks=["press the button from the top"])
    assert len(by_task) == 20 and {by_task[i]["episode_index"] for i in range(20)} == {1}
    with pytest.raises(DataError, match="not in the dataset"):
        WindowedDataset(lerobot_fixture, tasks=["fly"])
    with pytest.raises(DataError, match="not cameras"):
        WindowedDataset(lerobot_fixture, image_keys=["observation.state"])
    with pytest.raises(DataError, match="episode 7"):
        WindowedDataset(lerobot_fixture, episodes=[7])


def test_split_episodes() -> None:
    train, val = split_episodes(20, 0.2, seed=3)
    assert len(val) == 4 and len(train) == 16 and not set(train) & set(val)
    assert sorted(train + val) == list(range(20))
    assert split_episodes(20, 0.2, seed=3) == (train, val)
    assert split_episodes(20, 0.2, seed=4) != (train, val)
    assert split_episodes(3, 0.1, seed=0)[1] != []  # at least one validation episode
    assert split_episodes(5, 0.0) == (list(range(5)), [])


def test_collate_and_workers(lerobot_fixture: Path) -> None:
    ds = WindowedDataset(lerobot_fixture, obs_horizon=2, action_horizon=4)
    b = collate([ds[0], ds[13]])
    assert b[FRONT].shape == (2, 2, 3, 48, 64) and b["action"].shape == (2, 4, 4)
    assert b["task"] == ["open the drawer", "press the button from the top"]
    assert b["index"].tolist() == [0, 13]
    seen = []
    for batch in make_dataloader(ds, batch_size=8, shuffle=True, num_workers=2, seed=0):
        assert batch["observation.state_is_pad"].shape[1] == 2
        seen.extend(batch["index"].tolist())
    assert sorted(seen) == list(range(47))


def test_windowed_on_own_writer(tmp_path: Path) -> None:
    feats = {
        WRIST: Feature("video", (32, 32, 3)),
        "observation.state": Feature("float32", (2,)),
        "action": Feature("float32", (3,)),
    }
    with DatasetWriter.create(tmp_path, fps=5, features=feats) as w:
        for e, n in enumerate([4, 9]):
            for i in range(n):
                w.add_frame(
                    {
                        WRIST: np.full((32, 32, 3), 20 * i, np.uint8),
                        "observation.state": np.array([e, i], np.float32),
                        "action": np.array([e, i, -i], np.float32),
                    },
                    task=f"task {e}",
                )
            w.save_episode()
    ds = WindowedDataset(tmp_path, obs_horizon=2, action_horizon=6)
    x = ds[4]  # episode 1 frame 0
    assert x["task"] == "task 1" and x["observation.state_is_pad"].tolist() == [True, False]
    assert x["action"][:, 1].tolist() == [0, 1, 2, 3, 4, 5]
    y = ds[3]  # last frame of episode 0
    assert y["action_is_pad"].tolist() == [False] + [True] * 5
    assert y["action"][:, 1].tolist() == [3] * 6
    np.testing.assert_allclose(
        ds[10][WRIST].mean(dim=(1, 2, 3)).numpy(), [100 / 255, 120 / 255], atol=CODEC_TOL
    )


def test_lerobot_loads_vlastack_dataset(tmp_path: Path) -> None:
    """LeRobot's own LeRobotDataset reads what vlastack wrote, through its default video
    backend (torchcodec in 0.6.1) and through pyav, frame for frame as vlastack reads it."""
    py = lerobot_python()
    feats = {
        FRONT: Feature("video", (48, 64, 3)),
        WRIST: Feature("image", (32, 32, 3)),
        "observation.state": Feature("float32", (4,)),
        "action": Feature("float32", (4,)),
    }
    rng = np.random.default_rng(0)
    with DatasetWriter.create(tmp_path, fps=10, features=feats, data_files_size_in_mb=0.003) as w:
        for e, n in enumerate([8, 12, 6]):
            for i in range(n):
                w.add_frame(
                    {
                        FRONT: np.full((48, 64, 3), 10 * i, np.uint8),
                        WRIST: np.full((32, 32, 3), 12 * i, np.uint8),
                        "observation.state": rng.normal(size=4).astype(np.float32),
                        "action": rng.normal(size=4).astype(np.float32),
                    },
                    task=["pick", "place"][e % 2],
                )
            w.save_episode()
    script = Path(__file__).parent / "compat" / "check_lerobot_load.py"
    proc = subprocess.run([py, str(script), str(tmp_path)], capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    result = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    assert set(result["backends"]) == {"default", "pyav"}
    assert result["backends"]["default"]["video_backend"] == "torchcodec"  # LeRobot's default
    r = DatasetReader(tmp_path)
    act = r.column("action")
    for backend, seen in result["backends"].items():
        assert (seen["num_episodes"], seen["num_frames"]) == (3, 26), backend
        assert len(seen["frames"]) == 26, backend
        for rec in seen["frames"]:
            g = rec["index"]
            assert rec["task"] == r.task_of(g)
            assert rec[f"shape:{FRONT}"] == [3, 48, 64] and rec[f"shape:{WRIST}"] == [3, 32, 32]
            np.testing.assert_allclose(rec["action"][0], act[g], rtol=1e-6)
            # the action window LeRobot builds from delta_timestamps: pads past the episode end
            ep_end = int(
                np.max(np.nonzero(r.column("episode_index") == r.column("episode_index")[g]))
            )
            expect_pad = [g + k > ep_end for k in range(3)]
            assert rec["action_is_pad"] == expect_pad, (backend, g)
            fi = int(r.column("frame_index")[g])
            assert abs(rec[f"mean:{WRIST}"] - 12 * fi / 255) < 1e-6  # PNG: lossless
            assert abs(rec[f"mean:{FRONT}"] - 10 * fi / 255) < CODEC_TOL, (backend, g)
