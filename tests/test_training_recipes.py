"""Training real recipes on the LeRobot fixture through the CLI, and the fit checks."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from vlastack.errors import ConfigError, DataError
from vlastack.models.vla import VLAConfig
from vlastack.training.loop import check_recipe_fits


def fake_reader(**kw):
    base = dict(
        root=Path("/data/x"),
        num_episodes=2,
        num_frames=40,
        camera_keys=["observation.images.front"],
        features={"observation.state": object(), "action": object()},
        tasks=["pick"],
        episodes=[SimpleNamespace(length=20), SimpleNamespace(length=20)],
    )
    base.update(kw)
    return SimpleNamespace(**base)


@pytest.mark.parametrize(
    ("model_kw", "reader_kw", "fragment"),
    [
        ({"cameras": ["wrist"]}, {}, "needs cameras ['wrist']"),
        ({"state_dim": 3}, {"features": {"action": object()}}, "observation.state"),
        ({}, {"tasks": []}, "no task instructions"),
        ({"action_horizon": 32}, {}, "shorter than the recipe's action_horizon 32"),
        ({}, {"num_episodes": 0, "num_frames": 0, "episodes": []}, "no episodes"),
    ],
)
def test_recipe_that_does_not_fit_the_data_is_refused(model_kw, reader_kw, fragment) -> None:
    cfg = VLAConfig(cameras=["front"], state_dim=0, language="minilm", action_horizon=8)
    for k, v in model_kw.items():
        setattr(cfg, k, v)
    with pytest.raises(DataError) as exc:
        check_recipe_fits("r", cfg, fake_reader(**reader_kw), None)
    assert fragment in str(exc.value)


def test_cli_errors_are_plain(capsys) -> None:
    from vlastack.cli.main import main

    assert main(["train", "cpu_default", "--data", "/nope", "--stpes=3"]) == 2
    assert "Did you mean 'steps'" in capsys.readouterr().err
    with pytest.raises(ConfigError):
        from vlastack.training.config import TrainConfig

        TrainConfig.from_recipe("cpu_defalt")


@pytest.mark.slow
def test_cli_trains_resumes_and_policy_loads(tmp_path: Path, lerobot_fixture: Path) -> None:
    from vlastack.cli.main import main
    from vlastack.policy import Policy

    args = [
        "train",
        "diffusion_policy",
        "--data",
        str(lerobot_fixture),
        f"--out_dir={tmp_path}",
        "--batch_size=2",
        "--log=none",
        "--progress=false",
        "--val_fraction=0.34",
        "--val_batches=1",
        "--model.action_horizon=8",
    ]
    assert main([*args, "--steps=2"]) == 0
    assert main([*args, "--steps=3", "--resume"]) == 0
    last = tmp_path / "checkpoints" / "last"
    assert last.resolve().name == "step_000003"
    policy = Policy.from_checkpoint(last)
    assert policy.action_horizon == 8 and policy.action_dim == 4
    assert (tmp_path / "val" / "open_loop_step3.png").exists()
