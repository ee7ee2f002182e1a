"""LeRobot X-VLA checkpoints load in vlastack and give LeRobot's actions.

Compared step by step with the golden tensors LeRobot 0.6.1 wrote for
``fixtures/lerobot_policies/xvla`` (README "xvla" and "LeRobot 0.6.1 behaviours"): the task's
tokens (the fixtures' byte-level tokenizer), each camera through ``xvla_image_to_float`` and
``xvla_imagenet_normalize``, the domain id, the (IDENTITY) normalizer, the inputs of
``generate_actions`` (stacked views, view mask, padded proprio), ``generate_actions``'s output
from the recorded inputs and noise, and the final chunk, within golden.json's fresh-process
tolerance. LeRobot itself is never imported.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import _lerobot_golden as G
from _lerobot_golden import OBS, max_abs, raw_obs
from vlastack.errors import ConfigError
from vlastack.pretrained.lerobot.tokenizer import ByteTokenizer
from vlastack.pretrained.lerobot.xvla_inputs import (
    IMAGENET_MEAN,
    image_to_float,
    imagenet_normalize,
)
from vlastack.pretrained.lerobot.xvla_policy import LeRobotXVLAPolicy, load_lerobot_xvla

TOKENS = "observation.language.tokens"
MASK = "observation.language.attention_mask"
CAMERAS = ("observation.images.top", "observation.images.wrist")
INPUTS = ("input_ids", "image_input", "image_mask", "domain_id", "proprio")


@pytest.fixture(autouse=True)
def _one_thread():
    """The goldens' thread count; also keeps these tiny models from oversubscribing a busy
    2-core box (two threads made each chunk ~100x slower there; conftest restores it)."""
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def kind_dir(fixtures_dir: Path) -> Path:
    return G.policy_dir(fixtures_dir, "xvla")


@pytest.fixture(scope="module")
def golden(kind_dir: Path) -> dict[str, torch.Tensor]:
    return G.golden(kind_dir)


@pytest.fixture(scope="module")
def tolerance(kind_dir: Path) -> dict[str, float]:
    return G.tolerance(kind_dir)


@pytest.fixture(scope="module")
def meta(kind_dir: Path) -> dict:
    return json.loads((kind_dir / "golden.json").read_text())


@pytest.fixture(scope="module")
def policy(kind_dir: Path) -> LeRobotXVLAPolicy:
    return load_lerobot_xvla(kind_dir / "pretrained_model", device="cpu", tokenizer=ByteTokenizer())


def observation(golden, meta, i: int) -> dict:
    return {**raw_obs(golden, i), "task": meta["observations"][i]["task"]}


def preprocessed(golden, i: int) -> dict[str, torch.Tensor]:
    p = f"obs{i}.preprocessed."
    return {k[len(p) :]: v for k, v in golden.items() if k.startswith(p)}


# ---- (a) each preprocessing step against the golden tensors --------------------------------
@pytest.mark.parametrize("i", OBS)
def test_task_tokens_padded_to_64_without_newline(policy, golden, meta, i):
    task = meta["observations"][i]["task"]
    assert meta["observations"][i]["tokenizer_input_text"] == [task]  # X-VLA adds no newline
    ids, mask = policy.tokenize([task])
    assert torch.equal(ids, golden[f"obs{i}.preprocessed.{TOKENS}"])
    assert torch.equal(mask, golden[f"obs{i}.preprocessed.{MASK}"])
    n = 1 + len(task.encode())
    assert ids.shape == (1, 64) and ids[0, :n].tolist() == [2] + [3 + b for b in task.encode()]
    assert (ids[0, n:] == 0).all() and int(mask.sum()) == n  # right-padded with 0


@pytest.mark.parametrize("i", OBS)
def test_image_to_float_then_imagenet_normalize(golden, i):
    for key in CAMERAS:
        raw = golden[f"obs{i}.raw.{key}"]  # uint8 HWC
        chw = (raw.permute(2, 0, 1).float() / 255.0).unsqueeze(0)  # prepare_observation_...
        as_float = image_to_float(key, chw)
        assert torch.equal(as_float, chw)  # max <= 1: LeRobot's step leaves it as it is
        out = imagenet_normalize(key, as_float)
        want = golden[f"obs{i}.preprocessed.{key}"]
        assert torch.equal(out, want), key
        # ImageNet: channel 0 of a 0-valued pixel is -0.485 / 0.229
        assert out.min() < -IMAGENET_MEAN[0] / 0.229 + 0.2


def test_image_steps_divide_0_255_floats_and_refuse_out_of_range():
    x = torch.tensor([[[[0.0, 127.5, 255.0]]]]).expand(1, 3, 1, 3)
    assert torch.equal(image_to_float("cam", x), x / 255.0)
    with pytest.raises(ConfigError, match=r"'cam' has values outside \[0, 255\]"):
        image_to_float("cam", x + 300)
    with pytest.raises(ConfigError, match=r"outside \[0, 1\].*ImageNet"):
        imagenet_normalize("cam", x)


@pytest.mark.parametrize("i", OBS)
def test_preprocessed_tensors_are_lerobots(policy, golden, meta, i):
    pre = policy.preprocess([observation(golden, meta, i)])
    want = preprocessed(golden, i)
    assert set(pre) == set(want)
    for key, value in pre.items():  # images, IDENTITY-normalized state, tokens, domain id
        assert value.dtype == want[key].dtype and torch.equal(value, want[key]), key
    assert pre["domain_id"].tolist() == [0]  # xvla_add_domain_id's default
    # the normalizer's mapping is IDENTITY for STATE: the state is the raw one
    assert torch.equal(pre["observation.state"][0], golden[f"obs{i}.raw.observation.state"])


@pytest.mark.parametrize("i", OBS)
def test_model_inputs_are_generate_actions_arguments(policy, golden, i):
    got = policy.prepare(preprocessed(golden, i))
    for name, value in zip(INPUTS, got, strict=True):
        want = golden[f"obs{i}.generate_actions.{name}"]
        assert value.dtype == want.dtype and torch.equal(value, want), name
    # the state zero-padded from 6 to max_state_dim 32
    assert (got[4][0, 6:] == 0).all() and got[4].shape == (1, 32)


# ---- (b) the network from the recorded inputs, and the whole chunk --------------------------
@pytest.mark.parametrize("i", OBS)
def test_generate_actions_matches_lerobot(policy, golden, tolerance, i):
    torch.set_num_threads(1)
    p = f"obs{i}.generate_actions."
    args = [golden[p + n] for n in INPUTS]
    with torch.inference_mode():
        out = policy.network.model.generate_actions(*args, golden[f"obs{i}.noise"], 10)
    want = golden[p + "output"]
    assert out.shape == want.shape == (1, 10, 6)  # 'auto': 20 model columns trimmed to 6
    assert max_abs(out, want) <= tolerance["action_chunk_normalized"]


@pytest.mark.parametrize("i", OBS)
def test_action_chunk_matches_lerobot(policy, golden, meta, tolerance, i):
    torch.set_num_threads(1)
    pre = policy.preprocess([observation(golden, meta, i)])
    normalized = policy.predict_normalized(pre, noise=golden[f"obs{i}.noise"])
    assert (
        max_abs(normalized, golden[f"obs{i}.action_chunk_normalized"])
        <= tolerance["action_chunk_normalized"]
    )
    chunk = policy.postprocess(normalized)
    assert (
        max_abs(chunk, golden[f"obs{i}.action_chunk"]) <= tolerance["action_chunk (dataset units)"]
    )


def test_the_noise_decides_the_chunk(policy, golden, meta):
    """Not a constant output: other noise gives another chunk; infer draws the session's
    seeded noise (the same after reset)."""
    pre = policy.preprocess([observation(golden, meta, 0)])
    a = policy.predict_normalized(pre, noise=golden["obs0.noise"])
    b = policy.predict_normalized(pre, noise=golden["obs1.noise"])
    assert max_abs(a, b) > 1e-3
    policy.reset()
    first = policy.infer(observation(golden, meta, 0))["actions"]
    policy.reset()
    again = policy.infer(observation(golden, meta, 0))["actions"]
    noise = torch.randn((1, 10, 20), generator=torch.Generator().manual_seed(policy.seed))
    want = policy.postprocess(policy.predict_normalized(pre, noise=noise))[0].numpy()
    assert first.shape == (10, 6) and np.array_equal(first, again)
    np.testing.assert_allclose(first, want, rtol=0, atol=1e-6)


def test_batch_of_three_matches_each_alone(policy, golden, meta, tolerance):
    obs = [observation(golden, meta, i) for i in OBS]
    pre = policy.preprocess(obs)
    noise = torch.cat([golden[f"obs{i}.noise"] for i in OBS])
    out = policy.postprocess(policy.predict_normalized(pre, noise=noise))
    for i in OBS:
        assert max_abs(out[i : i + 1], golden[f"obs{i}.action_chunk"]) <= 1e-5


# ---- (c) config variations LeRobot's code defines ------------------------------------------
def _copy(kind_dir: Path, dst: Path, **cfg_changes) -> Path:
    shutil.copytree(kind_dir / "pretrained_model", dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg.update(cfg_changes)
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def _set_domain(folder: Path, domain: int) -> None:
    pre = json.loads((folder / "policy_preprocessor.json").read_text())
    for step in pre["steps"]:
        if step["registry_name"] == "xvla_add_domain_id":
            step["config"]["domain_id"] = domain
    (folder / "policy_preprocessor.json").write_text(json.dumps(pre))


def test_domain_id_selects_the_soft_prompts_and_is_range_checked(kind_dir, golden, meta, tmp_path):
    folder = _copy(kind_dir, tmp_path / "d2")
    _set_domain(folder, 2)
    pol = load_lerobot_xvla(folder, device="cpu", tokenizer=ByteTokenizer())
    pre = pol.preprocess([observation(golden, meta, 0)])
    assert pre["domain_id"].tolist() == [2] and pol.metadata["domain_id"] == 2
    out = pol.predict_normalized(pre, noise=golden["obs0.noise"])
    assert max_abs(out, golden["obs0.action_chunk_normalized"]) > 1e-3  # another domain
    _set_domain(folder, 4)  # the fixture has num_domains 4
    pol = load_lerobot_xvla(folder, device="cpu", tokenizer=ByteTokenizer())
    with pytest.raises(ConfigError, match=r"domain id 4 is outside.*4 domains.*domain_id"):
        pol.infer(observation(golden, meta, 0))


def test_more_image_views_than_cameras_adds_masked_zero_views(kind_dir, golden, tmp_path):
    folder = _copy(kind_dir, tmp_path / "v3", num_image_views=3)
    pol = load_lerobot_xvla(folder, device="cpu", tokenizer=ByteTokenizer())
    ids, views, mask, _, _ = pol.prepare(preprocessed(golden, 0))
    assert views.shape == (1, 3, 3, 48, 64) and mask.tolist() == [[True, True, False]]
    assert (views[:, 2] == 0).all()
    out = pol.predict_normalized(preprocessed(golden, 0), noise=golden["obs0.noise"])
    assert out.shape == (1, 10, 6) and torch.isfinite(out).all()


def test_unsupported_processor_step_is_named(kind_dir, tmp_path):
    folder = _copy(kind_dir, tmp_path / "libero")
    pre = json.loads((folder / "policy_preprocessor.json").read_text())
    pre["steps"].insert(3, {"registry_name": "libero_processor", "config": {}})
    (folder / "policy_preprocessor.json").write_text(json.dumps(pre))
    with pytest.raises(ConfigError, match=r"'libero_processor' is not supported"):
        load_lerobot_xvla(folder, device="cpu", tokenizer=ByteTokenizer())
