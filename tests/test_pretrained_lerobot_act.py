"""LeRobot ACT checkpoints load in vlastack and give LeRobot's actions.

Compared with the golden tensors LeRobot 0.6.1 wrote for ``fixtures/lerobot_policies/act``
(README "act"): the preprocessed tensors bit-exactly, the normalized and final chunks within
golden.json's fresh-process tolerance. LeRobot itself is never imported.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import _lerobot_golden as G
from _lerobot_golden import OBS, max_abs, raw_obs
from vlastack.errors import ConfigError
from vlastack.evaluation.rollout import load_policy
from vlastack.policy_formats import detect_policy_format
from vlastack.pretrained.lerobot.act import ACTNetwork, ACTSpec
from vlastack.pretrained.lerobot.normalize import FeatureNormalizer
from vlastack.pretrained.lerobot.policy import LeRobotACTPolicy, load_lerobot_act


@pytest.fixture(scope="module")
def act_dir(fixtures_dir: Path) -> Path:
    return G.policy_dir(fixtures_dir, "act")


@pytest.fixture(scope="module")
def golden(act_dir: Path) -> dict[str, torch.Tensor]:
    return G.golden(act_dir)


@pytest.fixture(scope="module")
def tolerance(act_dir: Path) -> dict[str, float]:
    return G.tolerance(act_dir)


@pytest.fixture(scope="module")
def policy(act_dir: Path) -> LeRobotACTPolicy:
    return load_lerobot_act(act_dir / "pretrained_model", device="cpu")


@pytest.mark.parametrize("i", OBS)
def test_golden_preprocessed_normalized_and_final_chunks(policy, golden, tolerance, i):
    torch.set_num_threads(1)  # the goldens' thread count (restored by conftest)
    obs = raw_obs(golden, i)
    pre = policy.preprocess([obs])
    want_keys = {
        k[len(f"obs{i}.preprocessed.") :] for k in golden if k.startswith(f"obs{i}.preprocessed.")
    }
    assert set(pre) == want_keys
    for key, value in pre.items():
        assert torch.equal(value, golden[f"obs{i}.preprocessed.{key}"]), key

    chunk = policy.predict_normalized(pre)
    err_norm = max_abs(chunk, golden[f"obs{i}.action_chunk_normalized"])
    assert err_norm <= tolerance["action_chunk_normalized"], err_norm

    actions = policy.infer(obs)["actions"]
    assert actions.shape == (10, 6) and actions.dtype == np.float32
    err = max_abs(torch.from_numpy(actions), golden[f"obs{i}.action_chunk"][0])
    assert err <= tolerance["action_chunk (dataset units)"], err


def test_encoder_tokens_are_latent_state_then_cameras_in_config_order(policy, golden):
    """ACT has no per-camera embedding, so swapping the cameras only changes the rounding of
    the chunk; the token order is checked here directly."""
    seen = {}
    model = policy.network.model
    hook = model.encoder.register_forward_pre_hook(lambda m, args: seen.update(x=args[0]))
    try:
        pre = policy.preprocess([raw_obs(golden, 0)])
        policy.predict_normalized(pre)
    finally:
        hook.remove()
    x = seen["x"][:, 0]  # (S, D), batch 1
    with torch.no_grad():
        latent = model.encoder_latent_input_proj(torch.zeros(1, 8))[0]
        state = model.encoder_robot_state_input_proj(pre["observation.state"])[0]
        cams = [
            model.encoder_img_feat_input_proj(model.backbone(pre[k]))[0].flatten(1).T
            for k in ("observation.images.top", "observation.images.wrist")
        ]
    want = torch.cat([latent[None], state[None], *cams])
    assert x.shape == want.shape == (2 + 2 * 2 * 2, 32)
    torch.testing.assert_close(x, want, rtol=0, atol=1e-6)


def test_images_as_float_chw_or_hwc_give_the_same_actions(policy, golden):
    obs = raw_obs(golden, 0)
    want = policy.infer(obs)["actions"]
    for layout in ("chw", "hwc"):
        alt = dict(obs)
        for key in policy.spec.image_keys:
            img = obs[key].astype(np.float32) / 255
            alt[key] = img.transpose(2, 0, 1) if layout == "chw" else img
        np.testing.assert_array_equal(policy.infer(alt)["actions"], want)


def test_infer_batch_matches_infer(policy, golden):
    obs = [raw_obs(golden, i) for i in OBS]
    batched = policy.infer_batch(obs)
    for o, got in zip(obs, batched, strict=True):
        np.testing.assert_allclose(got["actions"], policy.infer(o)["actions"], atol=1e-4)


def test_every_checkpoint_key_is_consumed_with_its_shape(policy, act_dir):
    with safe_open(str(act_dir / "pretrained_model" / "model.safetensors"), "pt") as f:
        names = list(f.keys())
        in_file = {k: tuple(f.get_slice(k).get_shape()) for k in names}
    built = {k: tuple(v.shape) for k, v in policy.network.state_dict().items()}
    assert len(in_file) == 186
    assert built == in_file


def test_full_size_default_act_has_every_key_of_full_keys_json(act_dir):
    full = json.loads((act_dir / "full_keys.json").read_text())
    spec = ACTSpec.from_config(full["config"])
    assert (spec.dim_model, spec.vision_backbone, spec.chunk_size) == (512, "resnet18", 100)
    with torch.device("meta"):
        net = ACTNetwork(spec)
    built = {k: list(v.shape) for k, v in net.state_dict().items()}
    want = {k: v["shape"] for k, v in full["keys"].items()}
    assert len(want) == full["num_tensors"] == 234
    assert built == want
    assert sum(p.numel() for p in net.parameters()) == full["params"]


def test_metadata_and_reset(policy):
    meta = policy.metadata
    assert meta["action_horizon"] == 10 and meta["execute_horizon"] == 10
    assert meta["action_dim"] == 6 and meta["state_dim"] == 6
    assert meta["cameras"] == ["observation.images.top", "observation.images.wrist"]
    assert meta["image_size"] == [48, 64]
    assert meta["observation_keys"][-1] == "observation.state"
    n = policy.num_resets
    policy.reset()
    assert policy.num_resets == n + 1


def test_load_policy_and_detection(act_dir, golden):
    folder = act_dir / "pretrained_model"
    assert detect_policy_format(folder).name == "lerobot_act"
    for other in ("diffusion", "smolvla", "pi0", "pi05", "xvla"):  # each its own format
        assert detect_policy_format(act_dir.parent / other / "pretrained_model").name == (
            f"lerobot_{other}"
        )
    policy = load_policy(folder)
    assert isinstance(policy, LeRobotACTPolicy)
    actions = policy.infer(raw_obs(golden, 1))["actions"]
    assert max_abs(torch.from_numpy(actions), golden["obs1.action_chunk"][0]) < 1e-4
    with pytest.raises(ConfigError, match="embodiment"):
        load_policy(folder, embodiment="arm")


def test_registration_does_not_import_the_torch_modules():
    code = (
        "import sys, vlastack.policy_formats as pf; "
        "print({'lerobot_act', 'lerobot_diffusion'} <= set(pf.POLICY_FORMATS._entries), "
        "any(m.startswith(('vlastack.pretrained.lerobot.act', 'vlastack.pretrained.lerobot.policy',"
        " 'vlastack.pretrained.lerobot.normalize', 'vlastack.pretrained.lerobot.diffusion',"
        " 'vlastack.pretrained.lerobot.weights', 'vlastack.pretrained.lerobot.resnet'))"
        " for m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.split() == ["True", "False"]


def copy_checkpoint(src: Path, dst: Path) -> Path:
    shutil.copytree(src / "pretrained_model", dst)
    return dst


def edit_config(folder: Path, **fields) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(fields)
    (folder / "config.json").write_text(json.dumps(cfg))


def test_wrong_config_type_names_the_field_and_the_fix(act_dir, tmp_path):
    folder = copy_checkpoint(act_dir, tmp_path / "ck")
    edit_config(folder, type="vqbet")  # a LeRobot type vlastack does not import
    assert detect_policy_format(folder) is None
    with pytest.raises(ConfigError, match=r"'type' is 'vqbet', not 'act'.*act pretrained_model"):
        load_lerobot_act(folder)


def test_config_that_does_not_fit_the_weights_names_the_key(act_dir, tmp_path):
    folder = copy_checkpoint(act_dir, tmp_path / "ck")
    edit_config(folder, dim_feedforward=128)
    with pytest.raises(ConfigError) as info:
        load_lerobot_act(folder)
    msg = str(info.value)
    assert "model.decoder.layers.0.linear1.bias is (64,) in the file" in msg
    assert "dim_feedforward" in msg and "same LeRobot checkpoint" in msg


def test_a_tensor_of_the_wrong_shape_or_missing_is_named(act_dir, tmp_path):
    folder = copy_checkpoint(act_dir, tmp_path / "ck")
    weights = load_file(str(folder / "model.safetensors"))
    weights["model.action_head.weight"] = torch.zeros(7, 32)
    del weights["model.decoder_pos_embed.weight"]
    weights["model.extra.weight"] = torch.zeros(1)
    save_file(weights, str(folder / "model.safetensors"))
    with pytest.raises(ConfigError) as info:
        load_lerobot_act(folder)
    msg = str(info.value)
    assert "model.action_head.weight is (7, 32) in the file, the config gives (6, 32)" in msg
    assert "missing from the file: model.decoder_pos_embed.weight" in msg
    assert "not in the network the config builds: model.extra.weight" in msg


def test_a_missing_observation_key_or_wrong_shape_is_named(policy, golden):
    obs = raw_obs(golden, 0)
    del obs["observation.state"]
    with pytest.raises(ConfigError, match="no 'observation.state'"):
        policy.infer(obs)
    obs = raw_obs(golden, 0)
    obs["observation.images.top"] = obs["observation.images.top"][:40]
    with pytest.raises(ConfigError, match=r"observation.images.top: shape \(40, 64, 3\)"):
        policy.infer(obs)


def test_normalizer_modes_follow_lerobot_formulas():
    stats = {
        "s": {
            "mean": torch.tensor([1.0, 2.0]),
            "std": torch.tensor([2.0, 0.0]),
            "min": torch.tensor([0.0, 5.0]),
            "max": torch.tensor([4.0, 5.0]),
            "q01": torch.tensor([1.0, 1.0]),
            "q99": torch.tensor([3.0, 2.0]),
        }
    }
    x = torch.tensor([[3.0, 5.0]])
    for mode, want in [
        ("MEAN_STD", torch.tensor([[1.0, 3.0 / 1e-8]])),
        ("MIN_MAX", torch.tensor([[0.5, -1.0]])),
        ("QUANTILES", torch.tensor([[1.0, 7.0]])),
        ("IDENTITY", x),
    ]:
        norm = FeatureNormalizer({"s": "STATE"}, {"STATE": mode}, stats)
        y = norm.normalize("s", x)
        torch.testing.assert_close(y, want)
        if mode == "MEAN_STD":
            # the inverse has no eps: x * std + mean
            torch.testing.assert_close(norm.unnormalize("s", y), torch.tensor([[3.0, 2.0]]))
        elif mode != "IDENTITY":
            back = norm.unnormalize("s", y)
            torch.testing.assert_close(back[:, 0], x[:, 0])
    # a tiny range shows that eps only stands in for a zero range (never added to it)
    tiny = {
        "s": {
            "min": torch.tensor([0.0]),
            "max": torch.tensor([1e-6]),
            "q01": torch.tensor([0.0]),
            "q99": torch.tensor([1e-6]),
        }
    }
    for mode in ("MIN_MAX", "QUANTILES"):
        norm = FeatureNormalizer({"s": "STATE"}, {"STATE": mode}, tiny)
        torch.testing.assert_close(
            norm.unnormalize("s", torch.tensor([1.0])), torch.tensor([1e-6]), rtol=1e-6, atol=0
        )
        torch.testing.assert_close(
            norm.normalize("s", torch.tensor([1e-6])), torch.tensor([1.0]), rtol=1e-6, atol=0
        )
    # a feature without stats passes through, as in LeRobot
    norm = FeatureNormalizer({"t": "STATE"}, {"STATE": "MEAN_STD"}, {})
    assert torch.equal(norm.normalize("t", x), x)
    with pytest.raises(ConfigError, match="not supported"):
        FeatureNormalizer({}, {"STATE": "LOG"}, {})
