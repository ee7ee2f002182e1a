"""LeRobot v3 format: the reader against LeRobot's own fixture, the writer's schemas against it,
round trips, file rollover, resume, crash safety (SIGKILL mid-episode and mid-save), bad input."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from vlastack.data import stats as S
from vlastack.data.format import DatasetReader, DatasetWriter, Feature
from vlastack.embodiment import CameraSpec, EmbodimentSpec, VectorSpec
from vlastack.errors import DataError

SRC = Path(__file__).resolve().parents[1] / "src"
FRONT, WRIST = "observation.images.front", "observation.images.wrist"
CODEC_TOL = 6.0  # grey levels: a flat image through yuv420p AV1/H.264 at CRF 30


def features(wrist_dtype: str = "video") -> dict[str, Feature]:
    return {
        FRONT: Feature("video", (48, 64, 3)),
        WRIST: Feature(wrist_dtype, (32, 32, 3)),
        "observation.state": Feature("float32", (4,), ["x", "y", "z", "gripper"]),
        "action": Feature("float32", (4,), ["dx", "dy", "dz", "gripper"]),
    }


def grey(level: int, shape: tuple[int, int]) -> np.ndarray:
    return np.full((*shape, 3), level % 256, dtype=np.uint8)


def write_episodes(writer: DatasetWriter, lengths, seed: int = 0, first_task: int = 0) -> dict:
    """Append episodes whose frame i has wrist grey 12*i and front grey 5*i+ep; returns truth."""
    rng = np.random.default_rng(seed)
    truth: dict[str, list] = {"state": [], "action": [], "task": []}
    for e, n in enumerate(lengths):
        task = ["open the drawer", "press the button from the top"][(e + first_task) % 2]
        for i in range(n):
            s, a = rng.normal(size=4).astype(np.float32), rng.normal(size=4).astype(np.float32)
            writer.add_frame(
                {
                    FRONT: grey(5 * i + 40 * e, (48, 64)),
                    WRIST: grey(12 * i, (32, 32)),
                    "observation.state": s,
                    "action": a,
                },
                task=task,
            )
            truth["state"].append(s)
            truth["action"].append(a)
            truth["task"].append(task)
        writer.save_episode(extra={"success": e % 2 == 0})
    return truth


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# ---- the reader on LeRobot 0.6.1's own dataset ----------------------------------------------
def test_reads_lerobot_fixture(lerobot_fixture: Path) -> None:
    before = tree_digest(lerobot_fixture)
    r = DatasetReader(lerobot_fixture)
    assert (r.num_episodes, r.num_frames, r.fps) == (3, 47, 10.0)
    assert r.tasks == ["open the drawer", "press the button from the top"]
    assert r.camera_keys == [FRONT, WRIST]
    assert [r.episode(i).length for i in range(3)] == [12, 20, 15]
    ep1 = r.episode(1)
    assert (ep1.dataset_from_index, ep1.dataset_to_index) == (12, 32)
    assert ep1.video_from_timestamp[WRIST] == pytest.approx(1.2)
    assert ep1.video_to_timestamp[WRIST] == pytest.approx(3.2)
    f = r.frame(13)
    assert f["task"] == "press the button from the top"
    assert int(f["episode_index"]) == 1 and int(f["frame_index"]) == 1
    assert f[FRONT].shape == (48, 64, 3) and f[WRIST].shape == (32, 32, 3)
    assert f[WRIST].dtype == np.uint8
    for e in range(3):
        frames = r.decode_frames(WRIST, e, np.arange(r.episode(e).length))
        expect = (12 * np.arange(r.episode(e).length)) % 256
        assert np.abs(frames.mean(axis=(1, 2, 3)) - expect).max() < CODEC_TOL
    # state[t] = state[t-1] + action[t] within each episode (fixture README)
    st, act = r.column("observation.state"), r.column("action")
    for e in range(3):
        a, b = r.episode(e).dataset_from_index, r.episode(e).dataset_to_index
        np.testing.assert_allclose(st[a + 1 : b], st[a : b - 1] + act[a + 1 : b], atol=1e-5)
    assert tree_digest(lerobot_fixture) == before


def test_aggregation_rule_matches_lerobot(lerobot_fixture: Path) -> None:
    """Aggregating the fixture's per-episode stats our way reproduces its meta/stats.json."""
    r = DatasetReader(lerobot_fixture)
    agg = S.aggregate_stats([r.episode_stats(e) for e in range(r.num_episodes)])
    for key, st in r.stats.items():
        for name in S.STAT_NAMES:
            np.testing.assert_allclose(
                agg[key][name], st[name], rtol=1e-6, atol=1e-9, err_msg=f"{key}/{name}"
            )


