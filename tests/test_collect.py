"""vlastack collect: episodes written through DatasetWriter, 1 and 2 workers, resume, crashes."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("metaworld", reason="Meta-World is in the 'sim' extra")

from vlastack.data.format import DatasetReader  # noqa: E402
from vlastack.envs import collect as collect_mod  # noqa: E402
from vlastack.envs.collect import STATE_FILE, attempt_seed, collect  # noqa: E402
from vlastack.errors import ConfigError  # noqa: E402
from vlastack_test_plugins.collect_crash import crash_worker_at  # noqa: E402

SMALL = {"image_size": (32, 32), "progress": False}


def _records(root):
    r = DatasetReader(root)
    return r, sorted((e.extra["env"], e.extra["attempt"], e.extra["seed"]) for e in r.episodes)


def test_collect_two_episodes_in_process(tmp_path):
    out = tmp_path / "ds"
    s = collect("metaworld/reach-v3", out, episodes_per_task=2, workers=1, **SMALL)
    r, recs = _records(out)
    assert r.num_episodes == 2 == s.new_episodes
    assert recs == [
        ("metaworld/reach-v3", k, attempt_seed(0, "metaworld/reach-v3", k)) for k in (0, 1)
    ]
    assert r.episode(0).tasks == ["reach the goal position with the gripper"]
    assert r.info["fps"] == 80 and r.embodiment.robot_type == "sawyer"
    assert s.tasks["metaworld/reach-v3"].successes == 2
    assert sum(e.length for e in r.episodes) == s.new_frames > 0


def _dataset_contents(root):
    """Everything a dataset holds, frame by frame: numeric columns, tasks, episode boundaries and
    metadata, and every camera frame decoded from the videos."""
    r = DatasetReader(root)
    cols = {k: r.column(k) for k in ("action", "observation.state", "episode_index", "frame_index")}
    tasks = [r.task_of(i) for i in range(r.num_frames)]
    eps = [
        (e.index, e.length, e.dataset_from_index, e.dataset_to_index, e.tasks, e.extra)
        for e in r.episodes
    ]
    frames = {
        k: [r.decode_frames(k, e.index, range(e.length)) for e in r.episodes] for k in r.camera_keys
    }
    return r, cols, tasks, eps, frames


def test_two_workers_give_the_same_episodes_and_resume_adds_no_duplicates(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    collect("metaworld/reach-v3", a, episodes_per_task=2, workers=1, **SMALL)
    collect("metaworld/reach-v3", b, episodes_per_task=1, workers=2, **SMALL)
    again = collect("metaworld/reach-v3", b, episodes_per_task=1, workers=2, **SMALL)
    assert again.new_episodes == 0  # same command twice: nothing to do
    more = collect("metaworld/reach-v3", b, episodes_per_task=2, workers=2, **SMALL)
    assert more.new_episodes == 1
    assert _records(a)[1] == _records(b)[1]
    # The written datasets are the same frame by frame (the worker path writes what the
    # in-process path writes), not just the same (env, attempt, seed) labels.
    ra, cols_a, tasks_a, eps_a, frames_a = _dataset_contents(a)
    rb, cols_b, tasks_b, eps_b, frames_b = _dataset_contents(b)
    assert ra.num_frames == rb.num_frames > 0 and ra.num_episodes == rb.num_episodes == 2
    assert eps_a == eps_b  # boundaries, lengths, per-episode tasks and extra (seed, attempt, ...)
    assert tasks_a == tasks_b and ra.tasks == rb.tasks
    for k in cols_a:  # bitwise: float32 values go through parquet unchanged
        assert cols_a[k].dtype == cols_b[k].dtype
        assert np.array_equal(cols_a[k], cols_b[k]), k
    assert frames_a.keys() == frames_b.keys() and frames_a
    for k in frames_a:
        for fa, fb in zip(frames_a[k], frames_b[k], strict=True):
            assert fa.shape == fb.shape and fa.shape[1:] == (32, 32, 3)
            # The same pixels encoded by the same encoder decode to the same frames.
            assert np.array_equal(fa, fb), k
    state = json.loads((b / STATE_FILE).read_text())
    assert state["pending"] is None and len(state["episodes"]) == 2


def test_resume_after_crash_between_save_and_sidecar(tmp_path):
    out = tmp_path / "ds"
    collect("metaworld/reach-v3", out, episodes_per_task=2, workers=1, **SMALL)
    # Simulate dying after save_episode but before the sidecar recorded it.
    st = json.loads((out / STATE_FILE).read_text())
    last = st["episodes"].pop()
    st["pending"] = last
    st["tasks"]["metaworld/reach-v3"].update(next_attempt=1, kept=1, successes=1)
    (out / STATE_FILE).write_text(json.dumps(st))
    s = collect("metaworld/reach-v3", out, episodes_per_task=2, workers=1, **SMALL)
    assert s.new_episodes == 0
    assert len(_records(out)[1]) == 2


def test_crashed_worker_loses_only_its_episode(tmp_path, monkeypatch):
    monkeypatch.setattr(collect_mod, "run_episode", crash_worker_at("metaworld/reach-v3:1"))
    out = tmp_path / "ds"
    s = collect("metaworld/reach-v3", out, episodes_per_task=2, workers=2, **SMALL)
    # attempt 1 crashes its worker every time: after retries it is recorded as an error and
    # attempt 2 takes its place
    attempts = [a for _, a, _ in _records(out)[1]]
    assert attempts == [0, 2]
    assert s.tasks["metaworld/reach-v3"].errors == 1
    assert any("worker" in m for m in s.messages)


def test_resume_refuses_changed_settings_and_foreign_folders(tmp_path):
    out = tmp_path / "ds"
    collect("metaworld/reach-v3", out, episodes_per_task=1, workers=1, **SMALL)
    with pytest.raises(ConfigError, match="image_size"):
        collect("metaworld/reach-v3", out, episodes_per_task=1, image_size=(48, 48), progress=False)
    other = tmp_path / "other"
    other.mkdir()
    (other / "x.txt").write_text("hi")
    with pytest.raises(ConfigError, match="not a collection output"):
        collect("metaworld/reach-v3", other, **SMALL)
    with pytest.raises(ConfigError, match="Did you mean"):
        collect("metaworld/reech-v3", tmp_path / "n", **SMALL)


def test_cli_collect_prints_summary(tmp_path, capsys):
    from vlastack.cli.main import main

    rc = main(
        [
            "collect",
            "--env",
            "metaworld/reach-v3",
            "--out",
            str(tmp_path / "c"),
            "--episodes-per-task",
            "1",
            "--image-size",
            "32",
            "--json",
        ]
    )
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["new_episodes"] == 1
    assert summary["tasks"]["metaworld/reach-v3"]["kept"] == 1
