"""One default camera size, and commands that run a checkpoint render at its trained size."""

from __future__ import annotations

import json
import warnings

import pytest

from vlastack.cli.main import main
from vlastack.image_size import (
    DEFAULT_IMAGE_SIZE,
    ImageSizeWarning,
    choose_image_size,
    metadata_image_size,
    trained_image_size,
)
from vlastack_test_plugins import fakes


@pytest.fixture()
def ckpt96(tmp_path):
    """A checkpoint whose camera was trained at 96x96."""
    path = fakes.write_fake_checkpoint(tmp_path / "ckpt96", action_horizon=6, noise=0.1)
    fakes.embodiment((96, 96)).save(path / "embodiment.json")
    return path


def _eval(ckpt, out, *extra):
    return main(
        [
            "eval",
            str(ckpt),
            "--env",
            "fake/reach-easy",
            "--episodes-per-task",
            "1",
            "--workers",
            "0",
            "--videos-per-task",
            "1",
            "--out",
            str(out),
            "--no-progress",
            *extra,
        ]
    )


@pytest.fixture()
def rendered(monkeypatch):
    """The (H, W) of every camera frame the fake env renders (workers=0: in this process)."""
    sizes: set[tuple[int, int]] = set()
    original = fakes.FakeReachEnv._obs

    def obs(self):
        out = original(self)
        sizes.add(out[f"observation.images.{self.camera}"].shape[:2])
        return out

    monkeypatch.setattr(fakes.FakeReachEnv, "_obs", obs)
    return sizes


def _protocol_size(folder):
    return tuple(json.loads((folder / "manifest.json").read_text())["protocol"]["image_size"])


def test_trained_size_is_read_from_the_checkpoint_files(tmp_path):
    native = tmp_path / "native"
    native.mkdir()
    (native / "config.json").write_text(json.dumps({"model": {"image_size": [64, 80]}}))
    fakes.embodiment((128, 128)).save(native / "embodiment.json")
    assert trained_image_size(native) == (64, 80)  # the network's size wins
    only_spec = fakes.write_fake_checkpoint(tmp_path / "spec")
    assert trained_image_size(only_spec) == (32, 32)
    lerobot = tmp_path / "lerobot"
    lerobot.mkdir()
    feats = {
        "observation.images.top": {"type": "VISUAL", "shape": [3, 84, 84]},
        "observation.state": {"type": "STATE", "shape": [14]},
    }
    (lerobot / "config.json").write_text(json.dumps({"input_features": feats}))
    assert trained_image_size(lerobot) == (84, 84)
    assert trained_image_size(tmp_path / "nothing") is None
    assert metadata_image_size({"image_size": [40, 50]}) == (40, 50)
    assert metadata_image_size({"embodiment": fakes.embodiment((24, 24)).to_dict()}) == (24, 24)
    assert metadata_image_size({}) is None
    assert choose_image_size(None, None) == DEFAULT_IMAGE_SIZE
    assert choose_image_size(None, (64, 80)) == (64, 80)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert choose_image_size(48, (48, 48)) == (48, 48)  # equal: no warning


def test_eval_without_image_size_renders_at_the_trained_size(ckpt96, tmp_path, rendered):
    out = tmp_path / "r"
    with warnings.catch_warnings():
        warnings.simplefilter("error", ImageSizeWarning)
        assert _eval(ckpt96, out) == 0
    assert _protocol_size(out) == (96, 96)
    assert rendered == {(96, 96)}  # the frames themselves, not only the record


def test_an_explicit_size_wins_and_warns(ckpt96, tmp_path, rendered):
    out = tmp_path / "r"
    with pytest.warns(ImageSizeWarning, match=r"rendering at 48x48.*trained at 96x96"):
        assert _eval(ckpt96, out, "--image-size", "48") == 0
    assert _protocol_size(out) == (48, 48)
    assert rendered == {(48, 48)}


def test_the_manifest_replays_the_recorded_size(ckpt96, tmp_path, capsys, rendered):
    first = tmp_path / "first"
    with pytest.warns(ImageSizeWarning):
        assert _eval(ckpt96, first, "--image-size", "40x48") == 0
    again = tmp_path / "again"
    args = ["eval", "--manifest", str(first / "manifest.json"), "--workers", "0"]
    rendered.clear()
    with pytest.warns(ImageSizeWarning):  # the recorded size is still not the trained one
        assert main([*args, "--out", str(again), "--no-progress"]) == 0
    assert _protocol_size(again) == (40, 48)
    assert rendered == {(40, 48)}
    capsys.readouterr()
    assert main([*args, "--image-size", "96", "--out", str(tmp_path / "x")]) == 2
    assert "replays the image size" in capsys.readouterr().err


def test_collect_and_demo_share_one_default():
    import argparse

    from vlastack.cli import collect as collect_cli
    from vlastack.demo import DemoConfig
    from vlastack.envs import make_env
    from vlastack.models.vla_config import VLAConfig
    from vlastack.recipes import get_recipe

    parser = argparse.ArgumentParser()
    collect_cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["collect", "--env", "pusht", "--out", "x"])
    assert (args.image_size, args.image_size) == DEFAULT_IMAGE_SIZE
    assert (DemoConfig().image_size,) * 2 == DEFAULT_IMAGE_SIZE
    assert tuple(VLAConfig().image_size) == DEFAULT_IMAGE_SIZE
    assert tuple(get_recipe("demo").model.image_size) == DEFAULT_IMAGE_SIZE
    assert make_env("fake/reach-easy").image_size == DEFAULT_IMAGE_SIZE  # make_env's default


def test_robot_renders_at_the_policys_size_unless_told():
    import argparse

    from vlastack.cli.robot import _robot

    def args(size):
        return argparse.Namespace(
            env="fake/reach-easy", image_size=size, server=None, checkpoint="ck", seed=0
        )

    meta = {"image_size": [40, 40], "cameras": ["top"]}
    with warnings.catch_warnings():
        warnings.simplefilter("error", ImageSizeWarning)
        assert _robot(args(None), meta).env.image_size == (40, 40)
    assert _robot(args(None), {}).env.image_size == DEFAULT_IMAGE_SIZE  # nothing says: default
    with pytest.warns(ImageSizeWarning, match="ck was trained at 40x40"):
        assert _robot(args([24, 24]), meta).env.image_size == (24, 24)
