"""--executor ray: the same episodes, records and datasets as the process pool, on a local Ray.

One local Ray instance (2 CPUs) serves the module; the CLI test reaches it with --ray-address as
a user reaches a cluster. Tiny real checkpoint in Meta-World for the pool/Ray identity; the
tests' fake envs (tests/vlastack_test_plugins) for crashes and the interrupted-then-resumed run.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

ray = pytest.importorskip(
    "ray", reason="Ray is the optional extra vlastack[ray] (pip install 'vlastack[ray]')"
)

from vlastack.evaluation.rollout import evaluate  # noqa: E402
from vlastack_test_plugins import fakes  # noqa: E402

KW = dict(image_size=(16, 16), progress=False)


@pytest.fixture(scope="module")
def ray_address():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def _outcomes(records):
    return [
        (r.task, r.episode, r.seed, r.status, r.steps, r.steps_to_success, r.initial_state_sha)
        for r in records
    ]


@pytest.mark.sim
def test_metaworld_eval_on_ray_matches_the_pool(ray_address, tmp_path):
    pytest.importorskip("metaworld", reason="Meta-World is in the 'sim' extra")
    from test_eval_metaworld import _checkpoint

    ckpt = _checkpoint(tmp_path / "ckpt")
    kw = dict(
        tasks=["metaworld/reach-v3", "metaworld/push-v3"],
        episodes_per_task=2,
        workers=2,
        max_steps=12,
        execute_horizon=4,
        progress=False,
    )
    pool = evaluate(ckpt, "metaworld/mt10", out_dir=tmp_path / "pool", **kw)
    on_ray = evaluate(ckpt, "metaworld/mt10", out_dir=tmp_path / "ray", executor="ray", **kw)
    assert all(r.status != "error" for r in pool.records), pool.records[0].error
    assert _outcomes(on_ray.records) == _outcomes(pool.records)
    # the same actions, not only the same outcomes: the jerk of the executed actions matches
    np.testing.assert_allclose(
        [r.mean_squared_jerk for r in on_ray.records],
        [r.mean_squared_jerk for r in pool.records],
        rtol=1e-5,
    )
    assert on_ray.manifest["protocol"] == pool.manifest["protocol"]
    assert on_ray.manifest["executor"] == "ray" and pool.manifest["executor"] == "pool"
    assert on_ray.summary["timing"]["executor"] == "ray"
    logged = [json.loads(x) for x in (tmp_path / "ray" / "episodes.jsonl").read_text().splitlines()]
    assert [(d["task"], d["episode"]) for d in logged] == [
        (r.task, r.episode) for r in pool.records
    ]


def test_a_dying_ray_worker_loses_only_its_episode(ray_address, tmp_path, monkeypatch):
    ckpt = fakes.write_fake_checkpoint(tmp_path / "ckpt", action_horizon=8, noise=0.05)
    # seed 1 kills its worker on every attempt; fake/reach-far's episode 0 raises once
    monkeypatch.setenv("VLASTACK_FAKE_CRASH", json.dumps({"exit_seeds": [1]}))
    res = evaluate(ckpt, "fake/reach-easy", episodes_per_task=3, workers=2, executor="ray", **KW)
    assert [r.status for r in res.records] == ["success", "error", "success"]
    bad = res.records[1]
    assert bad.attempts == 2 and bad.error.startswith("worker process died (WorkerCrashedError")
    marker = tmp_path / "once"
    marker.mkdir()
    cfg = {"exit_seeds": [1], "raise_seeds": [2], "once_dir": str(marker)}
    monkeypatch.setenv("VLASTACK_FAKE_CRASH", json.dumps(cfg))
    res = evaluate(ckpt, "fake/reach-easy", episodes_per_task=3, workers=2, executor="ray", **KW)
    assert [r.status for r in res.records] == ["success"] * 3
    assert [r.attempts for r in res.records] == [1, 2, 2]


def test_a_ray_episode_past_its_timeout_is_cancelled_retried_then_an_error(ray_address, tmp_path):
    # 0.5 s per policy call: an episode needs >= 4 s; the limit is 1.5 s
    ckpt = fakes.write_fake_checkpoint(tmp_path / "ckpt", action_horizon=8, latency_s=0.5)
    res = evaluate(
        ckpt,
        "fake/reach-easy",
        episodes_per_task=1,
        workers=1,
        executor="ray",
        episode_timeout_s=1.5,
        **KW,
    )
    (rec,) = res.records
    assert rec.status == "error" and rec.attempts == 2
    assert rec.error == "episode exceeded 1.5 s"


def test_an_interrupted_ray_evaluation_resumes_where_it_stopped(ray_address, tmp_path, capsys):
    import test_eval_resume as resume

    # 0.05 s per policy call: an episode takes ~0.4 s, time enough to interrupt the run midway
    ckpt = fakes.write_fake_checkpoint(tmp_path / "ckpt", action_horizon=8, latency_s=0.05)
    out = tmp_path / "res"
    argv = resume.eval_args(ckpt, out, "--workers", 2, "--executor", "ray")
    argv += ["--ray-address", ray_address]  # the module's Ray, reached as a user reaches one
    summary = resume.check_resumed(ckpt, out, argv, capsys)
    assert summary["timing"]["executor"] == f"ray@{ray_address}"


@pytest.mark.sim
def test_collect_on_ray_writes_the_same_dataset(ray_address, tmp_path):
    pytest.importorskip("metaworld", reason="Meta-World is in the 'sim' extra")
    from vlastack.data.format import DatasetReader
    from vlastack.envs.collect import collect

    # workers=1: in this process with the pool, one Ray task at a time with Ray
    kw = dict(episodes_per_task=2, workers=1, image_size=(32, 32), progress=False)
    collect("metaworld/reach-v3", tmp_path / "pool", **kw)
    s = collect("metaworld/reach-v3", tmp_path / "ray", executor="ray", **kw)
    assert s.new_episodes == 2
    a, b = DatasetReader(tmp_path / "pool"), DatasetReader(tmp_path / "ray")
    assert [e.extra for e in a.episodes] == [e.extra for e in b.episodes]
    for key in ("action", "observation.state"):
        np.testing.assert_array_equal(a.column(key), b.column(key))
