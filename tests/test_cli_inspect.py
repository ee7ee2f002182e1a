"""``vlastack inspect``: the checkpoint's I/O explained from its files alone. The text names the
cameras, sizes, units and action semantics; ``--json`` matches config.json, normalization.json,
the weights and the metadata a served ``Policy`` really sends; mixtures list every member; a
folder that is not a checkpoint is a ConfigError saying what a checkpoint holds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from _export_tiny import tiny_config
from test_mixture_eval_serve import write_mixture_checkpoint
from vlastack.cli.inspect_cmd import describe_checkpoint
from vlastack.cli.main import main
from vlastack.embodiment import CameraSpec, EmbodimentSpec, VectorSpec
from vlastack.errors import ConfigError


def _robot() -> EmbodimentSpec:
    return EmbodimentSpec(
        robot_type="so100",
        cameras=[CameraSpec("front", 48, 64), CameraSpec("wrist", 32, 32)],
        state=VectorSpec(["shoulder", "elbow", "wrist", "gripper"], units=["rad"] * 3 + ["m"]),
        action=VectorSpec(
            ["d_shoulder", "d_elbow", "d_wrist", "gripper"],
            units=["rad", "rad", "rad", "m"],
            kind="delta",
            low=[-0.1, -0.1, -0.1, 0.0],
            high=[0.1, 0.1, 0.1, 0.04],
            gripper_index=3,
        ),
        control_hz=15.0,
    )


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny minilm + l1 VLA for the robot above: min-max actions, mean-std state, H=4, exec 3."""
    import torch

    from vlastack.data.normalization import Normalizer
    from vlastack.models.vla import build_vla
    from vlastack.training.checkpoint import save_checkpoint

    torch.manual_seed(0)
    cfg = tiny_config("l1", language="minilm")
    rng = np.random.default_rng(1)
    stats = {
        "observation.state": {"mean": rng.normal(0, 1, 4).tolist(), "std": [0.5, 1, 2, 0.01]},
        "action": {"min": (-rng.uniform(0, 1, 4)).tolist(), "max": rng.uniform(1, 2, 4).tolist()},
    }
    norm = Normalizer(stats, {"observation.state": "mean_std", "action": "min_max"})
    return save_checkpoint(
        tmp_path_factory.mktemp("single") / "checkpoints",
        250,
        weights=build_vla(cfg).state_dict(),
        config={
            "recipe": "tiny_test",
            "model": cfg.to_dict(),
            "train": {"data": ["/data/so100_pick"], "seed": 0},
            "recipe_extra": {"execute_horizon": 3},
        },
        normalization=norm.to_dict(),
        embodiment=_robot(),
    )


@pytest.fixture(scope="module")
def mixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mixture_checkpoint(tmp_path_factory.mktemp("mix") / "checkpoints")


