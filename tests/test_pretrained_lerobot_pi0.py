"""LeRobot pi0 and pi0.5 checkpoints load in vlastack and give LeRobot's actions.

Compared step by step with the golden tensors LeRobot 0.6.1 wrote for
``fixtures/lerobot_policies/{pi0,pi05}`` (README "pi0", "pi05"): the prompt text, the tokens (the
fixtures' byte-level tokenizer stand-in), the preprocessed images/state, the resize-with-pad to
56x56, the padded state, ``sample_actions``' output from the recorded inputs and noise, and the
normalized and final chunks. The full-size key listing is checked on the meta device. LeRobot
itself is never imported.
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
from vlastack.policy import Policy
from vlastack.policy_formats import detect_policy_format
from vlastack.pretrained.lerobot.pi0 import Pi0Network, Pi0Spec
from vlastack.pretrained.lerobot.pi0_inputs import (
    ByteTokenizer,
    discretize_state,
    load_tokenizer,
    pad_state,
    resize_with_pad,
)
from vlastack.pretrained.lerobot.pi0_policy import LeRobotPi0Policy, load_lerobot_pi0
from vlastack.pretrained.lerobot.pi0_weights import expected_shapes, unused_at_inference

KINDS = ("pi0", "pi05")


@pytest.fixture(scope="module")
def dirs(fixtures_dir: Path) -> dict[str, Path]:
    return {k: G.policy_dir(fixtures_dir, k) for k in KINDS}


@pytest.fixture(scope="module")
def goldens(dirs) -> dict[str, dict[str, torch.Tensor]]:
    return {k: G.golden(d) for k, d in dirs.items()}


@pytest.fixture(scope="module")
def infos(dirs) -> dict[str, dict]:
    return {k: json.loads((d / "golden.json").read_text()) for k, d in dirs.items()}


@pytest.fixture(scope="module")
def policies(dirs) -> dict[str, LeRobotPi0Policy]:
    return {
        k: load_lerobot_pi0(d / "pretrained_model", device="cpu", tokenizer=ByteTokenizer())
        for k, d in dirs.items()
    }


def observation(golden, info, i) -> dict:
    obs = raw_obs(golden, i)
    obs["task"] = info["observations"][i]["task"]
    return obs


@pytest.mark.parametrize("i", OBS)
@pytest.mark.parametrize("kind", KINDS)
def test_each_preprocessing_step_matches_lerobot(policies, goldens, infos, kind, i):
    g, info, policy = goldens[kind], infos[kind], policies[kind]
    inputs = policy.preprocess([observation(g, info, i)])
    # the text the tokenizer got: pi0 "task\n", pi0.5 the discretized-state prompt
    assert inputs.prompts == info["observations"][i]["tokenizer_input_text"]
    # every tensor of the preprocessor's output, bit for bit
    pre = f"obs{i}.preprocessed."
    assert set(inputs.batch) == {k[len(pre) :] for k in g if k.startswith(pre)}
    for key, value in inputs.batch.items():
        assert torch.equal(value, g[pre + key]), key
    # the byte-level tokenizer stand-in alone: ids, right padding to 48 / 200
    ids, mask = ByteTokenizer()(inputs.prompts, 200 if kind == "pi05" else 48)
    assert torch.equal(ids, g[pre + "observation.language.tokens"])
    assert torch.equal(mask, g[pre + "observation.language.attention_mask"])
    # sample_actions' arguments: resize-with-pad to 56x56 in [-1, 1], masks, padded state
    sa = f"obs{i}.sample_actions."
    for j, key in enumerate(["observation.images.top", "observation.images.wrist"]):
        assert torch.equal(resize_with_pad(g[pre + key], 56), g[sa + f"images.{j}"])
        assert torch.equal(inputs.images[j], g[sa + f"images.{j}"])
        assert torch.equal(inputs.img_masks[j], g[sa + f"img_masks.{j}"])
    if kind == "pi0":
        assert torch.equal(pad_state(g[pre + "observation.state"], 32), g[sa + "state"])
        assert torch.equal(inputs.state, g[sa + "state"])
    else:
        assert inputs.state is None and sa + "state" not in g


def test_resize_with_pad_is_centred_with_zero_then_minus_one(goldens):
    img = goldens["pi0"]["obs0.preprocessed.observation.images.top"]  # 48x64 -> 42x56 + 7 + 7
    out = resize_with_pad(img, 56)
    assert out.shape == (1, 3, 56, 56)
    assert (out[:, :, :7] == -1).all() and (out[:, :, 49:] == -1).all()
    assert (out[:, :, 7:49] > -1).any(dim=(0, 1, 3)).all()


def test_state_bins_at_the_edges():
    """LeRobot's np.digitize over linspace(-1, 1, 257)[:-1], minus 1."""
    step = 2 / 256
    x = np.array([-1.5, -1.0, -1.0 + step, 0.0, 1 - step - 1e-6, 1 - step, 1.0, 3.0], np.float64)
    assert discretize_state(x).tolist() == [-1, 0, 1, 128, 254, 255, 255, 255]


