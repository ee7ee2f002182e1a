"""LeRobot SmolVLA checkpoints load in vlastack and give LeRobot's actions.

Compared step by step with the golden tensors LeRobot 0.6.1 wrote for
``fixtures/lerobot_policies/smolvla`` (README "smolvla" and "LeRobot 0.6.1 behaviours"): the
task text and its tokens (the fixtures' byte-level tokenizer), the normalized state, the images
after resize-with-pad and the [-1, 1] map, the padded state, ``sample_actions``'s output from the
recorded inputs and noise, and the final chunk, within golden.json's fresh-process tolerance.
The full-size SmolVLA (SmolVLM2-500M) is built on the meta device and checked against
``full_keys.json``. LeRobot itself is never imported.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import _lerobot_golden as G
from _lerobot_golden import OBS, max_abs, raw_obs
from _lerobot_tokenizer import write_byte_tokenizer
from vlastack.errors import ConfigError
from vlastack.policy_formats import detect_policy_format
from vlastack.pretrained.lerobot.smolvla import (
    SmolVLANetwork,
    SmolVLASpec,
    resize_with_pad,
    unused_at_inference,
)
from vlastack.pretrained.lerobot.smolvla_policy import (
    LeRobotSmolVLAPolicy,
    load_lerobot_smolvla,
)
from vlastack.pretrained.lerobot.smolvlm import KNOWN_VLMS, SMOLVLM2_500M, vlm_config
from vlastack.pretrained.lerobot.tokenizer import ByteTokenizer, load_tokenizer

TOKENS = "observation.language.tokens"
MASK = "observation.language.attention_mask"


@pytest.fixture(scope="module")
def kind_dir(fixtures_dir: Path) -> Path:
    return G.policy_dir(fixtures_dir, "smolvla")


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
def policy(kind_dir: Path) -> LeRobotSmolVLAPolicy:
    return load_lerobot_smolvla(
        kind_dir / "pretrained_model", device="cpu", tokenizer=ByteTokenizer()
    )


def observation(golden, meta, i: int) -> dict:
    return {**raw_obs(golden, i), "task": meta["observations"][i]["task"]}


def sample_args(golden, i: int) -> tuple:
    p = f"obs{i}.sample_actions."
    images = [golden[f"{p}images.{j}"] for j in (0, 1)]
    masks = [golden[f"{p}img_masks.{j}"] for j in (0, 1)]
    return (
        images,
        masks,
        golden[p + "lang_tokens"],
        golden[p + "lang_masks"],
        golden[p + "state"],
        golden[p + "noise"],
    )


# ---- (a) each preprocessing step against the golden tensors --------------------------------
@pytest.mark.parametrize("i", OBS)
def test_task_newline_and_tokens(policy, golden, meta, i):
    task = meta["observations"][i]["task"]
    assert meta["observations"][i]["tokenizer_input_text"] == [task + "\n"]
    ids, mask = policy.tokenize([task])
    assert torch.equal(ids, golden[f"obs{i}.preprocessed.{TOKENS}"])
    assert torch.equal(mask, golden[f"obs{i}.preprocessed.{MASK}"])
    assert torch.equal(ids, golden[f"obs{i}.sample_actions.lang_tokens"])
    # the stub's rule, spelled out: [2] + [3 + byte], no padding for one text
    assert ids[0].tolist() == [2] + [3 + b for b in (task + "\n").encode()]


def test_tokens_pad_to_the_longest_task_of_a_batch(policy, golden, meta):
    ids, mask = policy.tokenize([o["task"] for o in meta["observations"]])
    lengths = [golden[f"obs{i}.preprocessed.{TOKENS}"].shape[1] for i in OBS]
    assert lengths == [23, 31, 21] and ids.shape == (3, 31)
    for i, n in zip(OBS, lengths, strict=True):
        assert torch.equal(ids[i, :n], golden[f"obs{i}.preprocessed.{TOKENS}"][0])
        assert (ids[i, n:] == 0).all() and mask[i].sum() == n and mask[i, :n].all()


@pytest.mark.parametrize("i", OBS)
def test_preprocessed_tensors_are_lerobots(policy, golden, meta, i):
    torch.set_num_threads(1)  # the goldens' thread count (restored by conftest)
    pre = policy.preprocess([observation(golden, meta, i)])
    want = {
        k[len(f"obs{i}.preprocessed.") :] for k in golden if k.startswith(f"obs{i}.preprocessed.")
    }
    assert set(pre) == want
    for key, value in pre.items():  # normalized state (std + 1e-8), images /255, tokens
        assert torch.equal(value, golden[f"obs{i}.preprocessed.{key}"]), key


@pytest.mark.parametrize("i", OBS)
def test_resize_with_pad_range_and_state_padding(policy, golden, i):
    pre = {
        k[len(f"obs{i}.preprocessed.") :]: v
        for k, v in golden.items()
        if k.startswith(f"obs{i}.preprocessed.")
    }
    images, masks, state = policy.prepare(pre)
    for j, (img, m) in enumerate(zip(images, masks, strict=True)):
        want = golden[f"obs{i}.sample_actions.images.{j}"]
        assert img.shape == want.shape == (1, 3, 64, 64)
        assert torch.equal(img, want), j
        assert torch.equal(m, golden[f"obs{i}.sample_actions.img_masks.{j}"])
        # 48x64 -> 48x64 (ratio 1) padded with 16 rows of 0 on TOP, then *2-1: -1 there
        assert (img[:, :, :16] == -1).all() and not (img[:, :, 16:] == -1).all()
    assert state.shape == (1, 32) and torch.equal(state, golden[f"obs{i}.sample_actions.state"])
    assert (state[:, 6:] == 0).all()


def test_resize_with_pad_reads_width_then_height_and_pads_left(kind_dir, policy, golden):
    img = torch.rand(1, 3, 48, 64)
    out = resize_with_pad(img, 128, 64)  # width 128, height 64: ratio 0.75 -> 64 x 85
    assert out.shape == (1, 3, 64, 128)
    assert (out[..., :43] == 0).all() and (out[..., 43:] != 0).any()
    cfg = json.loads((kind_dir / "pretrained_model" / "config.json").read_text())
    spec = SmolVLASpec.from_config({**cfg, "resize_imgs_with_padding": [128, 64]})
    assert spec.resize == (128, 64)  # config.json order: [width, height]
    feats = {**cfg["input_features"]}
    feats["observation.images.wrist"] = {"type": "VISUAL", "shape": [3, 24, 32]}
    mixed = LeRobotSmolVLAPolicy(
        policy.network,
        SmolVLASpec.from_config({**cfg, "input_features": feats}),
        policy.processors,
        policy.tokenizer,
        policy.tokenizer_step,
    )  # cameras of different sizes, each its own
    assert mixed.input_shapes["observation.images.wrist"] == (3, 24, 32)
    assert mixed.input_shapes["observation.images.top"] == (3, 48, 64)
    obs = {**raw_obs(golden, 0), "task": "x"}
    obs["observation.images.wrist"] = obs["observation.images.wrist"][::2, ::2]
    assert mixed.infer(obs)["actions"].shape == (10, 6)
    wide = LeRobotSmolVLAPolicy(
        policy.network, spec, policy.processors, policy.tokenizer, policy.tokenizer_step
    )
    pre = {
        k[len("obs0.preprocessed.") :]: v
        for k, v in golden.items()
        if k.startswith("obs0.preprocessed.")
    }
    images, _, _ = wide.prepare(pre)
    assert images[0].shape == (1, 3, 64, 128) and (images[0][..., :43] == -1).all()


# ---- (b) sample_actions from the recorded inputs and noise ----------------------------------
@pytest.mark.parametrize("i", OBS)
def test_sample_actions_output(policy, golden, tolerance, i):
    torch.set_num_threads(1)
    with torch.inference_mode():
        out = policy.network.model.sample_actions(*sample_args(golden, i))
    err = max_abs(out, golden[f"obs{i}.sample_actions.output"])
    assert err <= tolerance["sample_actions.output"], err


# ---- (c) the final chunk ---------------------------------------------------------------------
@pytest.mark.parametrize("i", OBS)
def test_normalized_and_final_chunk(policy, golden, meta, tolerance, i):
    torch.set_num_threads(1)
    pre = policy.preprocess([observation(golden, meta, i)])
    chunk = policy.predict_normalized(pre, noise=golden[f"obs{i}.noise"])
    err_norm = max_abs(chunk, golden[f"obs{i}.action_chunk_normalized"])
    assert err_norm <= tolerance["action_chunk_normalized"], err_norm
    err = max_abs(policy.postprocess(chunk), golden[f"obs{i}.action_chunk"])
    assert err <= tolerance["action_chunk (dataset units)"], err


def test_a_batch_padded_to_its_longest_task_gives_each_golden_chunk(policy, golden, meta):
    """obs0 and obs2 get 8 and 10 pad tokens in this batch: the pad mask must hide them (their
    positions do not advance either), so each row is its own golden chunk."""
    pre = policy.preprocess([observation(golden, meta, i) for i in OBS])
    assert pre[TOKENS].shape == (3, 31)
    noise = torch.cat([golden[f"obs{i}.noise"] for i in OBS])
    chunk = policy.postprocess(policy.predict_normalized(pre, noise=noise))
    for i in OBS:  # batched matmuls round differently: measured 7.6e-6 (values up to ~106)
        err = max_abs(chunk[i : i + 1], golden[f"obs{i}.action_chunk"])
        assert err <= 1e-5, (i, err)


@pytest.fixture(scope="module")
def folder_with_tokenizer(kind_dir, tmp_path_factory) -> Path:
    """The fixture laid out as LeRobot reads it, plus a real tokenizer (``tokenizers``-built,
    the stub's rule) in the VLM folder that ``tokenizer_name`` '../smolvlm2_tiny_config' names."""
    root = tmp_path_factory.mktemp("smolvla")
    shutil.copytree(kind_dir / "pretrained_model", root / "pretrained_model")
    vlm = root / "smolvlm2_tiny_config"
    vlm.mkdir()
    shutil.copy(kind_dir / "smolvlm2_tiny_config" / "config.json", vlm / "config.json")
    write_byte_tokenizer(vlm)
    return root / "pretrained_model"


def test_from_checkpoint_with_a_real_tokenizer_gives_the_golden_chunks(
    folder_with_tokenizer, golden, meta, tolerance
):
    from vlastack.policy import Policy

    torch.set_num_threads(1)
    assert detect_policy_format(folder_with_tokenizer).name == "lerobot_smolvla"
    loaded = Policy.from_checkpoint(folder_with_tokenizer, device="cpu")
    assert isinstance(loaded, LeRobotSmolVLAPolicy)
    assert not isinstance(loaded.tokenizer, ByteTokenizer)  # AutoTokenizer from the folder
    for i in OBS:
        pre = loaded.preprocess([observation(golden, meta, i)])
        assert torch.equal(pre[TOKENS], golden[f"obs{i}.preprocessed.{TOKENS}"])
        chunk = loaded.postprocess(loaded.predict_normalized(pre, noise=golden[f"obs{i}.noise"]))
        err = max_abs(chunk, golden[f"obs{i}.action_chunk"])
        assert err <= tolerance["action_chunk (dataset units)"], err


def test_infer_contract(policy, golden, meta):
    obs = observation(golden, meta, 0)
    policy.reset()
    a = policy.infer(obs)["actions"]
    assert a.shape == (10, 6) and a.dtype == np.float32 and np.isfinite(a).all()
    b = policy.infer(obs)["actions"]
    assert not np.array_equal(a, b)  # fresh noise per call
    policy.reset()
    np.testing.assert_array_equal(policy.infer(obs)["actions"], a)  # reseeded
    flat = {f"observation/{k.split('.')[-1]}": v for k, v in raw_obs(golden, 0).items()}
    flat["prompt"] = obs["task"]
    policy.reset()
    np.testing.assert_array_equal(policy.infer(flat)["actions"], a)  # openpi spellings
    m = policy.metadata
    assert (m["format"], m["action_horizon"], m["execute_horizon"]) == ("lerobot_smolvla", 10, 10)
    assert m["cameras"] == ["observation.images.top", "observation.images.wrist"]
    assert m["language"] is True and "task" in m["observation_keys"]
    policy.reset()
    none = policy.infer(raw_obs(golden, 0))["actions"]  # no task: "" as lerobot_eval sends
    policy.reset()
    np.testing.assert_array_equal(policy.infer({**raw_obs(golden, 0), "task": ""})["actions"], none)
    assert policy.tokenize([""])[0].tolist() == [[2, 3 + ord("\n")]]
    with pytest.raises(ConfigError, match="'task' must be the instruction as a string"):
        policy.infer({**raw_obs(golden, 0), "task": 3})


def test_a_lerobot_pre_0_4_folder_gives_the_same_chunks(
    kind_dir, golden, meta, tolerance, tmp_path
):
    """Stats as buffers in model.safetensors, no processor files (tests/test_pretrained_lerobot_
    legacy.py's derivation): the tokenizer step is what LeRobot's migration builds from the
    config (make_smolvla_pre_post_processors: vlm_model_name, pad_language_to, right, 48)."""
    from test_pretrained_lerobot_legacy import make_legacy
    from vlastack.pretrained.lerobot.smolvla_policy import TokenizerStep

    torch.set_num_threads(1)
    shutil.copytree(kind_dir / "smolvlm2_tiny_config", tmp_path / "smolvlm2_tiny_config")
    old = make_legacy(kind_dir / "pretrained_model", tmp_path / "pretrained_model")
    assert not (old / "policy_preprocessor.json").exists()
    assert detect_policy_format(old).name == "lerobot_smolvla"
    p = load_lerobot_smolvla(old, device="cpu", tokenizer=ByteTokenizer())
    assert p.tokenizer_step == TokenizerStep("../smolvlm2_tiny_config", 48, "longest") and p.newline
    for i in OBS:
        pre = p.preprocess([observation(golden, meta, i)])
        chunk = p.postprocess(p.predict_normalized(pre, noise=golden[f"obs{i}.noise"]))
        err = max_abs(chunk, golden[f"obs{i}.action_chunk"])
        assert err <= tolerance["action_chunk (dataset units)"], (i, err)


# ---- every key, the full-size model, the unused keys -----------------------------------------
def test_every_checkpoint_key_is_consumed_with_its_shape(policy, kind_dir, meta):
    with safe_open(str(kind_dir / "pretrained_model" / "model.safetensors"), "pt") as f:
        in_file = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    built = {k: tuple(v.shape) for k, v in policy.network.state_dict().items()}
    assert len(in_file) == 124 and built == in_file
    assert sorted(unused_at_inference(policy.spec)) == sorted(meta["unused_at_inference"]["unused"])


def test_full_size_smolvla_has_every_key_of_full_keys_json(kind_dir, tmp_path, monkeypatch):
    full = json.loads((kind_dir / "full_keys.json").read_text())
    # the KNOWN_VLMS restatement agrees with what LeRobot read from the hub config
    known = KNOWN_VLMS[SMOLVLM2_500M]
    for part, fields in (("text", "text_config"), ("vision", "vision_config")):
        for key, value in full["smolvlm_config"][part].items():
            assert known[fields][key] == value, (part, key)
    assert known["scale_factor"] == full["smolvlm_config"]["scale_factor"]
    # with an empty hub cache the default VLM id resolves to that table
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    vcfg, source = vlm_config(SMOLVLM2_500M, tmp_path)
    assert "KNOWN_VLMS" in source
    spec = SmolVLASpec.from_config({**full["config"], "vlm_model_name": SMOLVLM2_500M})
    with torch.device("meta"):
        net = SmolVLANetwork(spec, vcfg)
    built = {k: list(v.shape) for k, v in net.state_dict().items()}
    want = {k: v["shape"] for k, v in full["keys"].items()}
    assert len(want) == full["num_tensors"] == 500
    assert built == want
    assert sum(p.numel() for p in net.parameters()) == full["params"] == 450_046_176
    unused = unused_at_inference(spec)
    assert set(unused) <= set(want) and len(unused) == 8
    assert "model.vlm_with_expert.vlm.model.text_model.layers.15.mlp.up_proj.weight" in unused


def test_unknown_vlm_not_in_the_cache_names_it_and_the_download(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="hf download someone/other-vlm"):
        vlm_config("someone/other-vlm", tmp_path)
    with pytest.raises(ConfigError, match=f"hf download {SMOLVLM2_500M}"):
        load_tokenizer(SMOLVLM2_500M, tmp_path, what="tokenizer_name")


# ---- tokenizers from a local folder and from the local HF cache ------------------------------
def test_tokenizer_from_a_folder_and_from_the_hub_cache(tmp_path, monkeypatch):
    texts = ["pick up the red block\n", "héllo wörld\n"]
    want = ByteTokenizer()(texts, max_length=48, padding="longest", padding_side="right")
    folder = write_byte_tokenizer(tmp_path / "tok")
    cache = tmp_path / "hub"
    snap = cache / "models--someone--tiny-tok" / "snapshots" / "c0ffee"
    shutil.copytree(folder, snap)
    (cache / "models--someone--tiny-tok" / "refs").mkdir()
    (cache / "models--someone--tiny-tok" / "refs" / "main").write_text("c0ffee")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)
    for name in ("tok", str(folder), "someone/tiny-tok"):
        tok = load_tokenizer(name, tmp_path)
        got = tok(
            texts,
            max_length=48,
            truncation=True,
            padding="longest",
            padding_side="right",
            return_tensors="pt",
        )
        assert torch.equal(got["input_ids"], want["input_ids"]), name
        assert torch.equal(got["attention_mask"], want["attention_mask"]), name
    with pytest.raises(ConfigError, match="holds no tokenizer"):
        load_tokenizer(str(tmp_path / "hub"), tmp_path)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "tokenizer.json").write_text("{}")
    with pytest.raises(ConfigError, match="no loadable tokenizer"):
        load_tokenizer("bad", tmp_path)


