"""``vlastack robot`` end to end in Meta-World with a tiny random checkpoint: in process, and
through a policy server on loopback; the recorded rollouts read back."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("metaworld", reason="Meta-World is not installed (pip install 'vlastack[sim]')")
pytestmark = pytest.mark.sim


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from _export_tiny import tiny_stats
    from vlastack.data.normalization import Normalizer
    from vlastack.envs.metaworld import embodiment
    from vlastack.models.vla import VLAConfig, build_vla
    from vlastack.training.checkpoint import save_checkpoint

    cfg = VLAConfig(
        action_dim=4,
        action_horizon=8,
        obs_horizon=1,
        state_dim=4,
        cameras=["corner2"],
        image_size=(32, 32),
        width=32,
        vision="small_cnn",
        vision_kwargs={"width": 8, "num_blocks": 2, "out_dim": 32},
        vision_pooled=True,
        language="none",
        head="l1",
        head_kwargs={"width": 32, "depth": 1, "num_heads": 2, "resnet_blocks": 1},
    )
    stats = tiny_stats(4)
    stats["action"]["std"] = [5.0] * 4  # wide actions: the range clamp has work to do
    norm = Normalizer(stats, {"observation.state": "mean_std", "action": "mean_std"})
    return save_checkpoint(
        tmp_path_factory.mktemp("ckpt"),
        1,
        weights=build_vla(cfg).state_dict(),
        config={"model": cfg.to_dict(), "train": {"seed": 0}},
        normalization=norm.to_dict(),
        embodiment=embodiment("corner2", (128, 128)),
    )


def _last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_robot_cli_in_process_records(ckpt, tmp_path, capsys):
    from vlastack.cli.main import main
    from vlastack.data.reader import DatasetReader

    rec = tmp_path / "rollouts"
    rc = main(
        [
            "robot",
            str(ckpt),
            "--env",
            "metaworld/reach-v3",
            "--control-hz",
            "40",
            "--max-ticks",
            "12",
            "--episodes",
            "2",
            "--execute-horizon",
            "4",
            "--record",
            str(rec),
            "--record-images",
            "png",
            "--json",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    total = _last_json(out)
    assert total["episodes"] == 2 and total["ticks"] > 0 and total["violations"] == 0
    ds = DatasetReader(rec)
    assert ds.info["total_episodes"] == 2 and len(ds) == total["ticks"]
    actions = ds.column("action")
    assert np.all(actions >= -1.0) and np.all(actions <= 1.0)  # Sawyer's declared range
    # no --image-size: the simulator renders at the size the checkpoint was trained at
    assert ds.info["features"]["observation.images.corner2"]["shape"][:2] == [32, 32]


def test_robot_cli_through_a_server(ckpt, capsys):
    pytest.importorskip("websockets")
    from vlastack.cli.main import main
    from vlastack.policy import Policy
    from vlastack.serving.server import ServerThread

    with ServerThread(Policy.from_checkpoint(ckpt), port=0) as srv:
        rc = main(
            [
                "robot",
                "--server",
                f"127.0.0.1:{srv.port}",
                "--env",
                "metaworld/reach-v3",
                "--control-hz",
                "40",
                "--max-ticks",
                "10",
                "--strategy",
                "async",
                "--json",
            ]
        )
    out = capsys.readouterr().out
    assert rc == 0, out
    total = _last_json(out)
    assert total["ticks"] > 0 and total["violations"] == 0


def test_robot_cli_errors(ckpt, tmp_path, capsys):
    from vlastack.cli.main import main

    assert main(["robot", "--env", "metaworld/reach-v3"]) == 2
    assert "CHECKPOINT" in capsys.readouterr().err
    assert main(["robot", str(ckpt), "--server", "x:1", "--env", "pusht"]) == 2
    assert "not both" in capsys.readouterr().err
    bad = tmp_path / "lim.yaml"
    bad.write_text("high: [1, 2]\n")
    assert main(["robot", str(ckpt), "--env", "metaworld/reach-v3", "--limits", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "lim.yaml: high has 2 values for 4 actions" in err