@pytest.mark.parametrize("kind", KINDS)
def test_sample_actions_from_the_recorded_inputs(policies, goldens, dirs, kind):
    torch.set_num_threads(1)  # the goldens' thread count (restored by conftest)
    g, tol = goldens[kind], G.tolerance(dirs[kind])["sample_actions.output"]
    core = policies[kind].network.model
    for i in OBS:
        sa = f"obs{i}.sample_actions."
        out = core.sample_actions(
            [g[sa + "images.0"], g[sa + "images.1"]],
            [g[sa + "img_masks.0"], g[sa + "img_masks.1"]],
            g[sa + "lang_tokens"],
            g[sa + "lang_masks"],
            g.get(sa + "state"),
            g[sa + "noise"],
        )
        assert max_abs(out, g[sa + "output"]) <= tol, (kind, i)


@pytest.mark.parametrize("kind", KINDS)
def test_normalized_and_final_chunks(policies, goldens, infos, dirs, kind):
    torch.set_num_threads(1)
    g, info, policy = goldens[kind], infos[kind], policies[kind]
    tol = G.tolerance(dirs[kind])
    for i in OBS:
        inputs = policy.preprocess([observation(g, info, i)])
        chunk = policy.predict_normalized(inputs, g[f"obs{i}.noise"])
        err = max_abs(chunk, g[f"obs{i}.action_chunk_normalized"])
        assert err <= tol["action_chunk_normalized"], (kind, i, err)
        final = policy.postprocess(chunk, inputs.raw_state)
        err = max_abs(final, g[f"obs{i}.action_chunk"])
        assert err <= tol["action_chunk (dataset units)"], (kind, i, err)


@pytest.mark.parametrize("kind", KINDS)
def test_policy_from_checkpoint_gives_the_golden_chunk(dirs, goldens, infos, kind, monkeypatch):
    """Through the format seam; the byte tokenizer chosen by the documented variable."""
    monkeypatch.setenv("VLASTACK_LEROBOT_TOKENIZER", "bytes")
    folder = dirs[kind] / "pretrained_model"
    assert detect_policy_format(folder).name == f"lerobot_{kind}"
    policy = Policy.from_checkpoint(folder, device="cpu")
    assert isinstance(policy, LeRobotPi0Policy)
    g, info = goldens[kind], infos[kind]
    tol = G.tolerance(dirs[kind])["action_chunk (dataset units)"]
    for i in OBS:
        # the recorded noise, drawn the way the policy draws its own when none is given
        policy._generator = _noise_generator(g[f"obs{i}.noise"])
        actions = policy.infer(observation(g, info, i))["actions"]
        assert actions.shape == (10, 6) and actions.dtype == np.float32
        assert max_abs(torch.from_numpy(actions), g[f"obs{i}.action_chunk"][0]) <= tol
    meta = policy.metadata
    assert meta["format"] == f"lerobot_{kind}" and meta["action_horizon"] == 10
    assert meta["cameras"] == ["observation.images.top", "observation.images.wrist"]


def _noise_generator(noise: torch.Tensor) -> torch.Generator:
    """The fixtures' noise is ``torch.randn(shape, generator=Generator().manual_seed(1000 +
    i))``; find the seed that reproduces it."""
    for seed in range(1000, 1003):
        if torch.equal(
            torch.randn(noise.shape, generator=torch.Generator().manual_seed(seed)), noise
        ):
            return torch.Generator().manual_seed(seed)
    raise AssertionError("the recorded noise is not from seeds 1000..1002")


