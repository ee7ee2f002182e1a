"""Training on a mixture of datasets: weights, per-dataset normalization, masked padding,
per-member validation, and a checkpoint that serves every embodiment it was trained on."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from vlastack.data.dataset import collate
from vlastack.data.format import DatasetReader, DatasetWriter, Feature
from vlastack.errors import ConfigError, DataError
from vlastack.training.batches import EpochBatches
from vlastack.training.build import build_parts
from vlastack.training.config import DataSpec, TrainConfig, parse_data

FLAGS = ["--log=none", "--progress=false", "--num_workers=0", "--num_threads=1"]


def write_dataset(
    root: Path,
    state_dim: int,
    action_dim: int,
    cams: list[str],
    *,
    scale: float = 1.0,
    hw: tuple[int, int] = (32, 32),
    task: str = "push",
    episodes: int = 4,
    length: int = 12,
) -> Path:
    feats = {
        f"observation.images.{c}": Feature("image", (*hw, 3), ["height", "width", "channels"])
        for c in cams
    }
    feats["observation.state"] = Feature(
        "float32", (state_dim,), [f"s{i}" for i in range(state_dim)]
    )
    feats["action"] = Feature("float32", (action_dim,), [f"a{i}" for i in range(action_dim)])
    rng = np.random.default_rng(action_dim)
    w = DatasetWriter.create(
        root, fps=10, features=feats, robot_type=f"bot{action_dim}", use_videos=False
    )
    for e in range(episodes):
        for i in range(length):
            frame: dict[str, np.ndarray] = {
                f"observation.images.{c}": np.full((*hw, 3), 10 * i + 30 * e, np.uint8)
                for c in cams
            }
            frame["observation.state"] = (scale * rng.normal(size=state_dim)).astype(np.float32)
            frame["action"] = (scale * (1 + rng.normal(size=action_dim))).astype(np.float32)
            w.add_frame(frame, task=f"{task} {e % 2}" if task.strip() else task)
        w.save_episode()
    w.finalize()
    return root


@pytest.fixture(scope="module")
def two_robots(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """'small': 2-d state/action, one camera; 'big': 3-d state, 4-d action in units 100x
    larger, and a second camera the other lacks."""
    tmp = tmp_path_factory.mktemp("mix")
    small = write_dataset(tmp / "small", 2, 2, ["front"])
    big = write_dataset(tmp / "big", 3, 4, ["front", "wrist"], scale=100.0, task="lift")
    return small, big


def cfg_for(out: Path, data: str, *extra: str) -> TrainConfig:
    return TrainConfig.from_recipe(
        "cpu_default",
        [f"--data={data}", f"--out_dir={out}", "--batch_size=4", "--val_fraction=0.25", *FLAGS]
        + list(extra),
    )


def test_data_syntax_and_errors(tmp_path: Path) -> None:
    assert parse_data(["a:0.7,b:0.3"]) == [DataSpec("a", 0.7), DataSpec("b", 0.3)]
    assert parse_data(["a", "b"]) == [DataSpec("a"), DataSpec("b")]
    odd = tmp_path / "run:1"  # an existing folder is taken whole, colon and all
    odd.mkdir()
    assert parse_data([f"{odd},b"]) == [DataSpec(str(odd)), DataSpec("b")]
    with pytest.raises(ConfigError, match="'x' after the last ':' is not a number.*PATH:WEIGHT"):
        parse_data(["data/a:x"])
    with pytest.raises(ConfigError, match=r"weights given for \['a'\] but not for \['b'\]"):
        parse_data(["a:0.5", "b"])
    with pytest.raises(ConfigError, match="must be a positive number"):
        parse_data(["a:0", "b:1"])
    with pytest.raises(ConfigError, match="given twice"):
        parse_data(["a,a"])
    with pytest.raises(ConfigError, match="PATH:WEIGHT"):  # caught before any data is read
        TrainConfig(recipe="cpu_default", data=["a:1", "b:oops"]).validate()


def test_cli_trains_mixture_and_checkpoint_serves_each_embodiment(
    tmp_path: Path, two_robots: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    from vlastack.cli.main import main
    from vlastack.policy import Policy

    small, big = two_robots
    args = ["train", "cpu_default", "--data", f"{small}:0.25,{big}:0.75", f"--out_dir={tmp_path}"]
    args += ["--steps=3", "--batch_size=4", "--val_fraction=0.25", "--val_batches=1", *FLAGS]
    assert main(args) == 0
    assert (tmp_path / "val" / "open_loop_small_step3.png").exists()
    assert (tmp_path / "val" / "open_loop_big_step3.png").exists()
    last = tmp_path / "checkpoints" / "last"

    obs = {
        "observation.images.front": np.zeros((32, 32, 3), np.uint8),
        "observation.images.wrist": np.zeros((32, 32, 3), np.uint8),
        "task": "push 0",
    }
    for name, robot, state_dim, action_dim, cams in [
        ("small", "bot2", 2, 2, ["front"]),
        ("big", "bot4", 3, 4, ["front", "wrist"]),
    ]:
        for key in (name, robot):  # by member name or by robot_type
            policy = Policy.from_checkpoint(last, embodiment=key)
            assert policy.embodiment_name == name and policy.embodiment is not None
            assert policy.embodiment.robot_type == robot
            assert (policy.state_dim, policy.action_dim, policy.cameras) == (
                state_dim,
                action_dim,
                cams,
            )
            out = policy.infer({**obs, "observation.state": np.zeros(state_dim, np.float32)})
            assert out["actions"].shape == (8, action_dim)
            assert np.isfinite(out["actions"]).all()
            if name == "small":  # the camera it lacks is flagged, so the model masks it out
                o = policy.parse({**obs, "observation.state": np.zeros(2, np.float32)})
                frame = {k: v[0, 0] for k, v in policy.batch([[o]]).items() if k != "task"}
                assert bool(frame["observation.images.wrist_is_pad"])
        # Each robot un-normalizes with its own stats: model-space 0 is that dataset's mean.
        mean = DatasetReader(small if name == "small" else big).stats["action"]["mean"]
        zero = policy.normalizer.unnormalize_actions(torch.zeros(1, 8, 4))
        np.testing.assert_allclose(zero[0, 0].numpy(), mean, rtol=1e-5)

    with caplog.at_level(logging.WARNING, logger="vlastack.policy"):
        default = Policy.from_checkpoint(last)
    assert default.embodiment_name == "small" and "pass embodiment=NAME" in caplog.text
    with pytest.raises(DataError, match=r"no embodiment 'nope'.*\['small', 'big'\]"):
        Policy.from_checkpoint(last, embodiment="nope")


def test_sampler_follows_weights_or_sizes(tmp_path: Path, two_robots: tuple[Path, Path]) -> None:
    small, big = two_robots
    parts = build_parts(cfg_for(tmp_path, f"{small}:0.2,{big}:0.8"))
    mix: Any = parts.train_dataset
    assert parts.epoch_indices is not None
    draws = [i for e in range(40) for i in parts.epoch_indices(e)]
    share = np.mean([mix.locate(i)[0] == 0 for i in draws])
    assert abs(share - 0.2) < 0.03, share
    # The loop's batches are that order, cut into micro-batches (and reproducible).
    from vlastack.training.distributed import DistInfo

    batches = EpochBatches(len(mix), DistInfo(), 0, 4, order=parts.epoch_indices)
    it = iter(batches)
    first = [next(it) for _ in range(batches.per_epoch)]
    assert [i for b in first for i in b] == list(parts.epoch_indices(0))[: 4 * len(first)]
    batch = collate([mix[i] for i in first[0]])
    assert batch["action"].shape == (4, 8, 4) and batch["dataset_index"].shape == (4,)

    # Without weights: plain shuffled concatenation, so shares follow dataset sizes.
    plain = build_parts(cfg_for(tmp_path, f"{small},{big}"))
    assert plain.epoch_indices is None
    plain_mix: Any = plain.train_dataset
    sizes = np.asarray(plain_mix.lengths, dtype=float)
    np.testing.assert_allclose(plain_mix.weights, sizes / sizes.sum())


def test_per_dataset_normalization_and_masked_padding(
    tmp_path: Path, two_robots: tuple[Path, Path]
) -> None:
    small, big = two_robots
    parts = build_parts(cfg_for(tmp_path, f"{small},{big}"))
    mix: Any = parts.train_dataset
    n_small = mix.lengths[0]
    rows = [0, 1, n_small, n_small + 1]  # two windows of each robot
    raw = collate([mix[i] for i in rows])
    assert raw["action_dim_mask"].tolist()[0] == [True, True, False, False]
    norm = parts.normalizer.normalize(raw)
    for d, root in ((0, small), (1, big)):
        st = DatasetReader(root).stats["action"]
        k = len(st["mean"])
        r = raw["dataset_index"] == d
        want = (raw["action"][r][..., :k] - torch.as_tensor(st["mean"]).float()) / (
            torch.as_tensor(st["std"]).float() + 1e-8
        )
        torch.testing.assert_close(norm["action"][r][..., :k], want, rtol=1e-4, atol=1e-4)
    assert torch.all(norm["action"][:2, :, 2:] == 0)

    model: Any = parts.model
    model.eval()

    def loss_of(batch: dict) -> torch.Tensor:
        torch.manual_seed(0)
        return model.loss(parts.normalizer.normalize(batch))

    base = loss_of(raw)
    garbage = dict(raw)
    garbage["action"] = raw["action"].clone()
    garbage["action"][:2, :, 2:] = 1e4  # padded dims of the 2-d robot
    torch.testing.assert_close(loss_of(garbage), base)
    unmasked = {k: v for k, v in raw.items() if k != "action_dim_mask"}
    assert not torch.allclose(loss_of(unmasked)[:2], base[:2])  # the mask is what excludes them


def test_mixture_errors_name_the_dataset(tmp_path: Path, two_robots: tuple[Path, Path]) -> None:
    small, _ = two_robots
    mute = write_dataset(tmp_path / "mute", 2, 2, ["front"], task=" ")  # blank instructions
    with pytest.raises(DataError, match=f"{mute}.*no task instructions"):
        build_parts(cfg_for(tmp_path / "r1", f"{small},{mute}"))
    # Cameras of different sizes are resized to the recipe's image size, which is said.
    odd = write_dataset(tmp_path / "odd", 2, 3, ["front"], hw=(24, 24), episodes=2)
    parts = build_parts(cfg_for(tmp_path / "r2", f"{small},{odd}", "--model.image_size=[16,16]"))
    assert tuple(parts.model_config["image_size"]) == (16, 16)
    assert parts.train_dataset[0]["observation.images.front"].shape[-2:] == (16, 16)


def test_weighted_mixture_resumes_exactly(tmp_path: Path, two_robots: tuple[Path, Path]) -> None:
    """The weighted order is a function of (seed, epoch), so a resumed run sees the same
    batches; 4 batches per epoch make the 6 steps cross an epoch boundary."""
    import shutil

    from vlastack.training.checkpoint import set_pointer
    from vlastack.training.loop import train

    small, big = two_robots
    kw = ("--steps=6", "--save_every=3", "--batch_size=16", "--val_fraction=0")
    straight = train(cfg_for(tmp_path / "a", f"{small}:0.3,{big}:0.7", *kw))
    ckpts = tmp_path / "b" / "checkpoints"
    train(cfg_for(tmp_path / "b", f"{small}:0.3,{big}:0.7", *kw))
    shutil.rmtree(ckpts / "step_000006")  # as if the run had stopped after step 3
    set_pointer(ckpts, "last", "step_000003")
    resumed = train(cfg_for(tmp_path / "b", f"{small}:0.3,{big}:0.7", *kw, "--resume=true"))
    assert resumed.losses == straight.losses[3:]


def test_expected_embodiment_picks_the_member(
    two_robots: tuple[Path, Path], tmp_path: Path
) -> None:
    """Evaluating in an environment passes its embodiment; a mixture checkpoint then acts as
    the member that matches it, and refuses a robot it was not trained on."""
    from vlastack.policy import Policy
    from vlastack.training import checkpoint as ck
    from vlastack.training.build import embodiment_from_features
    from vlastack.training.loop import train

    small, big = two_robots
    result = train(cfg_for(tmp_path, f"{small},{big}", "--steps=1", "--val_fraction=0"))
    big_spec = embodiment_from_features(DatasetReader(big))
    policy = Policy.from_checkpoint(result.last_checkpoint, expect_embodiment=big_spec)
    assert policy.embodiment_name == "big" and policy.action_dim == 4
    other = dataclasses.replace(
        big_spec, action=dataclasses.replace(big_spec.action, names=[f"j{i}" for i in range(7)])
    )
    with pytest.raises(DataError, match="no embodiment of this mixture checkpoint"):
        ck.load_checkpoint(result.last_checkpoint, expect_embodiment=other)
