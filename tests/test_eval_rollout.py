"""evaluate(): seeds, chunk execution, worker processes, crash retry, embodiment checks, outputs.

Uses the point-reaching fake env and scripted policy of the tests' plugin (vlastack_test_plugins).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from vlastack.embodiment import EmbodimentSpec
from vlastack.errors import ConfigError
from vlastack.evaluation.rollout import episode_seed, evaluate, resolve_tasks
from vlastack_test_plugins import fakes

KW = dict(image_size=(16, 16), progress=False)


@pytest.fixture()
def ckpt(tmp_path):
    return fakes.write_fake_checkpoint(tmp_path / "ckpt", action_horizon=8, noise=0.05)


def _comparable(records):
    return [
        (r.task, r.episode, r.seed, r.status, r.steps, r.steps_to_success, r.initial_state_sha)
        for r in records
    ]


def test_suite_expands_and_seeds_are_deterministic(ckpt, tmp_path):
    assert resolve_tasks("fake/suite") == list(fakes.SUITES["fake/suite"])
    assert resolve_tasks("fake/reach-easy") == ["fake/reach-easy"]
    r1 = evaluate(ckpt, "fake/suite", episodes_per_task=3, seed=7, workers=0, **KW)
    r2 = evaluate(ckpt, "fake/suite", episodes_per_task=3, seed=7, workers=0, **KW)
    assert _comparable(r1.records) == _comparable(r2.records)
    assert (
        [r.seed for r in r1.records if r.task == "fake/reach-far"]
        == [episode_seed(7, 1, e, 3) for e in range(3)]
        == [1007, 1008, 1009]
    )
    per_task = r1.summary["per_task"]
    assert per_task["fake/reach-easy"]["success_rate"] == 1.0
    assert per_task["fake/reach-stuck"]["success_rate"] == 0.0  # too slow to arrive in 30 steps
    assert r1.summary["per_difficulty"]["hard"]["completed"] == 3
    r3 = evaluate(ckpt, "fake/suite", episodes_per_task=3, seed=8, workers=0, **KW)
    assert [r.initial_state_sha for r in r3.records] != [r.initial_state_sha for r in r1.records]


def test_execute_horizon_sets_how_often_the_policy_is_called(ckpt):
    full = evaluate(ckpt, "fake/reach-stuck", episodes_per_task=1, workers=0, **KW).records[0]
    assert full.steps == 30 and full.num_chunks == 4  # ceil(30 / 8): default = checkpoint's 8
    two = evaluate(
        ckpt, "fake/reach-stuck", episodes_per_task=1, workers=0, execute_horizon=2, **KW
    ).records[0]
    assert two.num_chunks == 15
    assert len(two.latencies_ms) == 15
    assert two.extra["execute_horizon"] == 2


def test_results_folder_layout_and_videos(ckpt, tmp_path):
    out = tmp_path / "res"
    res = evaluate(
        ckpt,
        "fake/suite",
        episodes_per_task=2,
        workers=0,
        video_episodes_per_task=1,
        out_dir=out,
        **KW,
    )
    lines = (out / "episodes.jsonl").read_text().splitlines()
    assert len(lines) == 6
    assert json.loads(lines[0])["task"] == "fake/reach-easy"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["overall"]["success_rate"] == res.success_rate
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["protocol"]["seeds"]["fake/reach-easy"] == [0, 1]
    videos = sorted(p.name for p in (out / "videos").iterdir())
    assert videos == [
        "fake-reach-easy_ep0_success.mp4",
        "fake-reach-far_ep0_success.mp4",
        "fake-reach-stuck_ep0_fail.mp4",
    ]
    filmed = [r for r in res.records if r.video]
    assert {r.episode for r in filmed} == {0}
    assert all((out / r.video).stat().st_size > 1000 for r in filmed)


def _crash(monkeypatch, **cfg):
    monkeypatch.setenv("VLASTACK_FAKE_CRASH", json.dumps(cfg))


def test_an_always_failing_episode_is_an_error_not_a_failure(ckpt, monkeypatch):
    _crash(monkeypatch, raise_seeds=[1])
    res = evaluate(ckpt, "fake/reach-easy", episodes_per_task=3, workers=0, **KW)
    statuses = [r.status for r in res.records]
    assert statuses == ["success", "error", "success"]
    bad = res.records[1]
    assert bad.attempts == 2 and "injected failure at seed 1" in bad.error
    o = res.summary["overall"]
    assert (o["completed"], o["errors"], o["success_rate"]) == (2, 1, 1.0)


def test_worker_processes_match_inline_including_errors(ckpt, monkeypatch):
    _crash(monkeypatch, raise_seeds=[1001])  # fake/reach-far episode 1 always raises
    inline = evaluate(ckpt, "fake/suite", episodes_per_task=2, workers=0, **KW)
    pooled = evaluate(ckpt, "fake/suite", episodes_per_task=2, workers=2, **KW)
    assert _comparable(inline.records) == _comparable(pooled.records)
    assert [r.status for r in pooled.records].count("error") == 1
    assert pooled.records[3].error and "seed 1001" in pooled.records[3].error
    assert pooled.summary["timing"]["workers"] == 2


@pytest.mark.parametrize("workers", [0, 1])
def test_a_vlastack_error_mid_episode_is_an_episode_error(ckpt, monkeypatch, workers):
    _crash(monkeypatch, raise_seeds=[0], as_config_error=True)
    res = evaluate(ckpt, "fake/reach-easy", episodes_per_task=2, workers=workers, **KW)
    assert [r.status for r in res.records] == ["error", "success"]
    assert "injected config error" in res.records[0].error


class _LoudPolicy:
    """Asks for actions twice the bounds."""

    def reset(self):
        pass

    def infer(self, obs):
        return {"actions": np.full((4, 2), 2.0, dtype=np.float32)}


def test_out_of_bounds_actions_are_clipped_and_counted():
    rec = evaluate(_LoudPolicy, "fake/reach-stuck", episodes_per_task=1, workers=0, **KW).records[0]
    assert rec.extra["clipped_steps"] == rec.steps == 30
    raw = evaluate(
        _LoudPolicy, "fake/reach-stuck", episodes_per_task=1, workers=0, clip_actions=False, **KW
    ).records[0]
    assert raw.extra["clipped_steps"] == 0


def test_a_transient_failure_is_retried_once(ckpt, monkeypatch, tmp_path):
    _crash(monkeypatch, raise_seeds=[0], once_dir=str(tmp_path))
    res = evaluate(ckpt, "fake/reach-easy", episodes_per_task=2, workers=0, **KW)
    assert [r.status for r in res.records] == ["success", "success"]
    assert [r.attempts for r in res.records] == [2, 1]


def test_a_dying_worker_is_replaced_and_its_episode_retried(ckpt, monkeypatch, tmp_path):
    _crash(monkeypatch, exit_seeds=[1], once_dir=str(tmp_path))
    res = evaluate(ckpt, "fake/reach-easy", episodes_per_task=3, workers=1, **KW)
    assert [r.status for r in res.records] == ["success"] * 3
    assert res.records[1].attempts == 2


def test_a_worker_dying_twice_records_an_error(ckpt, monkeypatch):
    _crash(monkeypatch, exit_seeds=[0])
    res = evaluate(ckpt, "fake/reach-easy", episodes_per_task=2, workers=1, **KW)
    assert [r.status for r in res.records] == ["error", "success"]
    assert "worker process died (exit code 3)" in res.records[0].error


def _mismatched_checkpoint(tmp_path):
    ck = fakes.write_fake_checkpoint(tmp_path / "other", action_horizon=4)
    emb = fakes.embodiment(action_dim=3)
    emb.robot_type = "three_dof_arm"
    emb.save(ck / "embodiment.json")
    return ck


def test_embodiment_mismatch_is_explained(tmp_path):
    ck = _mismatched_checkpoint(tmp_path)
    with pytest.raises(ConfigError) as exc:
        evaluate(ck, "fake/reach-easy", episodes_per_task=1, workers=0, **KW)
    msg = str(exc.value)
    assert "three_dof_arm" in msg and "action dim 3 vs 2" in msg
    assert "--action-remap pad" in msg and "--allow-mismatch" in msg
    with pytest.raises(ConfigError, match="action dim 3 vs 2"):  # also from a worker process
        evaluate(ck, "fake/reach-easy", episodes_per_task=1, workers=1, **KW)


def test_embodiment_mismatch_can_be_remapped_with_a_warning(tmp_path):
    ck = _mismatched_checkpoint(tmp_path)
    with pytest.warns(UserWarning, match="remapped"):
        res = evaluate(
            ck, "fake/reach-easy", episodes_per_task=2, workers=0, action_remap="pad", **KW
        )
    assert all(r.status == "success" for r in res.records)
    assert (
        "action dim 3 vs 2" in res.manifest["protocol"]["action_remap_applied"]["fake/reach-easy"]
    )


class _ZeroPolicy:
    """A picklable policy factory output that never moves (every episode fails)."""

    metadata = {"execute_horizon": 5, "embodiment": fakes.embodiment().to_dict()}

    def reset(self):
        pass

    def infer(self, obs):
        return {"actions": np.zeros((5, 2), dtype=np.float32)}


def test_policy_factory_and_zero_jerk(tmp_path):
    res = evaluate(_ZeroPolicy, "fake/reach-easy", episodes_per_task=2, workers=0, **KW)
    assert res.success_rate == 0.0
    assert res.summary["overall"]["mean_squared_jerk"] == 0.0
    assert res.summary["overall"]["chunk_jump"] == 0.0
    assert res.manifest["checkpoint"]["path"] is None
    assert isinstance(EmbodimentSpec.from_dict(_ZeroPolicy.metadata["embodiment"]), EmbodimentSpec)


def test_bad_arguments_are_config_errors(ckpt, tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        evaluate(tmp_path / "nope", "fake/reach-easy", **KW)
    with pytest.raises(ConfigError, match="action_remap"):
        evaluate(ckpt, "fake/reach-easy", action_remap="guess", **KW)
    with pytest.raises(ConfigError, match="unknown environment 'fake/nope'"):
        evaluate(ckpt, "fake/nope", episodes_per_task=1, workers=0, **KW)


class _RandomChunkPolicy:
    """A picklable policy factory output: seeded random (4, 2) chunks, every one recorded."""

    metadata = {"execute_horizon": 4, "embodiment": fakes.embodiment().to_dict()}
    chunks: list[np.ndarray] = []

    def reset(self):
        self._rng = np.random.default_rng(5)
        type(self).chunks.clear()

    def infer(self, obs):
        chunk = self._rng.uniform(-0.9, 0.9, size=(4, 2)).astype(np.float32)
        type(self).chunks.append(chunk)
        return {"actions": chunk}


def test_ensembling_needs_the_runtime_or_uses_it(ckpt, monkeypatch):
    try:
        from vlastack.serving.runtime import TemporalEnsembler  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="ensemble"):
            evaluate(ckpt, "fake/reach-easy", episodes_per_task=1, workers=0, ensemble=True, **KW)
        return
    rec = evaluate(
        ckpt, "fake/reach-easy", episodes_per_task=1, workers=0, ensemble=True, **KW
    ).records[0]
    assert rec.num_chunks == rec.steps  # queried every step

    # The executed actions are ACT's temporal ensemble of the recorded chunks: the action for
    # step t averages every chunk's prediction for t (chunk s predicts t at row t - s), oldest
    # first, with weights exp(-m * i) normalized to 1, m = 0.01 (ACT, Zhao et al. 2023 §3.5).
    executed: list[np.ndarray] = []
    step = fakes.FakeReachEnv.step

    def recording_step(self, action):
        executed.append(np.array(action, dtype=np.float64, copy=True))
        return step(self, action)

    monkeypatch.setattr(fakes.FakeReachEnv, "step", recording_step)
    rec = evaluate(
        _RandomChunkPolicy,
        "fake/reach-easy",
        episodes_per_task=1,
        workers=0,
        ensemble=True,
        max_steps=12,
        **KW,
    ).records[0]
    chunks = _RandomChunkPolicy.chunks
    assert len(chunks) == len(executed) == rec.steps == 12
    horizon, m = 4, 0.01
    for t, got in enumerate(executed):
        preds = np.stack([chunks[s][t - s] for s in range(max(0, t - horizon + 1), t + 1)])
        assert len(preds) == min(t + 1, horizon)
        w = np.exp(-m * np.arange(len(preds)))
        want = (w / w.sum()) @ preds.astype(np.float64)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6, err_msg=f"step {t}")
    # not a copy of the newest chunk's first action (what open-loop re-planning would execute)
    assert not np.allclose(executed[5], chunks[5][0], atol=1e-3)