def test_seeded_noise_and_reset(policies, goldens, infos):
    policy = policies["pi05"]
    obs = observation(goldens["pi05"], infos["pi05"], 1)
    policy.reset()
    first = policy.infer(obs)["actions"]
    second = policy.infer(obs)["actions"]
    policy.reset()
    np.testing.assert_array_equal(policy.infer(obs)["actions"], first)
    assert not np.array_equal(first, second)


@pytest.mark.parametrize("kind", KINDS)
def test_full_size_model_has_every_key_of_full_keys_json(dirs, infos, kind):
    full = json.loads((dirs[kind] / "full_keys.json").read_text())
    spec = Pi0Spec.from_config({"type": full["policy_type"], **full["config"]})
    assert (spec.vlm.width, spec.expert.width, spec.pali.vocab) == (2048, 1024, 257152)
    assert spec.pali.vision.hidden == 1152 and spec.image_size == 224
    want = {k: tuple(v["shape"]) for k, v in full["keys"].items()}
    built = expected_shapes(spec)
    assert len(want) == full["num_tensors"]
    assert built == want
    assert sum(int(np.prod(s)) for s in built.values()) == full["params"]
    # what the network holds = every key but the two lm_heads, which are checked and skipped
    with torch.device("meta"):
        net = Pi0Network(spec)
    held = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    unused = unused_at_inference(spec)
    assert set(want) - set(held) == set(unused[:1] + unused[-1:])
    assert set(unused) <= set(want)
    # the keys LeRobot saves but never uses, named as its own probe names them for the fixture
    fixture_spec = Pi0Spec.from_config(
        json.loads((dirs[kind] / "pretrained_model" / "config.json").read_text())
    )
    assert set(unused_at_inference(fixture_spec)) == set(
        infos[kind]["unused_at_inference"]["unused"]
    )


def test_every_fixture_key_is_consumed(policies, dirs):
    from safetensors import safe_open

    for kind, policy in policies.items():
        file = dirs[kind] / "pretrained_model" / "model.safetensors"
        with safe_open(str(file), "pt") as f:
            in_file = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
        assert expected_shapes(policy.spec) == in_file
        held = {k: tuple(v.shape) for k, v in policy.network.state_dict().items()}
        assert {**held, **{k: in_file[k] for k in set(in_file) - set(held)}} == in_file


def test_embed_tokens_falls_back_to_lm_head(dirs, goldens, infos, tmp_path):
    """LeRobot's _fix_pytorch_state_dict_keys: without embed_tokens the lm_head is the
    embedding (with it, the saved embed_tokens wins: the golden tests above)."""
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "ck"
    shutil.copytree(dirs["pi0"] / "pretrained_model", folder)
    sd = load_file(str(folder / "model.safetensors"))
    embed = "model.paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight"
    head = "model.paligemma_with_expert.paligemma.lm_head.weight"
    assert not torch.equal(sd[embed], sd[head])
    saved_embed = sd.pop(embed)
    save_file(sd, str(folder / "model.safetensors"))
    policy = load_lerobot_pi0(folder, device="cpu", tokenizer="bytes")
    held = policy.network.state_dict()[embed]
    assert torch.equal(held, sd[head]) and not torch.equal(held, saved_embed)


def _copy(dirs, kind, tmp_path) -> Path:
    folder = tmp_path / kind
    shutil.copytree(dirs[kind] / "pretrained_model", folder)
    return folder


def _edit(folder: Path, name: str, **changes) -> None:
    cfg = json.loads((folder / name).read_text())
    cfg.update(changes)
    (folder / name).write_text(json.dumps(cfg))