def test_recomputed_stats_match_fixture(lerobot_fixture: Path) -> None:
    r = DatasetReader(lerobot_fixture)
    st = S.compute_stats(r)
    for key in ("observation.state", "action"):
        for name in ("min", "max", "mean", "std", "count"):
            np.testing.assert_allclose(st[key][name], r.stats[key][name], rtol=1e-5, atol=1e-6)
    # images come back from a lossy codec: per-channel mean within a few grey levels
    np.testing.assert_allclose(st[WRIST]["mean"], r.stats[WRIST]["mean"], atol=4 / 255)
    assert st[WRIST]["mean"].shape == (3, 1, 1)


# ---- the writer matches LeRobot's on-disk schemas ---------------------------------------------
def test_writer_schema_matches_lerobot(tmp_path: Path, lerobot_fixture: Path) -> None:
    with DatasetWriter.create(
        tmp_path / "ds", fps=10, features=features(), robot_type="sim_sawyer"
    ) as w:
        write_episodes(w, [12, 20, 15])
    ours, ref = tmp_path / "ds", lerobot_fixture
    for rel in ("data/chunk-000/file-000.parquet", "meta/tasks.parquet"):
        a, b = pq.read_schema(ours / rel), pq.read_schema(ref / rel)
        assert [(f.name, f.type) for f in a] == [(f.name, f.type) for f in b], rel
    a = pq.read_schema(ours / "meta/episodes/chunk-000/file-000.parquet")
    b = pq.read_schema(ref / "meta/episodes/chunk-000/file-000.parquet")
    assert [(f.name, f.type) for f in a if f.name != "vlastack/extra"] == [
        (f.name, f.type) for f in b
    ]
    info_a = json.loads((ours / "meta/info.json").read_text())
    info_b = json.loads((ref / "meta/info.json").read_text())
    assert list(info_a) == list(info_b)
    assert info_a["features"].keys() == info_b["features"].keys()
    for k, fb in info_b["features"].items():
        fa = info_a["features"][k]
        assert (fa["dtype"], fa["shape"], fa["names"]) == (fb["dtype"], fb["shape"], fb["names"]), k
        if "info" in fb:
            assert fa["info"].keys() == fb["info"].keys()
            if fa["info"]["video.codec"] == "av1":
                assert fa["info"] == fb["info"]
    assert (info_a["total_episodes"], info_a["total_frames"], info_a["total_tasks"]) == (3, 47, 2)
    assert info_a["splits"] == info_b["splits"]
    stats_a = json.loads((ours / "meta/stats.json").read_text())
    stats_b = json.loads((ref / "meta/stats.json").read_text())
    assert stats_a.keys() == stats_b.keys()
    for k in stats_b:
        assert stats_a[k].keys() == stats_b[k].keys()
        assert np.shape(stats_a[k]["mean"]) == np.shape(stats_b[k]["mean"]), k


# ---- round trips -----------------------------------------------------------------------------
@pytest.mark.parametrize("wrist_dtype", ["video", "image"])
def test_round_trip(tmp_path: Path, wrist_dtype: str) -> None:
    emb = EmbodimentSpec(
        "sim_sawyer",
        [CameraSpec("front", 48, 64), CameraSpec("wrist", 32, 32)],
        VectorSpec(["x", "y", "z", "gripper"]),
        VectorSpec(["dx", "dy", "dz", "gripper"], kind="delta"),
        10.0,
    )
    with DatasetWriter.create(
        tmp_path, fps=10, features=features(wrist_dtype), embodiment=emb
    ) as w:
        truth = write_episodes(w, [7, 11, 5])
    r = DatasetReader(tmp_path)
    assert r.embodiment is not None and r.embodiment.action.kind == "delta"
    assert r.info["robot_type"] == "sim_sawyer"
    np.testing.assert_array_equal(r.column("observation.state"), np.stack(truth["state"]))
    np.testing.assert_array_equal(r.column("action"), np.stack(truth["action"]))
    np.testing.assert_array_equal(r.column("index"), np.arange(23))
    np.testing.assert_array_equal(
        r.column("frame_index"), np.r_[np.arange(7), np.arange(11), np.arange(5)]
    )
    np.testing.assert_allclose(r.column("timestamp")[7:18], np.arange(11) / 10, atol=1e-6)
    assert [r.task_of(i) for i in range(23)] == truth["task"]
    assert r.episode(1).extra == {"success": False}
    assert r.episode(2).video_from_timestamp[FRONT] == pytest.approx(1.8)
    for e, n in enumerate([7, 11, 5]):
        wrist = r.decode_frames(WRIST, e, np.arange(n))
        if wrist_dtype == "image":  # PNG is lossless
            np.testing.assert_array_equal(wrist[:, 0, 0, 0], (12 * np.arange(n)) % 256)
        else:
            assert np.abs(wrist.mean(axis=(1, 2, 3)) - 12 * np.arange(n)).max() < CODEC_TOL
        front = r.decode_frames(FRONT, e, np.arange(n)[::-1])  # any order
        assert (
            np.abs(front.mean(axis=(1, 2, 3)) - (5 * np.arange(n)[::-1] + 40 * e)).max() < CODEC_TOL
        )
    # written stats equal the stats recomputed from the data (non-image exactly)
    rec = S.compute_stats(r)
    for k in ("observation.state", "action", "index"):
        for name in S.STAT_NAMES:
            np.testing.assert_allclose(
                r.stats[k][name], rec[k][name], rtol=1e-6, err_msg=f"{k}/{name}"
            )
    assert r.stats[WRIST]["mean"].shape == (3, 1, 1)
    assert r.stats[WRIST]["min"].min() >= 0.0 and r.stats[WRIST]["max"].max() <= 1.0


