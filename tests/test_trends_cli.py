"""``flower`` and ``hierarchy`` through the real commands at tiny settings: train (2 steps on the
LeRobot fixture), eval (the fake env), serve (two rates over the wire; a plain client reads the
actions, the reply carries the subtask), export (ONNX of the head, checked in onnxruntime)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from _export_tiny import tiny_obs, tiny_stats, write_tiny_checkpoint
from vlastack.cli.main import main

TINY = {
    "flower": dict(
        head="flower", trunk_layers=1, head_kwargs={"width": 32, "depth": 1, "num_heads": 2}
    ),
    "hierarchy": dict(head="flow_matching", hierarchy=True, trunk_layers=1, gripper_index=3),
}


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _ckpt(tmp_path, name):
    kw = dict(TINY[name])
    return write_tiny_checkpoint(tmp_path / name, kw.pop("head"), **kw)


@pytest.mark.slow  # builds the recipe's tiny SigLIP + Llama-class LM and trains 2 steps: ~30 s
@pytest.mark.parametrize("name", ["flower", "hierarchy"])
def test_train_two_steps_and_the_checkpoint_acts(tmp_path, lerobot_fixture, name):
    from vlastack.policy import Policy

    args = [
        "train",
        name,
        "--data",
        str(lerobot_fixture),
        f"--out_dir={tmp_path}",
        "--batch_size=2",
        "--log=none",
        "--progress=false",
        "--val_fraction=0.34",
        "--val_batches=1",
        "--num_threads=1",
        "--steps=2",
    ]
    assert main(args) == 0
    policy = Policy.from_checkpoint(tmp_path / "checkpoints" / "last")
    cfg = policy.model.config
    if name == "flower":
        assert len(policy.model.language.model.get_decoder().layers) == 2  # of 4: stored so
    assert policy.supports_hierarchy == (name == "hierarchy") and cfg.action_horizon == 10


@pytest.mark.parametrize("name", ["flower", "hierarchy"])
def test_eval_runs_episodes(tmp_path, name, capsys):
    kw = dict(TINY[name], cameras=["top"], action_dim=2, gripper_index=None)
    stats = {
        "observation.state": tiny_stats(4)["observation.state"],
        "action": tiny_stats(2)["action"],
    }
    ck = write_tiny_checkpoint(tmp_path / name, kw.pop("head"), stats=stats, **kw)
    out = tmp_path / "r"
    args = ["--episodes-per-task", "1", "--image-size", "16", "--workers", "0", "--no-progress"]
    assert main(["eval", str(ck), "--env", "fake/reach-easy", "--out", str(out), *args]) == 0
    records = [json.loads(x) for x in (out / "episodes.jsonl").read_text().splitlines()]
    assert len(records) == 1 and records[0]["status"] in ("success", "failure")  # not "error"
    assert (
        records[0]["steps"] > 0
        and "headline_success_rate" in json.loads((out / "summary.json").read_text())["overall"]
    )


def test_serve_two_rates_over_the_wire(tmp_path):
    from vlastack.policy import Policy
    from vlastack.serving.client import PolicyClient
    from vlastack.serving.hierarchy import SUBTASK_KEY, TwoRatePolicy
    from vlastack.serving.server import ServerThread

    policy = Policy.from_checkpoint(_ckpt(tmp_path, "hierarchy"))
    clock = {"t": 0.0}
    served = TwoRatePolicy(policy, high_level_hz=2.0, control_hz=20.0, clock=lambda: clock["t"])
    with ServerThread(served) as srv:
        client = PolicyClient("127.0.0.1", srv.port)
        assert client.metadata["high_level_hz"] == 2.0
        assert client.metadata["control_hz"] == 20.0
        ran = []
        for k in range(6):  # a request every 0.2 s: the high level every 0.5 s
            clock["t"] = 0.2 * k
            out = client.infer(tiny_obs(k))
            assert out["actions"].shape == (4, 4) and np.isfinite(out["actions"]).all()
            assert out[SUBTASK_KEY] in policy.model.hierarchy.vocab
            ran.append(out["high_level_ran"])
        assert ran == [True, False, False, True, False, True]  # t = 0, 0.6 (≥ 0.5), 1.0
        client.close()


def test_serve_refuses_two_rates_for_a_flat_checkpoint(tmp_path, capsys):
    ck = _ckpt(tmp_path, "flower")
    assert main(["serve", str(ck), "--high-level-hz", "1", "--threads", "1"]) != 0
    err = capsys.readouterr().err
    assert "hierarchy=True" in err and "--high-level-hz" in err


@pytest.mark.parametrize("name", ["flower", "hierarchy"])
def test_onnx_export_of_the_head(tmp_path, name, capsys):
    ck = _ckpt(tmp_path, name)
    out = tmp_path / "onnx"
    assert main(["export", "onnx", str(ck), "--out", str(out), "--parts", "step,sampler"]) == 0
    printed = capsys.readouterr().out
    head = TINY[name]["head"]
    assert f"{head}_sampler.onnx" in printed and "max |err|" in printed