def test_bad_checkpoints_get_errors_naming_the_key(dirs, tmp_path):
    folder = _copy(dirs, "pi0", tmp_path)
    _edit(folder, "config.json", max_state_dim=16)
    with pytest.raises(ConfigError, match=r"model\.state_proj\.weight is \(32, 32\) in the file"):
        load_lerobot_pi0(folder, tokenizer="bytes")
    _edit(folder, "config.json", max_state_dim=32, paligemma_variant="gemma_7b")
    with pytest.raises(ConfigError, match="'paligemma_variant' is 'gemma_7b'"):
        load_lerobot_pi0(folder, tokenizer="bytes")
    _edit(folder, "config.json", paligemma_variant="dummy", image_resolution=[56, 48])
    with pytest.raises(ConfigError, match="'image_resolution'.*not square"):
        load_lerobot_pi0(folder, tokenizer="bytes")
    _edit(folder, "config.json", image_resolution=[56, 56], chunk_size="10")
    with pytest.raises(ConfigError, match="'chunk_size' must be a positive integer"):
        load_lerobot_pi0(folder, tokenizer="bytes")
    # a pi05 config on pi0 weights: the missing / extra keys are named
    _edit(folder, "config.json", chunk_size=10, type="pi05")
    assert detect_policy_format(folder).name == "lerobot_pi05"
    with pytest.raises(ConfigError, match=r"missing from the file: .*time_mlp_in"):
        load_lerobot_pi0(folder, tokenizer="bytes")
    _edit(folder, "config.json", type="act")
    with pytest.raises(ConfigError, match="'type' is 'act'"):
        load_lerobot_pi0(folder, policy_type="pi0", tokenizer="bytes")


