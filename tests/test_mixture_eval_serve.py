"""Mixture checkpoints in ``vlastack eval`` and ``vlastack serve``: evaluation acts as the member
matching the environment's embodiment (in workers too), ``--embodiment`` forces one, an unknown
name is a ConfigError naming the members, and the server's metadata says which robot it is."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vlastack.embodiment import CameraSpec, EmbodimentSpec, VectorSpec
from vlastack.errors import ConfigError
from vlastack_test_plugins import fakes

ENV = "fake/reach-easy"  # robot "fake_point": camera "top", 4-d state, 2-d delta action
MEAN = {"point": 50.0, "arm": -50.0}  # action means far apart: which stats un-normalize shows


def _robot(
    robot_type: str, camera: str, state: int, action: int, kind: str, hz: float, act: str = "a"
) -> EmbodimentSpec:
    return EmbodimentSpec(
        robot_type=robot_type,
        cameras=[CameraSpec(camera, 32, 32)],
        state=VectorSpec([f"q{i}" for i in range(state)]),
        action=VectorSpec([f"{act}{i}" for i in range(action)], kind=kind),
        control_hz=hz,
    )


def _arm() -> EmbodimentSpec:
    return _robot("arm3", "top", 6, 3, "delta", 10.0, act="dq")


def _member_norm(state_dim: int, action_dim: int, action_mean: float) -> dict:
    from vlastack.data.normalization import Normalizer

    stats = {
        "observation.state": {"mean": [0.0] * state_dim, "std": [1.0] * state_dim},
        "action": {"mean": [action_mean] * action_dim, "std": [0.01] * action_dim},
    }
    return Normalizer(stats, {"observation.state": "mean_std", "action": "mean_std"}).to_dict()


def write_mixture_checkpoint(
    root: Path, robot: tuple[str, EmbodimentSpec] = ("point", fakes.embodiment())
) -> Path:
    """What ``vlastack train --data arm,point`` writes, for a random tiny VLA: the model at the
    padded sizes, config.json["mixture"] and each member's own stats in
    normalization.json["members"]; embodiment.json is the default (first) member's, the arm, so
    acting as the env's ``robot`` (member name, spec) needs the env's embodiment."""
    from vlastack.models.vla import VLAConfig, build_vla
    from vlastack.training.checkpoint import save_checkpoint

    name, spec = robot
    cams = [c.name for c in spec.cameras]
    torch.manual_seed(0)
    cfg = VLAConfig(  # the mixture's padded sizes and union of cameras
        action_dim=max(3, spec.action.dim),
        action_horizon=4,
        obs_horizon=1,
        state_dim=max(6, spec.state.dim),
        cameras=["top", *[c for c in cams if c != "top"]],
        image_size=(16, 16),
        width=32,
        vision="small_cnn",
        vision_kwargs={"width": 8, "num_blocks": 2, "out_dim": 32},
        vision_pooled=True,
        language="none",
        head="l1",
        head_kwargs={"width": 32, "depth": 1, "num_heads": 2, "resnet_blocks": 1},
    )
    members = [
        ("arm", _arm(), 6, 3, ["top"]),
        (name, spec, spec.state.dim, spec.action.dim, cams),
    ]
    norms = [{"name": n, **_member_norm(s, a, MEAN.get(n, 0.0))} for n, _, s, a, _ in members]
    mixture = {
        "default": "arm",
        "members": [
            {
                "name": n,
                "dataset": f"/data/{n}",
                "weight": 0.5,
                "state_dim": s,
                "action_dim": a,
                "cameras": cams,
                "embodiment": emb.to_dict(),
            }
            for n, emb, s, a, cams in members
        ],
    }
    return save_checkpoint(
        root,
        1,
        weights=build_vla(cfg).state_dict(),
        config={"model": cfg.to_dict(), "train": {"seed": 0}, "mixture": mixture},
        normalization={**_member_norm(6, 3, MEAN["arm"]), "members": norms},
        embodiment=_arm(),
    )


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mixture_checkpoint(tmp_path_factory.mktemp("mixckpt") / "checkpoints")


def _obs(state_dim: int) -> dict:
    return {
        "observation.images.top": np.zeros((32, 32, 3), np.uint8),
        "observation.state": np.zeros(state_dim, np.float32),
        "task": "reach",
    }


# ---- eval -----------------------------------------------------------------------------------
def test_eval_loader_acts_as_the_member_matching_the_env(ckpt: Path) -> None:
    from vlastack.evaluation.rollout import load_policy, mixture_members

    assert [m.name for m in mixture_members(ckpt)] == ["arm", "point"]
    for spec, name, action_dim in ((fakes.embodiment(), "point", 2), (_arm(), "arm", 3)):
        policy = load_policy(ckpt, expect_embodiment=spec)
        assert getattr(policy, "embodiment_name", None) == name
        actions = policy.infer(_obs(spec.state.dim))["actions"]
        assert actions.shape == (4, action_dim)
        # un-normalized with that member's own stats (mean ±50, std 0.01)
        np.testing.assert_allclose(actions, MEAN[name], atol=1.0)


def test_eval_in_a_worker_picks_the_member_from_the_env(ckpt: Path, tmp_path: Path) -> None:
    """The real path: ``vlastack eval`` with one spawned worker process. The default member
    (and embodiment.json) is the arm; the env's robot is the second member."""
    from vlastack.cli.main import main

    out = tmp_path / "res"
    args = ["eval", str(ckpt), "--env", ENV, "--episodes-per-task", "1", "--workers", "1"]
    args += ["--max-steps", "3", "--image-size", "32", "--videos-per-task", "0"]
    assert main([*args, "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    (rec,) = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert rec["status"] in ("success", "failure"), rec.get("error")
    assert rec["extra"]["embodiment"] == "point" and summary["run"]["embodiment"] == "point"
    assert manifest["protocol"]["embodiment"] is None  # chosen by the env, not forced
    assert manifest["protocol"]["embodiment_resolved"] == ["point"]


@pytest.mark.sim
def test_metaworld_episode_acts_as_the_sawyer(tmp_path: Path) -> None:
    """One short Meta-World episode (in process): the mixture acts as its Sawyer member."""
    pytest.importorskip("metaworld", reason="Meta-World is not installed (vlastack[sim])")
    from vlastack.envs.metaworld import embodiment as sawyer
    from vlastack.evaluation.rollout import evaluate

    ckpt = write_mixture_checkpoint(tmp_path / "ckpt", ("sawyer", sawyer("corner2", (64, 64))))
    res = evaluate(
        ckpt,
        "metaworld/reach-v3",
        episodes_per_task=1,
        workers=0,
        max_steps=3,
        image_size=(64, 64),
        progress=False,
    )
    (rec,) = res.records
    assert rec.status in ("success", "failure"), rec.error
    assert rec.extra["embodiment"] == "sawyer" and res.summary["run"]["embodiment"] == "sawyer"


def test_forced_member_is_checked_against_the_env(ckpt: Path) -> None:
    from vlastack.evaluation.rollout import evaluate

    kw = dict(episodes_per_task=1, workers=0, max_steps=3, image_size=(32, 32), progress=False)
    with pytest.raises(ConfigError, match=r"action dim 3 vs 2.*It acts as 'arm' \(--embodiment\)"):
        evaluate(ckpt, ENV, embodiment="arm", **kw)  # type: ignore[arg-type]
    # by robot_type, with padding: runs, as the arm, with the remap recorded
    with pytest.warns(UserWarning, match="remapped"):
        res = evaluate(ckpt, ENV, embodiment="arm3", action_remap="pad", **kw)  # type: ignore[arg-type]
    (rec,) = res.records
    assert rec.status in ("success", "failure"), rec.error
    assert rec.extra["embodiment"] == "arm" and "action dim 3 vs 2" in rec.extra["remap"]
    assert res.manifest["protocol"]["embodiment"] == "arm3"


def test_manifest_rerun_keeps_a_forced_member(ckpt: Path, tmp_path: Path) -> None:
    from vlastack.evaluation.reproduce import evaluate_manifest
    from vlastack.evaluation.rollout import evaluate

    kw = dict(episodes_per_task=1, workers=0, max_steps=3, image_size=(32, 32), progress=False)
    with pytest.warns(UserWarning, match="remapped"):
        evaluate(ckpt, ENV, embodiment="arm", action_remap="pad", out_dir=tmp_path / "a", **kw)  # type: ignore[arg-type]
    with pytest.warns(UserWarning, match="remapped"):
        again = evaluate_manifest(
            tmp_path / "a" / "manifest.json", out_dir=tmp_path / "b", progress=False
        )
    (rec,) = again.records
    assert rec.extra["embodiment"] == "arm"  # not the env-matching 'point'


def test_unknown_member_is_a_config_error_naming_the_members(
    ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from vlastack.cli.main import main
    from vlastack.evaluation.rollout import load_policy

    with pytest.raises(ConfigError, match=r"'nope'.*\['arm', 'point'\]"):
        load_policy(ckpt, embodiment="nope")
    args = ["eval", str(ckpt), "--env", ENV, "--embodiment", "nope", "--no-progress"]
    assert main([*args, "--out", str(ckpt.parent / "never")]) == 2
    err = capsys.readouterr().err
    assert "--embodiment 'nope'" in err and "['arm', 'point']" in err
    assert not (ckpt.parent / "never").exists()  # refused before anything ran


def test_plain_checkpoint_is_unchanged(tmp_path: Path) -> None:
    """A single-robot checkpoint ignores the env's embodiment when loading (the env check
    still decides), and a name other than its robot is refused."""
    from _export_tiny import write_tiny_checkpoint
    from vlastack.evaluation.rollout import load_policy, mixture_members

    plain = write_tiny_checkpoint(tmp_path / "plain", head="l1")
    assert mixture_members(plain) == []
    policy = load_policy(plain, expect_embodiment=_arm())  # no embodiment.json, no check
    assert getattr(policy, "embodiment_name", "x") is None
    assert "mixture_members" not in policy.metadata  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="trained on one robot"):
        load_policy(plain, embodiment="arm3")


# ---- serve ----------------------------------------------------------------------------------
def _serve_args(*argv: str) -> argparse.Namespace:
    from vlastack.cli import serve

    parser = argparse.ArgumentParser()
    serve.add_parser(parser.add_subparsers())
    return parser.parse_args(["serve", *argv])


def test_serve_embodiment_names_the_member_in_metadata(ckpt: Path) -> None:
    pytest.importorskip("websockets")
    from vlastack.cli.serve import _load_policy
    from vlastack.serving.client import PolicyClient
    from vlastack.serving.server import ServerThread

    for argv, name, robot, action_dim in (
        ((), "arm", "arm3", 3),  # default: the first member
        (("--embodiment", "point"), "point", "fake_point", 2),
        (("--embodiment", "fake_point"), "point", "fake_point", 2),  # by robot_type
    ):
        policy = _load_policy(_serve_args(str(ckpt), *argv))
        with ServerThread(policy, port=0) as srv, PolicyClient("127.0.0.1", srv.port) as client:
            meta = client.metadata
            assert (meta["embodiment_name"], meta["robot_type"]) == (name, robot)
            assert meta["mixture_members"] == ["arm", "point"]
            assert meta["embodiment"]["robot_type"] == robot and meta["action_dim"] == action_dim
            actions = client.infer(_obs(meta["state_dim"]))["actions"]
            assert actions.shape == (4, action_dim)
            np.testing.assert_allclose(actions, MEAN[name], atol=1.0)


def test_serve_unknown_member_is_a_clear_error(
    ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from vlastack.cli.main import main
    from vlastack.cli.serve import _load_policy

    with pytest.raises(ConfigError, match=r"no embodiment 'nope'.*\['arm', 'point'\]"):
        _load_policy(_serve_args(str(ckpt), "--embodiment", "nope"))
    assert main(["serve", str(ckpt), "--embodiment", "nope", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "['arm', 'point']" in err and "Traceback" not in err


# ---- remote simulators (no EmbodimentSpec in this process) ----------------------------------
def _aloha() -> EmbodimentSpec:
    return _robot("aloha", "cam_high", 14, 14, "absolute", 50.0)


def test_remote_sim_acts_as_the_member_with_the_clients_sizes(tmp_path: Path, caplog) -> None:
    from vlastack.envs.remote.runner import SIMS
    from vlastack.evaluation.remote import _as_policy, member_for_sim
    from vlastack.evaluation.rollout import mixture_members
    from vlastack.serving.toy import style_dims

    assert style_dims("aloha") == (14, 14) and style_dims("libero") == (8, 7)
    ckpt = write_mixture_checkpoint(tmp_path / "checkpoints", robot=("bimanual", _aloha()))
    members = mixture_members(ckpt)
    assert member_for_sim(members, SIMS["aloha/transfer_cube"])[0] == "bimanual"
    policy, _ = _as_policy(str(ckpt), SIMS["aloha/transfer_cube"])
    assert getattr(policy, "embodiment_name", None) == "bimanual"
    # no member has LIBERO's 8-d state / 7-d actions: the first one, and a warning naming sizes
    name, why = member_for_sim(members, SIMS["libero/libero_spatial"])
    assert name is None and "8-d state" in why and "bimanual" in why
    with caplog.at_level("WARNING", logger="vlastack.eval"):
        policy, _ = _as_policy(str(ckpt), SIMS["libero/libero_spatial"])
    assert getattr(policy, "embodiment_name", None) == "arm"
    assert "--embodiment" in caplog.text
