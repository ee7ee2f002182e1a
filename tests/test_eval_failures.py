"""``vlastack eval`` when things go wrong (issue 27.5): a checkpoint that cannot load is a clear
error and a non-zero exit before any episode runs; a run where every episode errored exits
non-zero with the reason; errored episodes count as failures in the headline success rate."""

from __future__ import annotations

import json

import pytest

from _export_tiny import write_tiny_checkpoint
from vlastack.cli.main import main
from vlastack.evaluation.metrics import EpisodeRecord, aggregate
from vlastack_test_plugins import fakes

ARGS = ["--episodes-per-task", "2", "--image-size", "16", "--workers", "0", "--no-progress"]


def test_truncated_weights_exit_non_zero_with_the_reason(tmp_path, capsys):
    ck = write_tiny_checkpoint(tmp_path / "ck", "l1")
    weights = ck / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    code = main(["eval", str(ck), "--env", "fake/reach-easy", "--out", str(tmp_path / "r"), *ARGS])
    err = capsys.readouterr().err
    assert code != 0
    assert "model.safetensors" in err and ("truncated" in err or "corrupt" in err), err
    assert "Traceback" not in err
    assert not (tmp_path / "r" / "episodes.jsonl").exists()  # failed before any episode


def test_every_episode_errored_exits_non_zero(tmp_path, capsys, monkeypatch):
    ck = fakes.write_fake_checkpoint(tmp_path / "ck", action_horizon=8, noise=0.05)
    monkeypatch.setenv("VLASTACK_FAKE_CRASH", json.dumps({"raise_seeds": [0, 1]}))
    code = main(["eval", str(ck), "--env", "fake/reach-easy", "--out", str(tmp_path / "r"), *ARGS])
    err = capsys.readouterr().err
    assert code == 1
    assert "every episode errored" in err and "injected failure at seed" in err, err


def test_one_errored_episode_still_exits_zero_and_counts_as_a_failure(
    tmp_path, capsys, monkeypatch
):
    ck = fakes.write_fake_checkpoint(tmp_path / "ck", action_horizon=8, noise=0.05)
    monkeypatch.setenv("VLASTACK_FAKE_CRASH", json.dumps({"raise_seeds": [1]}))
    out = tmp_path / "r"
    assert main(["eval", str(ck), "--env", "fake/reach-easy", "--out", str(out), *ARGS]) == 0
    printed = capsys.readouterr().out
    overall = json.loads((out / "summary.json").read_text())["overall"]
    assert overall["headline_success_rate"] == 0.5  # 1 success of 2 episodes, 1 errored
    assert "50.0" in printed and "errors" in printed


def _rec(status: str, ep: int) -> EpisodeRecord:
    return EpisodeRecord(task="a", episode=ep, seed=ep, status=status, steps=5)


def test_headline_rate_counts_errors_as_failures():
    agg = aggregate([_rec("success", 0), _rec("failure", 1), _rec("error", 2)])
    assert agg["headline_success_rate"] == pytest.approx(1 / 3)
    assert agg["headline_ci95_low"] < 1 / 3 < agg["headline_ci95_high"]
    assert agg["success_rate"] == 0.5 and agg["errors"] == 1  # over completed ones, as before
    assert aggregate([_rec("error", 0)])["headline_success_rate"] == 0.0
