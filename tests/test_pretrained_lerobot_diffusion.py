"""LeRobot Diffusion Policy checkpoints load in vlastack and give LeRobot's actions.

Compared with the golden tensors LeRobot 0.6.1 wrote for ``fixtures/lerobot_policies/diffusion``
(README "diffusion"): the preprocessed tensors and the n_obs_steps=2 stacks bit-exactly, the
normalized and final chunks (DDPM 100 steps with the recorded start noise and the 99 recorded
step draws) within golden.json's fresh-process tolerance. LeRobot itself is never imported.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

import _lerobot_golden as G
from _lerobot_golden import OBS, max_abs, raw_obs
from vlastack.errors import ConfigError
from vlastack.evaluation.rollout import load_policy
from vlastack.policy_formats import detect_policy_format
from vlastack.pretrained.lerobot.diffusion import DiffusionNetwork, DiffusionSpec
from vlastack.pretrained.lerobot.diffusion_policy import (
    LeRobotDiffusionPolicy,
    load_lerobot_diffusion,
)


@pytest.fixture(scope="module")
def diffusion_dir(fixtures_dir: Path) -> Path:
    return G.policy_dir(fixtures_dir, "diffusion")


@pytest.fixture(scope="module")
def golden(diffusion_dir: Path) -> dict[str, torch.Tensor]:
    return G.golden(diffusion_dir)


@pytest.fixture(scope="module")
def tolerance(diffusion_dir: Path) -> dict[str, float]:
    return G.tolerance(diffusion_dir)


@pytest.fixture(scope="module")
def policy(diffusion_dir: Path) -> LeRobotDiffusionPolicy:
    return load_lerobot_diffusion(diffusion_dir / "pretrained_model", device="cpu")


def test_golden_sequence_of_three_observations(policy, golden, tolerance):
    """obs0, obs1, obs2 in order after one reset: the history stacks are [0, 0], [0, 1],
    [1, 2], as LeRobot's queues give them."""
    torch.set_num_threads(1)  # the goldens' thread count (restored by conftest)
    policy.reset()
    for i in OBS:
        pre = policy.preprocess([raw_obs(golden, i)])
        for key, value in pre.items():
            assert torch.equal(value, golden[f"obs{i}.preprocessed.{key}"]), (i, key)
        policy_input = policy.window(pre)
        for key, value in policy_input.items():
            assert torch.equal(value, golden[f"obs{i}.policy_input.{key}"]), (i, key)
        chunk = policy.predict_normalized(
            policy_input, golden[f"obs{i}.noise"], golden[f"obs{i}.ddpm_step_noise"]
        )
        err_norm = max_abs(chunk, golden[f"obs{i}.action_chunk_normalized"])
        assert err_norm <= tolerance["action_chunk_normalized"], (i, err_norm)
        err = max_abs(policy.postprocess(chunk), golden[f"obs{i}.action_chunk"])
        assert err <= tolerance["action_chunk (dataset units)"], (i, err)


def test_infer_is_seeded_and_reset_restarts_the_history(policy, golden):
    policy.reset()
    first = policy.infer(raw_obs(golden, 0))["actions"]
    second = policy.infer(raw_obs(golden, 1))["actions"]
    assert first.shape == (10, 6) and first.dtype == np.float32
    assert len(policy._history) == 2
    policy.reset()
    np.testing.assert_array_equal(policy.infer(raw_obs(golden, 0))["actions"], first)
    assert not np.array_equal(first, second)
    # MIN_MAX actions: the clipped x0 keeps the chunk inside the dataset's action range
    stats = policy.processors.unnormalizer.stats["action"]
    assert (first >= stats["min"].numpy() - 1e-3).all() and (
        first <= stats["max"].numpy() + 1e-3
    ).all()


def test_every_checkpoint_key_is_consumed_with_its_shape(policy, diffusion_dir):
    with safe_open(str(diffusion_dir / "pretrained_model" / "model.safetensors"), "pt") as f:
        names = list(f.keys())
        in_file = {k: tuple(f.get_slice(k).get_shape()) for k in names}
    built = {k: tuple(v.shape) for k, v in policy.network.state_dict().items()}
    assert len(in_file) == 350
    assert built == in_file


def test_full_size_default_diffusion_has_every_key_of_full_keys_json(diffusion_dir):
    full = json.loads((diffusion_dir / "full_keys.json").read_text())
    spec = DiffusionSpec.from_config(full["config"])
    assert spec.down_dims == (512, 1024, 2048) and spec.vision_backbone == "resnet18"
    with torch.device("meta"):
        net = DiffusionNetwork(spec)
    built = {
        k: (list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in net.state_dict().items()
    }
    want = {k: (v["shape"], v["dtype"]) for k, v in full["keys"].items()}
    assert len(want) == full["num_tensors"]
    assert built == want
    assert sum(p.numel() for p in net.parameters()) == full["params"]


def test_metadata(policy):
    meta = policy.metadata
    assert meta["action_horizon"] == meta["execute_horizon"] == 10
    assert meta["obs_horizon"] == 2 and meta["diffusion_steps"] == 100
    assert meta["cameras"] == ["observation.images.top", "observation.images.wrist"]


def test_load_policy_detects_the_folder(diffusion_dir, golden):
    folder = diffusion_dir / "pretrained_model"
    assert detect_policy_format(folder).name == "lerobot_diffusion"
    policy = load_policy(folder)
    assert isinstance(policy, LeRobotDiffusionPolicy)
    assert policy.infer(raw_obs(golden, 2))["actions"].shape == (10, 6)


def test_wrong_type_and_unsupported_settings_are_named(diffusion_dir, tmp_path):
    folder = tmp_path / "ck"
    shutil.copytree(diffusion_dir / "pretrained_model", folder)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "type": "act"}))
    assert detect_policy_format(folder).name == "lerobot_act"
    with pytest.raises(ConfigError, match=r"'type' is 'act', not 'diffusion'"):
        load_lerobot_diffusion(folder)
    (folder / "config.json").write_text(json.dumps({**cfg, "noise_scheduler_type": "PNDM"}))
    with pytest.raises(ConfigError, match="noise_scheduler_type 'PNDM'"):
        load_lerobot_diffusion(folder)
    (folder / "config.json").write_text(json.dumps({**cfg, "down_dims": [16, 64]}))
    with pytest.raises(ConfigError, match="diffusion.unet.down_modules.1.0.conv1.block.0.weight"):
        load_lerobot_diffusion(folder)
