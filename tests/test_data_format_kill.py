"""Datasets survive a SIGKILL at every write of an episode save that rolls over into new data and
video files, and of ``finalize``.

(test_data_format.py kills a save that appends to the current files, at a few renames.) One
helper process writes the starting dataset, counts the file-system events of the operation
(file writes, renames, deletes, mkdirs, video encodes), then forks one child per event that
SIGKILLs itself at it, a file write being left half written first. The test opens every folder
with ``DatasetReader`` and the doctor, checks the earlier episodes are intact, then resumes the
writer and appends one episode: nothing lost, nothing duplicated, stats equal to the episodes'.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from vlastack.data import stats as S
from vlastack.data.doctor import diagnose
from vlastack.data.format import DatasetReader, DatasetWriter, Feature

SRC = Path(__file__).resolve().parents[1] / "src"
TESTS = Path(__file__).resolve().parent
CAM = "observation.images.top"
BASE = [6, 8]  # episodes written before the kill
NEXT = 5  # the episode being saved when killed
TOL = 8.0  # grey levels through a lossy codec


def features() -> dict[str, Feature]:
    return {
        CAM: Feature("video", (32, 32, 3)),
        "observation.state": Feature("float32", (4,)),
        "action": Feature("float32", (4,), ["dx", "dy", "dz", "gripper"]),
    }


def create(root: Path) -> DatasetWriter:
    # Files small enough that every episode rolls over into new data, video and episodes files.
    return DatasetWriter.create(
        root,
        fps=10,
        features=features(),
        data_files_size_in_mb=0.001,
        video_files_size_in_mb=0.0005,
    )


def frames(episode: int, length: int) -> list[dict[str, np.ndarray]]:
    """Frame i of episode e: grey 20*i + 3*e, state/action from a seed of e (reproducible)."""
    rng = np.random.default_rng(100 + episode)
    return [
        {
            CAM: np.full((32, 32, 3), (20 * i + 3 * episode) % 256, np.uint8),
            "observation.state": rng.normal(size=4).astype(np.float32),
            "action": rng.normal(size=4).astype(np.float32),
        }
        for i in range(length)
    ]


def add_episode(w: DatasetWriter, episode: int, length: int) -> None:
    for f in frames(episode, length):
        w.add_frame(f, task=f"task {episode % 3}")
    w.save_episode(extra={"n": episode})


HELPER = textwrap.dedent(
    """
    import os, pathlib, shutil, signal, sys, warnings, json
    sys.path.insert(0, {src!r}); sys.path.insert(0, {tests!r})
    warnings.simplefilter("ignore")
    import vlastack.data.writer as F
    from test_data_format_kill import BASE, NEXT, add_episode, create, frames
    out = pathlib.Path(sys.argv[1])

    def save_next(w):
        add_episode(w, len(BASE), NEXT)

    def finalize(w):
        for f in frames(99, 3):  # buffered but never saved: finalize drops them
            w.add_frame(f, task="never saved")
        w.finalize()

    from _kill_points import KillPoints
    kp = KillPoints()
    before = kp.before

    def patch():
        pathlib.Path.write_bytes = kp.half_write(pathlib.Path.write_bytes)
        for obj, name in [(os, "replace"), (os, "rename"), (os, "unlink"), (os, "rmdir"),
                          (pathlib.Path, "mkdir"), (F.pq, "write_table"), (F, "encode_video"),
                          (F, "concat_videos")]:
            setattr(obj, name, before(getattr(obj, name)))

    report = {{}}
    for name, op in [("save", save_next), ("finalize", finalize)]:
        base = out / name / "base"
        w = create(base)
        for e, n in enumerate(BASE):
            add_episode(w, e, n)
        del w  # not finalized: the operation runs on this open writer's state, re-opened
        runs = {{}}
        for k in [None, *range(10_000)]:
            if k is not None and k >= report[name]["events"]:
                break
            root = out / name / ("count" if k is None else f"k{{k:03d}}")
            shutil.copytree(base, root, symlinks=True)
            pid = os.fork()
            if pid == 0:
                kp.kill_at = -1 if k is None else k
                w = F.DatasetWriter.resume(root)
                patch()
                op(w)
                os._exit(10 + kp.events if k is None else 0)
            _, status = os.waitpid(pid, 0)
            code = os.waitstatus_to_exitcode(status)
            if k is None:
                report[name] = {{"events": code - 10, "killed": []}}
            else:
                report[name]["killed"].append(code == -signal.SIGKILL)
    print(json.dumps(report))
    """
)


@pytest.fixture(scope="module")
def killed(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("ds_kill")
    script = out / "helper.py"
    script.write_text(HELPER.format(src=str(SRC), tests=str(TESTS)))
    proc = subprocess.run(
        [sys.executable, str(script), str(out)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads(proc.stdout.strip().splitlines()[-1])


def _kill_points(killed, name: str) -> list[Path]:
    out, report = killed
    r = report[name]
    assert all(r["killed"]) and len(r["killed"]) == r["events"] >= 4, r
    return [out / name / f"k{k:03d}" for k in range(r["events"])]


def _check_intact(root: Path, lengths: list[int]) -> DatasetReader:
    """The committed episodes are exactly ``frames(e, n)``; the stats are theirs."""
    r = DatasetReader(root)
    assert [r.episode(e).length for e in range(r.num_episodes)] == lengths, root
    assert r.num_frames == sum(lengths)
    truth = [f for e, n in enumerate(lengths) for f in frames(e, n)]
    np.testing.assert_array_equal(r.column("action"), np.stack([f["action"] for f in truth]))
    np.testing.assert_array_equal(r.column("index"), np.arange(sum(lengths)))
    for e, n in enumerate(lengths):
        got = r.decode_frames(CAM, e, np.arange(n)).mean(axis=(1, 2, 3))
        assert np.abs(got - (20 * np.arange(n) + 3 * e)).max() < TOL, (root, e)
    # meta/stats.json describes exactly the committed episodes (not one killed mid-save)
    agg = S.aggregate_stats([r.episode_stats(e) for e in range(r.num_episodes)])
    for key in ("action", "observation.state"):
        assert int(r.stats[key]["count"][0]) == sum(lengths), (root, key)
        np.testing.assert_allclose(r.stats[key]["mean"], agg[key]["mean"], rtol=1e-5)
    assert r.tasks == [f"task {e % 3}" for e in range(min(3, len(lengths)))], root
    return r


def _doctor_ok_or_repairable(root: Path, lengths: list[int]) -> None:
    report = diagnose(root)
    if not report.ok:  # repairable: resuming the writer trims what the kill left
        DatasetWriter.resume(root).finalize()
        report = diagnose(root)
    assert report.ok, (root, [f.message for f in report.errors])
    assert report.summary["episodes"] == len(lengths)


def _resume_and_append(root: Path, lengths: list[int]) -> None:
    with DatasetWriter.resume(root) as w:
        assert w.num_episodes == len(lengths)
        add_episode(w, len(lengths), 4)
    r = _check_intact(root, [*lengths, 4])
    assert not r.stats_stale  # the resumed writer rewrote meta/stats.json
    leftovers = [p for p in root.rglob("*") if p.name.endswith(".tmp") or p.name == ".staging"]
    assert not leftovers


def test_killed_rollover_save_keeps_earlier_episodes_and_resumes(killed):
    outcomes, stale = set(), 0
    for root in _kill_points(killed, "save"):
        r = DatasetReader(root)
        lengths = BASE if r.num_episodes == len(BASE) else [*BASE, NEXT]
        outcomes.add(len(lengths))
        stale += _check_intact(root, lengths).stats_stale
        _doctor_ok_or_repairable(root, lengths)
        _resume_and_append(root, lengths)
    assert outcomes == {len(BASE)}  # the commit (info.json) is the last event counted...
    assert stale == 1  # ...and one kill fell between the stats.json and info.json renames
    # ...and the operation really rolled over: new data and video files were being written
    base = killed[0] / "save" / "count"
    assert (base / "data/chunk-000/file-002.parquet").is_file()
    assert (base / f"videos/{CAM}/chunk-000/file-002.mp4").is_file()


def test_killed_finalize_keeps_every_episode_and_resumes(killed):
    for root in _kill_points(killed, "finalize"):
        _check_intact(root, BASE)
        _doctor_ok_or_repairable(root, BASE)
        _resume_and_append(root, BASE)
