import json
import re
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from vlastack.data import format as fmt
from vlastack.data.doctor import describe, diagnose
from vlastack.embodiment import CameraSpec, EmbodimentSpec, VectorSpec


def write_dataset(root, episodes, use_videos=False):
    """episodes: list of (state (N,3), action (N,3), task)."""
    spec = EmbodimentSpec(
        robot_type="toy",
        cameras=[CameraSpec("front", 8, 8)],
        state=VectorSpec(["x", "y", "z"], units=["m", "m", "m"]),
        action=VectorSpec(
            ["vx", "vy", "grip"], units=["m/s", "m/s", "1"], kind="velocity", gripper_index=2
        ),
        control_hz=10,
    )
    w = fmt.DatasetWriter.create(
        root,
        fps=10,
        features={
            "observation.images.front": fmt.Feature("video" if use_videos else "image", (8, 8, 3)),
            "observation.state": fmt.Feature("float32", (3,), names=spec.state.names),
            "action": fmt.Feature("float32", (3,), names=spec.action.names),
        },
        robot_type="toy",
        embodiment=spec,
        use_videos=use_videos,
    )
    for state, action, task in episodes:
        for t in range(len(action)):
            w.add_frame(
                {
                    "observation.images.front": np.full((8, 8, 3), t, np.uint8),
                    "observation.state": state[t],
                    "action": action[t],
                },
                task=task,
            )
        w.save_episode()
    w.finalize()
    return root


def healthy_episode(n, seed, task="open the drawer"):
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, n)[:, None]
    action = np.concatenate(
        [
            np.sin(2 * np.pi * t) + 0.05 * rng.normal(size=(n, 1)),
            np.cos(2 * np.pi * t),
            (t > 0.5) * 1.0,
        ],
        axis=1,
    ).astype(np.float32)
    state = np.cumsum(action, axis=0).astype(np.float32)
    return state, action, task


@pytest.fixture
def healthy(tmp_path):
    return write_dataset(tmp_path / "ok", [healthy_episode(30, s) for s in range(4)])


def test_healthy_dataset_passes(healthy):
    report = diagnose(healthy)
    assert report.ok, report.findings
    assert not report.warnings, report.findings
    assert {"frame_counts", "timestamps", "videos", "finite_values", "gripper"} <= set(
        report.checks_run
    )
    g = report.summary["gripper"]
    assert g["dim"] == 2 and g["mean_toggles_per_episode"] == 1.0
    # one instruction for every episode is worth knowing but not a warning
    assert any(f.check == "instructions" and f.level == "info" for f in report.findings)
    json.dumps(report.to_dict())


def test_injected_problems_are_found(tmp_path):
    eps = [healthy_episode(30, s) for s in range(4)]
    # episode 1: constant action, robot never moves
    eps[1] = (np.ones((20, 3), np.float32), np.full((20, 3), 0.3, np.float32), "open the drawer")
    # episode 2: a teleoperation glitch (one frame far off)
    st, act, _ = eps[2]
    act = act.copy()
    act[10, 0] += 25.0
    eps[2] = (st, act, "Open the drawer.")
    root = write_dataset(tmp_path / "bad", eps)
    # episode 3: a NaN written into the data file after the fact
    path = root / "data" / "chunk-000" / "file-000.parquet"
    table = pq.read_table(path)
    actions = np.stack(table["action"].to_numpy(zero_copy_only=False)).astype(np.float32)
    row = int(np.flatnonzero(table["episode_index"].to_numpy() == 3)[5])
    actions[row, 1] = np.nan
    import pyarrow as pa

    col = pa.FixedSizeListArray.from_arrays(pa.array(actions.reshape(-1)), 3)
    table = table.set_column(table.column_names.index("action"), "action", col)
    pq.write_table(table, path)

    report = diagnose(root)
    by_check = {}
    for f in report.findings:
        by_check.setdefault(f.check, []).append(f)
    assert not report.ok
    nan = by_check["finite_values"][0]
    assert nan.level == "error" and nan.episodes == [3] and "dims [1]" in nan.message
    static = by_check["static_episodes"]
    assert {f.episodes[0] for f in static} == {1}
    assert len(static) == 2  # constant action and still state
    jumps = by_check["action_jumps"][0]
    assert jumps.episodes == [2]
    assert re.search(r"episode 2 frame 1[01] dim 0", jumps.message)  # the spike is frame 10
    dupes = [f for f in by_check["instructions"] if "case" in f.message]
    assert dupes and "Open the drawer." in dupes[0].message


def test_missing_video_and_bad_timestamps(tmp_path):
    root = write_dataset(
        tmp_path / "v", [healthy_episode(12, s) for s in range(2)], use_videos=True
    )
    # timestamps that disagree with frame_index / fps
    path = root / "data" / "chunk-000" / "file-000.parquet"
    table = pq.read_table(path)
    import pyarrow as pa

    ts = table["timestamp"].to_numpy().copy()
    ts[14] += 0.05
    table = table.set_column(table.column_names.index("timestamp"), "timestamp", pa.array(ts))
    pq.write_table(table, path)
    report = diagnose(root)
    ts_f = [f for f in report.findings if f.check == "timestamps"]
    assert ts_f and ts_f[0].level == "error" and ts_f[0].episodes == [1]

    shutil.rmtree(root / "videos")
    report = diagnose(root)
    assert not report.ok
    assert report.findings[0].check == "load" and "video" in report.findings[0].message


def test_fixture_info_and_doctor(lerobot_fixture):
    d = describe(lerobot_fixture)
    assert d["episodes"] == 3 and d["frames"] == 47 and d["fps"] == 10
    assert d["cameras"]["observation.images.front"]["height"] == 48
    assert d["cameras"]["observation.images.wrist"]["width"] == 32
    assert d["tasks"] == {"open the drawer": 2, "press the button from the top": 1}
    assert d["features"]["action"]["names"] == ["dx", "dy", "dz", "gripper"]
    report = diagnose(lerobot_fixture)
    assert report.ok, report.findings
    assert report.summary["gripper"]["dim"] == 3  # found by name without an embodiment spec
    assert [f.check for f in report.warnings] == ["embodiment"]


def test_describe_reports_embodiment(healthy):
    d = describe(healthy)
    assert d["embodiment"]["action"]["kind"] == "velocity"
    assert "vx (m/s)" in d["embodiment_text"]
    assert d["cameras"]["observation.images.front"]["orientation"] == "upright"
