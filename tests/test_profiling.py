"""Per-stage latency (`vlastack bench latency`): stages are timed only while recording, cover the
parts a model has, and each reports the time spent in it (checked on a virtual clock)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _export_tiny import write_tiny_checkpoint  # noqa: E402
from vlastack.profiling import profile_policy, record_stages, stage, synthetic_observation  # noqa: E402


def test_stage_records_only_inside_record_stages() -> None:
    with stage("head"):  # not recording: a no-op
        time.sleep(0.001)
    with record_stages() as rec:
        with stage("head"):
            time.sleep(0.002)
        with stage("head"):  # the same stage twice in one call adds up
            time.sleep(0.002)
    assert set(rec) == {"head"} and rec["head"] >= 0.004
    with stage("vision"):
        pass
    assert "vision" not in rec


def test_profile_covers_the_model_stages(tmp_path: Path) -> None:
    from vlastack.policy import Policy

    ckpt = write_tiny_checkpoint(tmp_path / "ck", "flow_matching")
    policy = Policy.from_checkpoint(ckpt)
    obs = synthetic_observation(policy)
    assert set(policy.cameras) == {k.split(".")[-1] for k in obs if k.startswith("observation.im")}
    r = profile_policy(policy, obs, iters=5, warmup=1)
    names = [row["stage"] for row in r["stages"]]
    # the tiny model has no language model: that stage is absent, not reported as zero
    assert names == ["preprocess", "normalize", "vision", "head", "unnormalize", "other"]
    assert all(row["mean_ms"] > 0 for row in r["stages"] if row["stage"] != "other")
    with pytest.raises(ValueError, match="iters"):
        profile_policy(policy, obs, iters=0)


def test_each_stage_reports_the_time_spent_in_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A virtual clock read by the profiler, advanced by a different amount inside each stage
    (and once outside every stage, in the state projection): each stage must report exactly its
    own amount, 'other' the outside one, the total their sum. A stage boundary in the wrong
    place, a stage that is not timed or one timed twice moves time between rows."""
    import types

    import vlastack.profiling as profiling
    from vlastack.policy import Policy

    now = [100.0]
    monkeypatch.setattr(profiling, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))

    def slow(fn, ms):
        def wrapped(*args, **kwargs):
            now[0] += ms / 1e3
            return fn(*args, **kwargs)

        return wrapped

    policy = Policy.from_checkpoint(write_tiny_checkpoint(tmp_path / "ck", "flow_matching"))
    policy.use_runner("eager")  # the head's own sample_actions is what this test slows down
    obs = synthetic_observation(policy)
    spent = {"preprocess": 1, "normalize": 2, "vision": 3, "head": 4, "unnormalize": 5}
    monkeypatch.setattr(policy, "parse", slow(policy.parse, 1))
    norm, model = policy.normalizer, policy.model
    monkeypatch.setattr(norm, "normalize", slow(norm.normalize, 2))
    model.vision.register_forward_pre_hook(lambda *_: slow(lambda: None, 3)())
    monkeypatch.setattr(model.head, "sample_actions", slow(model.head.sample_actions, 4))
    monkeypatch.setattr(norm, "unnormalize_actions", slow(norm.unnormalize_actions, 5))
    model.state_proj.register_forward_pre_hook(lambda *_: slow(lambda: None, 6)())  # no stage

    r = profile_policy(policy, obs, iters=3, warmup=1)
    got = {row["stage"]: row for row in r["stages"]}
    assert list(got) == [*spent, "other"]
    for name, ms in {**spent, "other": 6}.items():
        for key in ("mean_ms", "p50_ms", "p95_ms"):
            assert got[name][key] == pytest.approx(ms, abs=1e-6), (name, key)
        assert got[name]["share"] == pytest.approx(ms / 21, abs=1e-6), name
    assert r["total"]["mean_ms"] == pytest.approx(21, abs=1e-6)


def test_cli_prints_a_table_or_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from vlastack.cli.main import main

    ckpt = write_tiny_checkpoint(tmp_path / "ck", "act")
    assert main(["bench", "latency", str(ckpt), "--iters", "3", "--warmup", "0", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["iters"] == 3 and out["total"]["p50_ms"] > 0
    assert "head" in [row["stage"] for row in out["stages"]]
    assert main(["bench", "latency", str(ckpt), "--iters", "2", "--warmup", "0"]) == 0
    text = capsys.readouterr().out
    assert "vision" in text and "total" in text
    assert main(["bench", "latency", str(ckpt), "--iters", "0"]) == 2  # a clear error, exit 2


def test_pick_inference_threads_keeps_the_fastest_and_resets_the_policy(tmp_path: Path) -> None:
    import torch

    from vlastack.policy import Policy
    from vlastack.profiling import pick_inference_threads

    policy = Policy.from_checkpoint(write_tiny_checkpoint(tmp_path / "ck", "flow_matching"))
    obs = synthetic_observation(policy)
    first = policy.infer(obs)["actions"]
    policy.reset()
    best, p50 = pick_inference_threads(policy, candidates=[1, 2], calls=2)
    assert set(p50) == {1, 2} and best == min(p50, key=lambda n: p50[n])
    assert torch.get_num_threads() == best
    # the calibration calls left no history and the sampler seed where it was
    np.testing.assert_allclose(policy.infer(obs)["actions"], first, atol=1e-5)


def test_serve_threads_flag(tmp_path: Path) -> None:
    import argparse

    import torch

    from vlastack.cli import serve

    parser = argparse.ArgumentParser()
    serve.add_parser(parser.add_subparsers())
    ckpt = write_tiny_checkpoint(tmp_path / "ck", "l1")
    serve._load_policy(parser.parse_args(["serve", str(ckpt), "--threads", "1"]))
    assert torch.get_num_threads() == 1
    from vlastack.errors import ConfigError

    with pytest.raises(ConfigError, match="--threads"):
        serve._load_policy(parser.parse_args(["serve", str(ckpt), "--threads", "-1"]))


@pytest.mark.parametrize(
    "user_env,expect",
    [
        ({}, {"GOMP_SPINCOUNT": "10000", "OMP_WAIT_POLICY": None}),
        ({"OMP_WAIT_POLICY": "PASSIVE"}, {"GOMP_SPINCOUNT": None, "OMP_WAIT_POLICY": "PASSIVE"}),
        ({"GOMP_SPINCOUNT": "50"}, {"GOMP_SPINCOUNT": "50", "OMP_WAIT_POLICY": None}),
    ],
)
def test_openmp_wait_default_is_a_short_spin_and_yields_to_the_user(user_env, expect):
    """Importing vlastack sets a bounded OpenMP spin (not PASSIVE, whose futex wake per op made
    2-thread batch-1 inference ~3x slower) unless the user set their own wait policy."""
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(user_env)
    code = (
        "import os, json, vlastack; "
        "print(json.dumps({k: os.environ.get(k) for k in ('GOMP_SPINCOUNT', 'OMP_WAIT_POLICY')}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == expect