def test_missing_or_incomplete_stats_are_named(dirs, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = _copy(dirs, "pi05", tmp_path)
    stats_file = folder / "policy_preprocessor_step_3_normalizer_processor.safetensors"
    stats = load_file(str(stats_file))
    save_file({k: v for k, v in stats.items() if k != "observation.state.q99"}, str(stats_file))
    with pytest.raises(
        ConfigError, match=r"stats of 'observation.state' lack q99, which QUANTILES"
    ):
        load_lerobot_pi0(folder, tokenizer="bytes")
    stats_file.unlink()
    with pytest.raises(ConfigError, match=r"normalizer_processor\.safetensors is missing"):
        load_lerobot_pi0(folder, tokenizer="bytes")


def test_unsupported_steps_and_missing_task(dirs, goldens, policies, tmp_path):
    folder = _copy(dirs, "pi05", tmp_path)
    pre = json.loads((folder / "policy_preprocessor.json").read_text())
    steps = pre["steps"]
    steps[3], steps[4] = steps[4], steps[3]  # the state prompt before the normalizer
    (folder / "policy_preprocessor.json").write_text(json.dumps(pre))
    with pytest.raises(ConfigError, match="must come after the normalizer"):
        load_lerobot_pi0(folder, tokenizer="bytes")
    steps[3], steps[4] = steps[4], steps[3]
    steps[5]["config"]["padding_side"] = "left"
    (folder / "policy_preprocessor.json").write_text(json.dumps(pre))
    with pytest.raises(ConfigError, match="'padding_side' is 'left'"):
        load_lerobot_pi0(folder, tokenizer="bytes")
    # no task: '' as lerobot_eval sends (the pi0 prompt is then just the newline)
    assert policies["pi0"].preprocess([raw_obs(goldens["pi0"], 0)]).prompts == ["\n"]
    with pytest.raises(ConfigError, match="'task' must be a string"):
        policies["pi0"].infer({**raw_obs(goldens["pi0"], 0), "task": 3})
    obs = {**raw_obs(goldens["pi0"], 0), "prompt": np.array("pick up the red block")}
    assert policies["pi0"].infer(obs)["actions"].shape == (10, 6)


def test_relative_actions_add_the_raw_state_back(dirs, goldens, infos, tmp_path):
    """``use_relative_actions``: LeRobot's absolute_actions_processor adds the state cached
    before normalization to the unnormalized chunk, except for excluded joints."""
    folder = _copy(dirs, "pi0", tmp_path)
    pre = json.loads((folder / "policy_preprocessor.json").read_text())
    rel = next(s for s in pre["steps"] if s["registry_name"] == "relative_actions_processor")
    rel["config"].update(enabled=True, action_names=["a", "b", "c", "d", "e", "gripper"])
    (folder / "policy_preprocessor.json").write_text(json.dumps(pre))
    policy = load_lerobot_pi0(folder, device="cpu", tokenizer="bytes")
    g, info = goldens["pi0"], infos["pi0"]
    inputs = policy.preprocess([observation(g, info, 0)])
    chunk = policy.predict_normalized(inputs, g["obs0.noise"])
    out = policy.postprocess(chunk, inputs.raw_state)
    state = g["obs0.raw.observation.state"]
    want = g["obs0.action_chunk"].clone()
    want[..., :5] += state[:5]
    assert max_abs(out, want) <= 1e-4


def test_tokenizer_from_a_local_folder_and_the_cache(tmp_path, monkeypatch):
    """A transformers tokenizer saved in a folder (a tiny word-level one built here, standing
    in for PaliGemma's), loaded with local_files_only, padded right to max_length; the same
    files in a Hugging Face cache layout are found by name; a name not cached is an error
    naming the download command."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<bos>": 2, "pick": 5, "up": 6, "the": 7, "cube": 8, "<unk>": 1}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", unk_token="<unk>")
    folder = tmp_path / "tok"
    fast.save_pretrained(folder)
    tok = load_tokenizer(folder, "ignored", tmp_path)
    ids, mask = tok(["pick up the cube", "the"], 6)
    assert ids.tolist() == [[5, 6, 7, 8, 0, 0], [7, 0, 0, 0, 0, 0]]
    assert mask.tolist() == [[True] * 4 + [False] * 2, [True] + [False] * 5]
    assert ids.dtype == torch.int64 and mask.dtype == torch.bool
    # the Hugging Face cache layout, resolved by the processor's tokenizer_name
    cache = tmp_path / "hub"
    repo = cache / "models--google--paligemma-3b-pt-224"
    shutil.copytree(folder, repo / "snapshots" / "abc123")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    cached = load_tokenizer(None, "google/paligemma-3b-pt-224", tmp_path)
    assert torch.equal(cached(["pick up the cube"], 6)[0], ids[:1])
    with pytest.raises(ConfigError, match="hf download google/not-cached"):
        load_tokenizer(None, "google/not-cached", tmp_path)
    with pytest.raises(ConfigError, match="is not a folder"):
        load_tokenizer(str(tmp_path / "nope"), "x", tmp_path)


def test_policy_with_a_real_tokenizer_folder(dirs, goldens, infos, tmp_path):
    """A pi0 folder with a ``tokenizer/`` subfolder uses it (no stand-in, no cache)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel({"<pad>": 0, "<unk>": 1, "pick": 5}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    folder = _copy(dirs, "pi0", tmp_path)
    PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>").save_pretrained(
        folder / "tokenizer"
    )
    policy = load_lerobot_pi0(folder, device="cpu")
    inputs = policy.preprocess([observation(goldens["pi0"], infos["pi0"], 0)])
    tokens = inputs.batch["observation.language.tokens"]
    assert tokens.shape == (1, 48) and tokens[0, 0].item() == 5 and tokens[0, 5:].eq(0).all()
    assert policy.infer(observation(goldens["pi0"], infos["pi0"], 0))["actions"].shape == (10, 6)


def training_loss(policy: LeRobotPi0Policy, g: dict, i: int) -> torch.Tensor:
    """``flow_matching_loss`` on golden obs ``i``'s model inputs, actions = its golden chunk
    padded to 32, its noise, time 0.3 (what lerobot_pi0_tiny_script.py gives LeRobot)."""
    from vlastack.pretrained.lerobot.pi0_train import flow_matching_loss

    sa = f"obs{i}.sample_actions."
    with torch.no_grad():
        return flow_matching_loss(
            policy.network.model,
            [g[sa + "images.0"], g[sa + "images.1"]],
            [g[sa + "img_masks.0"], g[sa + "img_masks.1"]],
            g[sa + "lang_tokens"],
            g[sa + "lang_masks"],
            g.get(sa + "state"),
            torch.nn.functional.pad(g[f"obs{i}.action_chunk_normalized"], (0, 26)),
            g[f"obs{i}.noise"],
            torch.tensor([0.3]),
        )


@pytest.mark.parametrize("kind", KINDS)
def test_training_loss_is_small_at_the_sampled_chunk_and_has_gradients(policies, goldens, kind):
    """Sanity of the training forward without LeRobot (the exact check is the slow test):
    per-element (B, chunk, 32); the expert and projections get gradients."""
    from vlastack.pretrained.lerobot.pi0_train import flow_matching_loss

    g, policy = goldens[kind], policies[kind]
    loss = training_loss(policy, g, 0)
    assert loss.shape == (1, 10, 32) and torch.isfinite(loss).all()
    net = policy.network.model
    sa = "obs0.sample_actions."
    with torch.enable_grad():
        out = flow_matching_loss(
            net,
            [g[sa + "images.0"], g[sa + "images.1"]],
            [g[sa + "img_masks.0"], g[sa + "img_masks.1"]],
            g[sa + "lang_tokens"],
            g[sa + "lang_masks"],
            g.get(sa + "state"),
            torch.zeros(1, 10, 32),
            g["obs0.noise"],
            torch.tensor([0.5]),
        ).mean()
        out.backward()
    grads = {n: p.grad for n, p in net.named_parameters() if p.grad is not None}
    assert "action_out_proj.weight" in grads
    assert any(n.startswith("paligemma_with_expert.gemma_expert.") for n in grads)
    assert any(".vision_tower." in n for n in grads)
    net.zero_grad(set_to_none=True)


@pytest.mark.slow  # starts LeRobot 0.6.1 in a subprocess and loads six policies: ~45 s
def test_same_bits_as_lerobot_in_float32_and_bfloat16(dirs, goldens, infos, tmp_path):
    """LeRobot 0.6.1 itself (its interpreter, a subprocess) and vlastack, both at 2 threads,
    on the golden preprocessed batches and noise: identical chunks and identical training
    losses (``flow_matching_loss`` vs LeRobot's ``model.forward``), for the fixtures as they are
    (float32) and with config ``dtype`` bfloat16 (LeRobot's selective cast: vision, norms and
    projections stay float32, RoPE frequencies rounded to bfloat16), and for a changed policy
    written back by ``write_pretrained`` (LeRobot's ``from_pretrained`` loads it). At 2 threads LeRobot's own
    float32 chunks differ from the 1-thread goldens by up to 4.8e-7 here."""
    import subprocess

    from safetensors.torch import load_file

    from _lerobot_python import lerobot_python

    py = lerobot_python()
    cases = []
    for kind in KINDS:
        cases.append((kind, dirs[kind]))
        bf = tmp_path / "bf16" / kind
        shutil.copytree(dirs[kind] / "pretrained_model", bf / "pretrained_model")
        shutil.copy(dirs[kind] / "golden.safetensors", bf)
        _edit(bf / "pretrained_model", "config.json", dtype="bfloat16")
        cases.append((kind, bf))
        # a changed policy written back by vlastack (export lerobot): LeRobot loads it
        from vlastack.pretrained.lerobot.write import write_pretrained

        tuned = load_lerobot_pi0(dirs[kind] / "pretrained_model", device="cpu", tokenizer="bytes")
        with torch.no_grad():
            tuned.network.model.action_in_proj.weight.mul_(1.5)
        ex = tmp_path / "export" / kind
        write_pretrained(tuned, ex / "pretrained_model")
        shutil.copy(dirs[kind] / "golden.safetensors", ex)
        cases.append((kind, ex))
    script = Path(__file__).with_name("lerobot_pi0_tiny_script.py")
    out = tmp_path / "lerobot.safetensors"
    proc = subprocess.run(
        [py, str(script), "2", str(out), *(str(d) for _, d in cases)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    theirs = load_file(str(out))
    torch.set_num_threads(2)
    for n, (kind, d) in enumerate(cases):
        policy = load_lerobot_pi0(d / "pretrained_model", device="cpu", tokenizer="bytes")
        g = goldens[kind]
        for i in OBS:
            inputs = policy.preprocess([observation(g, infos[kind], i)])
            ours = policy.predict_normalized(inputs, g[f"obs{i}.noise"])
            assert torch.equal(ours, theirs[f"{n}.obs{i}"]), (str(d), i)
            loss = training_loss(policy, g, i)
            assert torch.equal(loss, theirs[f"{n}.loss{i}"]), (str(d), i)


def test_registration_and_detection_do_not_import_the_network_modules(dirs):
    import subprocess
    import sys

    heavy = (
        "pi0",
        "pi0_policy",
        "pi0_weights",
        "pi0_inputs",
        "gemma",
        "paligemma",
        "flow",
        "openpi_pi0",
    )
    code = (
        "import sys, vlastack.policy_formats as pf; "
        f"print([pf.detect_policy_format(p).name for p in {[str(d / 'pretrained_model') for d in dirs.values()]!r}], "
        f"[m for m in sys.modules if m.rsplit('.', 1)[-1] in {heavy!r} "
        "and m.startswith('vlastack.pretrained.lerobot.')])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "['lerobot_pi0', 'lerobot_pi05'] []"


@pytest.mark.parametrize("kind", KINDS)
def test_a_batch_of_three_gives_each_observations_chunk(policies, goldens, infos, kind):
    """Three observations in one call (different prompt lengths, so different pad masks):
    each row is that observation's golden chunk (batched matmuls round differently)."""
    g, info, policy = goldens[kind], infos[kind], policies[kind]
    inputs = policy.preprocess([observation(g, info, i) for i in OBS])
    noise = torch.cat([g[f"obs{i}.noise"] for i in OBS])
    chunk = policy.predict_normalized(inputs, noise)
    final = policy.postprocess(chunk, inputs.raw_state)
    for i in OBS:
        assert max_abs(chunk[i : i + 1], g[f"obs{i}.action_chunk_normalized"]) <= 1e-5, i
        assert max_abs(final[i : i + 1], g[f"obs{i}.action_chunk"]) <= 1e-3, i


@pytest.mark.parametrize("kind", KINDS)
def test_export_back_round_trip(dirs, goldens, infos, tmp_path, kind):
    """``vlastack export lerobot``: the six files come back byte for byte (lm_heads re-read
    from the source), and a changed weight is carried through import -> export -> import."""
    from vlastack.pretrained.lerobot.write import export_checkpoint, write_pretrained

    src = dirs[kind] / "pretrained_model"
    out = export_checkpoint(src, tmp_path / "out")
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in src.iterdir())
    for f in src.iterdir():
        assert (out / f.name).read_bytes() == f.read_bytes(), f.name
    policy = load_lerobot_pi0(src, device="cpu", tokenizer="bytes")
    with torch.no_grad():
        policy.network.model.action_out_proj.bias.add_(0.5)
    write_pretrained(policy, tmp_path / "tuned")
    again = load_lerobot_pi0(tmp_path / "tuned", device="cpu", tokenizer="bytes")
    g, info = goldens[kind], infos[kind]
    obs = observation(g, info, 0)
    for p in (policy, again):
        p.reset()
    np.testing.assert_array_equal(again.infer(obs)["actions"], policy.infer(obs)["actions"])


def test_empty_cameras_are_masked_slots(dirs, goldens, infos, tmp_path):
    """config ``empty_cameras``: LeRobot adds ``observation.images.empty_camera_<i>``, which no
    client sends; each is an all -1 image with mask False after the real cameras, so the chunk
    stays the golden one (masked tokens are invisible; only rounding may move)."""
    folder = _copy(dirs, "pi0", tmp_path)
    _edit(folder, "config.json", empty_cameras=1)
    policy = load_lerobot_pi0(folder, device="cpu", tokenizer="bytes")
    g, info = goldens["pi0"], infos["pi0"]
    inputs = policy.preprocess([observation(g, info, 0)])
    assert [m.item() for m in inputs.img_masks] == [True, True, False]
    assert (inputs.images[2] == -1).all()
    chunk = policy.predict_normalized(inputs, g["obs0.noise"])
    assert max_abs(chunk, g["obs0.action_chunk_normalized"]) <= 1e-5
    assert "observation.images.empty_camera_0" not in policy.metadata["cameras"]


@pytest.mark.parametrize("kind", KINDS)
def test_policy_training_loss(policies, goldens, infos, kind):
    """``training_loss``: the actions normalized by the checkpoint's stats and padded, then
    LeRobot's per-element loss averaged over the real dims; drawn noise/time are seeded."""
    g, info, policy = goldens[kind], infos[kind], policies[kind]
    obs = [observation(g, info, 0)]
    actions = g["obs0.action_chunk"]  # dataset units; normalizes to the golden normalized chunk
    time = torch.tensor([0.3])
    loss = policy.training_loss(obs, actions, g["obs0.noise"], time)
    padded = torch.nn.functional.pad(
        policy.processors.normalizer.normalize("action", actions), (0, 26)
    )
    assert max_abs(padded[..., :6], g["obs0.action_chunk_normalized"]) < 1e-5
    want = training_loss(policy, g, 0)[:, :, :6].mean()
    assert abs(loss.item() - want.item()) <= 1e-6 * max(1.0, want.item())
    policy.reset()
    first = policy.training_loss(obs, actions)
    policy.reset()
    assert policy.training_loss(obs, actions).item() == first.item()