def test_rollover_into_new_files(tmp_path: Path) -> None:
    with DatasetWriter.create(
        tmp_path,
        fps=10,
        features=features(),
        data_files_size_in_mb=0.002,
        video_files_size_in_mb=0.0008,
    ) as w:
        truth = write_episodes(w, [10, 10, 10, 10, 10])
    assert len(list((tmp_path / "data").rglob("*.parquet"))) > 1
    assert len(list((tmp_path / "videos" / WRIST).rglob("*.mp4"))) > 1
    r = DatasetReader(tmp_path)
    files = {r.episode(e).video_file[WRIST] for e in range(5)}
    assert len(files) > 1
    for e in range(5):
        ep = r.episode(e)
        first_in_file = all(
            r.episode(p).video_file[WRIST] != ep.video_file[WRIST] for p in range(e)
        )
        if first_in_file:
            assert ep.video_from_timestamp[WRIST] == 0.0
        wrist = r.decode_frames(WRIST, e, np.arange(10))
        assert np.abs(wrist.mean(axis=(1, 2, 3)) - 12 * np.arange(10)).max() < CODEC_TOL
    np.testing.assert_array_equal(r.column("action"), np.stack(truth["action"]))


def test_resume_appends(tmp_path: Path) -> None:
    with DatasetWriter.create(tmp_path, fps=10, features=features()) as w:
        t1 = write_episodes(w, [6, 8])
    with pytest.raises(DataError, match="resume"):
        DatasetWriter.create(tmp_path, fps=10, features=features())
    with DatasetWriter.resume(tmp_path) as w:
        assert w.num_episodes == 2
        t2 = write_episodes(w, [5], seed=1, first_task=1)
    r = DatasetReader(tmp_path)
    assert (r.num_episodes, r.num_frames) == (3, 19)
    np.testing.assert_array_equal(r.column("action"), np.stack(t1["action"] + t2["action"]))
    assert r.episode(2).video_from_timestamp[WRIST] == pytest.approx(1.4)
    wrist = r.decode_frames(WRIST, 2, np.arange(5))
    assert np.abs(wrist.mean(axis=(1, 2, 3)) - 12 * np.arange(5)).max() < CODEC_TOL