# ---- (f) errors that name the key and the fix -------------------------------------------------
@pytest.fixture
def copy_folder(kind_dir, tmp_path) -> Path:
    shutil.copytree(kind_dir / "pretrained_model", tmp_path / "pretrained_model")
    shutil.copytree(kind_dir / "smolvlm2_tiny_config", tmp_path / "smolvlm2_tiny_config")
    return tmp_path / "pretrained_model"


def _edit_config(folder: Path, **changes) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(changes)
    (folder / "config.json").write_text(json.dumps(cfg))


def test_a_config_field_of_the_wrong_type_is_named(copy_folder):
    _edit_config(copy_folder, num_steps="ten")
    with pytest.raises(ConfigError, match="'num_steps' must be a int"):
        load_lerobot_smolvla(copy_folder, device="cpu", tokenizer=ByteTokenizer())
    _edit_config(copy_folder, num_steps=10, type="act")
    with pytest.raises(ConfigError, match="'type' is 'act', not 'smolvla'"):
        load_lerobot_smolvla(copy_folder, device="cpu", tokenizer=ByteTokenizer())


def test_a_wrong_shape_or_layer_count_names_the_key(copy_folder):
    file = copy_folder / "model.safetensors"
    weights = load_file(str(file))
    weights["model.state_proj.weight"] = torch.zeros(64, 16)
    save_file(weights, str(file))
    with pytest.raises(ConfigError, match=r"model\.state_proj\.weight is \(64, 16\) in the file"):
        load_lerobot_smolvla(copy_folder, device="cpu", tokenizer=ByteTokenizer())


