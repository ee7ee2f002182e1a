"""Manifest contents, checkpoint hashing, exact re-runs, and the `vlastack eval` CLI."""

from __future__ import annotations

import hashlib
import json

import pytest

from vlastack.cli.main import main
from vlastack.errors import ConfigError
from vlastack.evaluation.manifest import checkpoint_fingerprint, load_manifest
from vlastack.evaluation.reproduce import evaluate_manifest
from vlastack.evaluation.rollout import evaluate
from vlastack_test_plugins import fakes


@pytest.fixture()
def ckpt(tmp_path):
    return fakes.write_fake_checkpoint(tmp_path / "ckpt", action_horizon=6, noise=0.1)


def test_manifest_records_the_protocol(ckpt, tmp_path):
    res = evaluate(
        ckpt,
        "fake/suite",
        episodes_per_task=2,
        seed=3,
        workers=0,
        execute_horizon=4,
        image_size=(24, 20),
        camera="top",
        max_steps=25,
        out_dir=tmp_path / "r",
        progress=False,
    )
    m = load_manifest(tmp_path / "r")
    p = m["protocol"]
    assert p["env"] == "fake/suite" and p["tasks"] == fakes.SUITES["fake/suite"]
    assert (p["execute_horizon"], p["max_steps"], p["image_size"], p["camera"]) == (
        4,
        25,
        [24, 20],
        "top",
    )
    assert p["seeds"]["fake/reach-stuck"] == [2003, 2004]
    assert p["difficulty"]["fake/reach-far"] == "medium"
    weights = (ckpt / "model.safetensors").read_bytes()
    assert m["checkpoint"]["files"] == {"model.safetensors": hashlib.sha256(weights).hexdigest()}
    assert m["versions"]["numpy"] and "mujoco" in m["versions"]
    assert m["host"]["cpu_count"] >= 1
    assert len(m["initial_states"]) == 6
    assert res.records[0].steps <= 25


def test_rerun_from_manifest_reproduces_episodes(ckpt, tmp_path):
    first = evaluate(
        ckpt,
        "fake/suite",
        episodes_per_task=2,
        seed=5,
        workers=0,
        out_dir=tmp_path / "a",
        progress=False,
    )
    again = evaluate_manifest(
        tmp_path / "a" / "manifest.json", out_dir=tmp_path / "b", workers=0, progress=False
    )
    key = [(r.task, r.seed, r.status, r.steps, r.initial_state_sha) for r in first.records]
    assert key == [(r.task, r.seed, r.status, r.steps, r.initial_state_sha) for r in again.records]
    rep = json.loads((tmp_path / "b" / "summary.json").read_text())["reproduction"]
    assert rep["checkpoint_sha_matches"] and rep["initial_states_compared"] == 6
    assert rep["initial_states_mismatched"] == []


def test_rerun_warns_on_a_different_checkpoint_and_state(ckpt, tmp_path):
    evaluate(
        ckpt,
        "fake/reach-easy",
        episodes_per_task=2,
        workers=0,
        out_dir=tmp_path / "a",
        progress=False,
    )
    (ckpt / "model.safetensors").write_bytes(b"other weights")
    m = json.loads((tmp_path / "a" / "manifest.json").read_text())
    m["initial_states"]["fake/reach-easy#1"] = "0" * 16
    (tmp_path / "a" / "manifest.json").write_text(json.dumps(m))
    with pytest.warns(UserWarning) as warned:
        res = evaluate_manifest(tmp_path / "a", workers=0, progress=False)
    text = " ".join(str(w.message) for w in warned)
    assert "not the same checkpoint" in text and "different initial states" in text
    assert res.summary["reproduction"]["initial_states_mismatched"] == ["fake/reach-easy#1"]
    assert checkpoint_fingerprint(ckpt)["weights_sha256"] != m["checkpoint"]["weights_sha256"]


def test_bad_manifest_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{}")
    with pytest.raises(ConfigError, match="protocol"):
        load_manifest(tmp_path)


def test_cli_eval_and_rerun(ckpt, tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(
        [
            "eval",
            str(ckpt),
            "--env",
            "fake/suite",
            "--episodes-per-task",
            "2",
            "--workers",
            "0",
            "--image-size",
            "16",
            "--videos-per-task",
            "1",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "fake/reach-easy" in printed and "overall" in printed
    assert len((out / "episodes.jsonl").read_text().splitlines()) == 6
    assert len(list((out / "videos").glob("*.mp4"))) == 3
    rc = main(
        [
            "eval",
            "--manifest",
            str(out / "manifest.json"),
            "--workers",
            "0",
            "--out",
            str(tmp_path / "rerun"),
            "--no-progress",
        ]
    )
    assert rc == 0
    assert json.loads((tmp_path / "rerun" / "summary.json").read_text())["reproduction"]


def test_cli_reports_an_embodiment_mismatch_without_traceback(tmp_path, capsys):
    ck = fakes.write_fake_checkpoint(tmp_path / "other")
    emb = fakes.embodiment(action_dim=7)
    emb.save(ck / "embodiment.json")
    rc = main(
        [
            "eval",
            str(ck),
            "--env",
            "fake/reach-easy",
            "--workers",
            "0",
            "--out",
            str(tmp_path / "o"),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert "action dim 7 vs 2" in err and "--allow-mismatch" in err and "Traceback" not in err