# ---- crash safety ----------------------------------------------------------------------------
CRASH_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    sys.path.insert(0, {src!r}); sys.path.insert(0, {tests!r})
    import vlastack.data.writer as F
    from test_data_format import features, write_episodes, grey, WRIST, FRONT
    root, mode, k = sys.argv[1], sys.argv[2], int(sys.argv[3])
    w = F.DatasetWriter.create(root, fps=10, features=features())
    write_episodes(w, [6, 8])
    def die(*a, **kw):
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "frames":
        for i in range(k):
            w.add_frame({{FRONT: grey(i, (48, 64)), WRIST: grey(i, (32, 32)),
                         "observation.state": np.zeros(4, np.float32),
                         "action": np.zeros(4, np.float32)}}, task="t")
        die()
    calls = [0]
    real = os.replace
    def replace_then_die(a, b):
        if calls[0] == k:
            die()
        calls[0] += 1
        real(a, b)
    F.os.replace = replace_then_die
    if mode == "encode":
        F.concat_videos = lambda *a, **kw: die()
    write_episodes(w, [5], seed=1)
    """
)


@pytest.mark.parametrize(
    "mode,k", [("frames", 3), ("encode", 0), ("save", 0), ("save", 2), ("save", 4), ("save", 6)]
)
def test_killed_writer_leaves_earlier_episodes(tmp_path: Path, mode: str, k: int) -> None:
    script = tmp_path / "crash.py"
    script.write_text(CRASH_SCRIPT.format(src=str(SRC), tests=str(Path(__file__).parent)))
    root = tmp_path / "ds"
    proc = subprocess.run(
        [sys.executable, str(script), str(root), mode, str(k)], capture_output=True
    )
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    r = DatasetReader(root)
    assert (r.num_episodes, r.num_frames) == (2, 14)
    for e, n in enumerate([6, 8]):
        wrist = r.decode_frames(WRIST, e, np.arange(n))
        assert np.abs(wrist.mean(axis=(1, 2, 3)) - 12 * np.arange(n)).max() < CODEC_TOL
    # the writer picks up after the crash and the next episode lands cleanly
    with DatasetWriter.resume(root) as w:
        write_episodes(w, [4], seed=2)
    r = DatasetReader(root)
    assert (r.num_episodes, r.num_frames) == (3, 18)
    assert not list(root.rglob("*.tmp"))
    wrist = r.decode_frames(WRIST, 2, np.arange(4))
    assert np.abs(wrist.mean(axis=(1, 2, 3)) - 12 * np.arange(4)).max() < CODEC_TOL


# ---- bad input -------------------------------------------------------------------------------
def test_add_frame_rejects_bad_values(tmp_path: Path) -> None:
    w = DatasetWriter.create(tmp_path, fps=10, features=features())
    ok = {
        FRONT: grey(0, (48, 64)),
        WRIST: grey(0, (32, 32)),
        "observation.state": np.zeros(4, np.float32),
        "action": np.zeros(4, np.float32),
    }
    cases = [
        ({**ok, WRIST: np.zeros((32, 32, 3), np.float32)}, "uint8"),
        ({**ok, WRIST: np.zeros((3, 32, 32), np.uint8)}, "transpose"),
        ({**ok, "action": np.zeros(5, np.float32)}, "shape"),
        ({**ok, "observation.velocity": np.zeros(3)}, "unknown feature"),
        ({k: v for k, v in ok.items() if k != "action"}, "missing"),
    ]
    for frame, msg in cases:
        with pytest.raises(DataError, match=msg):
            w.add_frame(frame, task="t")
    with pytest.raises(DataError, match="no frames"):
        w.save_episode()
    with pytest.raises(DataError, match="added automatically"):
        DatasetWriter.create(tmp_path / "x", fps=10, features={"index": Feature("int64", (1,))})
    w.add_frame(ok, task="t")
    w.clear_episode()
    assert w.episode_length == 0


@pytest.fixture
def small_ds(tmp_path: Path) -> Path:
    root = tmp_path / "ds"
    with DatasetWriter.create(root, fps=10, features=features()) as w:
        write_episodes(w, [6, 8])
    return root


def test_corrupt_parquet_is_named(small_ds: Path) -> None:
    p = small_ds / "data/chunk-000/file-000.parquet"
    p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(DataError, match=r"file-000\.parquet.*corrupt"):
        DatasetReader(small_ds)


def test_missing_and_truncated_video_are_named(small_ds: Path) -> None:
    v = small_ds / "videos" / WRIST / "chunk-000/file-000.mp4"
    data = v.read_bytes()
    v.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"file-000\.mp4"):
        DatasetReader(small_ds)
    v.unlink()
    with pytest.raises(DataError, match="missing"):
        DatasetReader(small_ds)


def test_mismatched_frame_counts(small_ds: Path) -> None:
    info_path = small_ds / "meta/info.json"
    info = json.loads(info_path.read_text())
    info["total_frames"] = 20
    info_path.write_text(json.dumps(info))
    with pytest.raises(DataError, match="total_frames"):
        DatasetReader(small_ds)


def test_video_shorter_than_metadata(small_ds: Path, tmp_path: Path) -> None:
    # Swap in a video of episode 0 alone: episode 1's frames are missing from it.
    r = DatasetReader(small_ds)
    from vlastack.data.video import VideoSettings, encode_video

    v = small_ds / "videos" / WRIST / "chunk-000/file-000.mp4"
    frames = r.decode_frames(WRIST, 0, np.arange(6))
    encode_video(tmp_path / "short.mp4", frames, 10, VideoSettings(encoder="libx264"))
    shutil.copy(tmp_path / "short.mp4", v)
    with pytest.raises(DataError, match="mismatched frame counts|truncated"):
        DatasetReader(small_ds)
    lazy = DatasetReader(small_ds, verify_videos=False)
    with pytest.raises(DataError, match="tolerance"):
        lazy.decode_frames(WRIST, 1, [3])


def test_reading_never_modifies(small_ds: Path) -> None:
    before = tree_digest(small_ds)
    r = DatasetReader(small_ds)
    r.frame(3)
    S.compute_stats(r)
    assert tree_digest(small_ds) == before
    assert not os.path.exists(small_ds / ".staging")