def test_num_vlm_layers_that_do_not_fit_the_weights_name_the_keys(copy_folder):
    _edit_config(copy_folder, num_vlm_layers=3)
    with pytest.raises(ConfigError, match=r"not in the network.*layers\.3\..*check num_vlm_layers"):
        load_lerobot_smolvla(copy_folder, device="cpu", tokenizer=ByteTokenizer())


def test_missing_stats_name_the_feature_and_the_stat(copy_folder):
    name = "policy_preprocessor_step_5_normalizer_processor.safetensors"
    stats = load_file(str(copy_folder / name))
    del stats["observation.state.std"]
    save_file(stats, str(copy_folder / name))
    with pytest.raises(ConfigError, match="'observation.state' lack std, which MEAN_STD needs"):
        load_lerobot_smolvla(copy_folder, device="cpu", tokenizer=ByteTokenizer())


def test_a_missing_tokenizer_names_the_field_and_the_fix(copy_folder):
    with pytest.raises(
        ConfigError,
        match="tokenizer_name '../smolvlm2_tiny_config' resolves to .* no tokenizer.*pass tokenizer=",
    ):
        load_lerobot_smolvla(copy_folder, device="cpu")
    shutil.rmtree(copy_folder.parent / "smolvlm2_tiny_config")
    with pytest.raises(ConfigError, match="vlm_model_name '../smolvlm2_tiny_config'"):
        load_lerobot_smolvla(copy_folder, device="cpu", tokenizer=ByteTokenizer())


# ---- vlastack inspect ------------------------------------------------------------------------
def test_inspect_explains_the_language_input(kind_dir, capsys):
    from vlastack.cli.main import main

    folder = kind_dir / "pretrained_model"
    assert main(["inspect", str(folder), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "lerobot_smolvla" and info["chunk_length"] == 10
    lang = info["language"]
    assert (lang["padding"], lang["padding_side"], lang["newline"]) == ("longest", "right", True)
    assert "no tokenizer.json" in lang["tokenizer_found"]
    assert info["client"]["send"]["task"].startswith("str")
    assert main(["inspect", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "task: str ('' when absent, as lerobot_eval sends); a trailing newline is added" in out
    assert "model.vlm_with_expert.lm_expert 182,704" in out