def _json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict:
    assert main(["inspect", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_text_names_cameras_sizes_units_and_action_semantics(single: Path, capsys) -> None:
    assert main(["inspect", str(single)]) == 0
    out = capsys.readouterr().out
    for text in (
        "step 250",
        "recipe: tiny_test",
        "vision: small_cnn",
        "language: minilm",
        "head: l1",
        "action_horizon 4",
        "execute_horizon 3 (recipe)",
        "observation.images.front: uint8 H×W×3 RGB, upright; resized to 16×16; robot camera 48×64",
        "observation.images.wrist: uint8 H×W×3 RGB, upright; resized to 16×16; robot camera 32×32",
        "observation.state: float32 (4,)",
        "task: language instruction (minilm)",
        "actions: float32 (4, 4), delta",
        "at 15 Hz",
        "robot so100 @ 15 Hz",
        "trained on: /data/so100_pick",
        "observation.state: mean_std (stats: mean, std)",
        "action: min_max (stats: max, min)",
        f"vlastack serve {single}",
    ):
        assert text in out, text
    action_rows = out.split("OUTPUTS")[1].split("NORMALIZATION")[0]
    assert "gripper" in action_rows and "rad" in action_rows and "[0, 0.04]" in action_rows
    assert "min" in action_rows and "mean" not in action_rows  # the action's own mode's columns
    assert "WARNING" not in out


def test_json_matches_the_checkpoint_files_and_the_served_policy(single: Path, capsys) -> None:
    from safetensors.torch import load_file

    from vlastack.policy import Policy

    info = _json([str(single)], capsys)
    config = json.loads((single / "config.json").read_text())
    norm = json.loads((single / "normalization.json").read_text())
    assert info["step"] == 250 and info["format_version"] == 1
    for k in ("action_horizon", "obs_horizon", "state_dim", "action_dim", "cameras", "head"):
        assert info["model"][k] == config["model"][k], k
    weights = load_file(str(single / "model.safetensors"))
    assert info["parameters"]["total"] == sum(t.numel() for t in weights.values())
    (robot,) = info["embodiments"]
    for key, vec in (
        ("observation.state", robot["inputs"]["state"]),
        ("action", robot["outputs"]["action"]),
    ):
        assert vec["normalization"] == norm["modes"][key]
        for stat, values in norm["stats"][key].items():
            assert [r[stat] for r in vec["dims"]] == pytest.approx(values), (key, stat)
    assert [r["unit"] for r in robot["outputs"]["action"]["dims"]] == ["rad"] * 3 + ["m"]
    assert robot["outputs"]["action"]["gripper_index"] == 3
    assert robot["inputs"]["instruction"]["expected"] is True
    # The client view is what `vlastack serve` really sends, without building the model.
    policy = Policy.from_checkpoint(single)
    served = json.loads(json.dumps(policy.metadata))
    assert robot["client"]["metadata"] == served
    assert list(robot["client"]["send"]) == policy.observation_keys()
    assert robot["outputs"]["execute_horizon"] == policy.execute_horizon == 3


def test_mixture_lists_every_member_and_embodiment_picks_one(mixture: Path, capsys) -> None:
    from vlastack.policy import Policy

    run_dir = mixture.parent.parent  # a run folder resolves to checkpoints/last
    assert main(["inspect", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "mixture of 2 robots (default 'arm')" in out
    assert "member 'arm': robot arm3" in out and "member 'point': robot fake_point" in out
    assert "zero-padded to 6" in out  # the point robot's 4-d state in the 6-d model
    assert "--embodiment point" in out

    info = _json([str(mixture), "--embodiment", "point"], capsys)
    assert info["mixture"] == {"default": "arm", "members": ["arm", "point"]}
    (point,) = info["embodiments"]
    assert point["inputs"]["state"]["dim"] == 4 and point["outputs"]["action"]["dim"] == 2
    assert point["inputs"]["state_padded_to"] == 6 and point["outputs"]["action_padded_from"] == 3
    members = json.loads((mixture / "normalization.json").read_text())["members"]
    want = next(m for m in members if m["name"] == "point")["stats"]["action"]["mean"]
    assert [r["mean"] for r in point["outputs"]["action"]["dims"]] == pytest.approx(want)
    served = Policy.from_checkpoint(mixture, embodiment="point").metadata
    assert point["client"]["metadata"] == json.loads(json.dumps(served))

    both = describe_checkpoint(mixture)
    assert [e["name"] for e in both["embodiments"]] == ["arm", "point"]
    assert [e["inputs"]["state"]["dim"] for e in both["embodiments"]] == [6, 4]


def test_unknown_member_is_a_config_error_naming_the_members(mixture: Path) -> None:
    with pytest.raises(ConfigError, match=r"\['arm', 'point'\]"):
        describe_checkpoint(mixture, embodiment="nope")


def test_not_a_checkpoint_folder_says_what_one_holds(tmp_path: Path, capsys) -> None:
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ConfigError, match="format_version") as exc:
        describe_checkpoint(tmp_path)
    assert "model.safetensors" in str(exc.value) and "notes.txt" in str(exc.value)
    assert main(["inspect", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a checkpoint folder" in err and "Traceback" not in err


def test_incomplete_checkpoint_names_the_missing_file(single: Path, tmp_path: Path) -> None:
    import shutil

    broken = tmp_path / "step_000250"
    shutil.copytree(single, broken)
    (broken / "normalization.json").unlink()
    with pytest.raises(ConfigError, match="missing normalization.json"):
        describe_checkpoint(broken)


def test_stats_of_the_wrong_size_are_a_warning(single: Path, tmp_path: Path, capsys) -> None:
    import shutil

    bad = tmp_path / "step_000250"
    shutil.copytree(single, bad)
    norm = json.loads((bad / "normalization.json").read_text())
    norm["stats"]["action"]["min"] = norm["stats"]["action"]["min"][:2]
    (bad / "normalization.json").write_text(json.dumps(norm))
    assert main(["inspect", str(bad)]) == 0
    out = capsys.readouterr().out
    assert "WARNING" in out and "stats['action']['min'] has 2 values, the policy uses 4" in out
