"""openpi PyTorch pi0 / pi0.5 checkpoints load on the same modules as LeRobot's.

No openpi-converted checkpoint ships with the fixtures, so one is derived in tmp_path from each
LeRobot fixture the way openpi's ``convert_jax_model_to_pytorch.py`` lays it out (see
``vlastack.pretrained.lerobot.openpi_pi0``): the state dict without the ``model.`` prefix, the
tied embedding saved once as PaliGemma's ``lm_head.weight`` (``save_model`` keeps the first name
in sorted order), no expert ``lm_head``, openpi's ``config.json`` and
``assets/<asset_id>/norm_stats.json``. What this pins: the key mapping and the tied-embedding
rule (the network equals the LeRobot-loaded one tensor for tensor), pi0.5 told apart by its
keys, the image size from the SigLIP position table, a left-out camera slot masked (the third
openpi slot here, which leaves ``sample_actions`` at LeRobot's golden output within its
tolerance), the prompt cleaning, and openpi's normalization formulas with their 1e-6 (stats
chosen so that openpi's formulas equal LeRobot's up to rounding, so the final chunk is compared
with LeRobot's golden chunk). What it cannot pin: agreement with openpi's own code on a real
converted checkpoint (openpi is not installed here).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import _lerobot_golden as G
from _lerobot_golden import OBS, max_abs, raw_obs
from vlastack.errors import ConfigError
from vlastack.policy_formats import detect_policy_format
from vlastack.pretrained.lerobot.openpi_pi0 import OpenpiNormalizer, load_openpi_pi0
from vlastack.pretrained.lerobot.pi0_policy import load_lerobot_pi0

EMBED = "paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight"
HEAD = "paligemma_with_expert.paligemma.lm_head.weight"
EXPERT_HEAD = "paligemma_with_expert.gemma_expert.lm_head.weight"


def derive_openpi_folder(kind_dir: Path, dst: Path) -> Path:
    src = kind_dir / "pretrained_model"
    cfg = json.loads((src / "config.json").read_text())
    sd = {k.removeprefix("model."): v for k, v in load_file(str(src / "model.safetensors")).items()}
    sd[HEAD] = sd.pop(EMBED)  # tied in openpi's model: one tensor, kept under lm_head
    sd.pop(EXPERT_HEAD)
    dst.mkdir(parents=True)
    save_file(sd, str(dst / "model.safetensors"))
    (dst / "config.json").write_text(
        json.dumps(
            {
                "action_dim": cfg["max_action_dim"],
                "action_horizon": cfg["chunk_size"],
                "paligemma_variant": cfg["paligemma_variant"],
                "action_expert_variant": cfg["action_expert_variant"],
                "precision": "float32",
            }
        )
    )
    pre = next(src.glob("policy_preprocessor_step_*_normalizer_processor.safetensors"))
    stats = load_file(str(pre))
    norm = {}
    for ours, theirs in (("observation.state", "state"), ("action", "actions")):
        s = {n: stats[f"{ours}.{n}"].double() for n in ("mean", "std", "q01", "q99")}
        # openpi divides by std + 1e-6 and by q99 - q01 + 1e-6; LeRobot by std + 1e-8 and
        # q99 - q01: shift the stored stats so both give the same numbers
        s["std"] = s["std"] - 1e-6 + 1e-8
        s["q99"] = s["q99"] - 1e-6
        norm[theirs] = {n: v.float().tolist() for n, v in s.items()}
    (dst / "assets" / "fixture_robot").mkdir(parents=True)
    (dst / "assets" / "fixture_robot" / "norm_stats.json").write_text(
        json.dumps({"norm_stats": norm})
    )
    return dst


def openpi_obs(golden, info, i) -> dict:
    obs = raw_obs(golden, i)
    return {
        "observation/base_0_rgb": obs["observation.images.top"],
        "observation/left_wrist_0_rgb": obs["observation.images.wrist"],
        "observation/state": obs["observation.state"],
        "prompt": info["observations"][i]["task"],
    }


@pytest.mark.parametrize("kind", ["pi0", "pi05"])
def test_openpi_layout_loads_and_gives_lerobots_actions(fixtures_dir, tmp_path, kind):
    torch.set_num_threads(1)
    kind_dir = G.policy_dir(fixtures_dir, kind)
    folder = derive_openpi_folder(kind_dir, tmp_path / "openpi")
    assert detect_policy_format(folder).name == "openpi_pi0"
    policy = load_openpi_pi0(folder, device="cpu", tokenizer="bytes")
    lerobot = load_lerobot_pi0(kind_dir / "pretrained_model", device="cpu", tokenizer="bytes")
    assert policy.spec == lerobot.spec  # pi0 / pi0.5, sizes, image 56 from the position table
    ours, theirs = policy.network.state_dict(), lerobot.network.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert isinstance(policy.processors.normalizer, OpenpiNormalizer)
    assert policy.metadata["format"] == "openpi_pi0"

    g = G.golden(kind_dir)
    info = json.loads((kind_dir / "golden.json").read_text())
    tol = G.tolerance(kind_dir)
    for i in OBS:
        inputs = policy.preprocess([openpi_obs(g, info, i)])
        # openpi's cleaning leaves these tasks as they are: the same text LeRobot tokenized
        assert inputs.prompts == info["observations"][i]["tokenizer_input_text"]
        assert [m.item() for m in inputs.img_masks] == [True, True, False]
        chunk = policy.sample(inputs, g[f"obs{i}.noise"])
        err = max_abs(chunk, g[f"obs{i}.sample_actions.output"])
        assert err <= max(tol["sample_actions.output"], 1e-6), (i, err)
        final = policy.postprocess(chunk[:, :, :6], inputs.raw_state)
        assert max_abs(final, g[f"obs{i}.action_chunk"]) <= 5e-5, i


def test_openpi_normalization_formulas():
    stats = {
        "observation.state": {
            "mean": torch.tensor([1.0]),
            "std": torch.tensor([2.0]),
            "q01": torch.tensor([-3.0]),
            "q99": torch.tensor([5.0]),
        }
    }
    x = torch.tensor([4.0])
    z = OpenpiNormalizer(stats, quantile=False)
    assert z.normalize("observation.state", x).item() == pytest.approx(3 / (2 + 1e-6), rel=1e-7)
    assert z.unnormalize("observation.state", torch.tensor([1.5])).item() == pytest.approx(
        1.5 * (2 + 1e-6) + 1, rel=1e-7
    )
    q = OpenpiNormalizer(stats, quantile=True)
    assert q.normalize("observation.state", x).item() == pytest.approx(
        7 / (8 + 1e-6) * 2 - 1, rel=1e-7
    )
    assert q.unnormalize("observation.state", torch.tensor([0.0])).item() == pytest.approx(
        0.5 * (8 + 1e-6) - 3, rel=1e-7
    )
    assert q.normalize("observation.images.x", x) is x  # no stats: unchanged
    with pytest.raises(ConfigError, match="'state' lacks q01, q99"):
        OpenpiNormalizer({"observation.state": {"mean": x, "std": x}}, quantile=True)


def test_openpi_folder_errors(fixtures_dir, tmp_path):
    folder = derive_openpi_folder(G.policy_dir(fixtures_dir, "pi0"), tmp_path / "o")
    shutil.copytree(folder / "assets" / "fixture_robot", folder / "assets" / "other")
    with pytest.raises(ConfigError, match="several assets/<asset_id>/norm_stats.json"):
        load_openpi_pi0(folder, tokenizer="bytes")
    assert load_openpi_pi0(folder, tokenizer="bytes", asset_id="other").spec.chunk_size == 10
    shutil.rmtree(folder / "assets")
    with pytest.raises(ConfigError, match="no assets/<asset_id>/norm_stats.json"):
        load_openpi_pi0(folder, tokenizer="bytes")
    sd = load_file(str(folder / "model.safetensors"))
    sd.pop("state_proj.weight")
    save_file(sd, str(folder / "model.safetensors"))
    with pytest.raises(ConfigError, match="neither time_mlp_in .pi0.5. nor state_proj"):
        load_openpi_pi0(folder, tokenizer="bytes")


def test_a_prompt_is_cleaned_as_openpi_does(fixtures_dir, tmp_path):
    kind_dir = G.policy_dir(fixtures_dir, "pi0")
    policy = load_openpi_pi0(derive_openpi_folder(kind_dir, tmp_path / "o"), tokenizer="bytes")
    g = G.golden(kind_dir)
    info = json.loads((kind_dir / "golden.json").read_text())
    obs = {**openpi_obs(g, info, 0), "prompt": np.array("  pick_up the\nblock \n")}
    assert policy.preprocess([obs]).prompts == ["pick up the block\n"]


def test_inspect_explains_an_openpi_folder(fixtures_dir, tmp_path, capsys):
    from vlastack.cli.main import main

    folder = derive_openpi_folder(G.policy_dir(fixtures_dir, "pi05"), tmp_path / "o")
    assert main(["inspect", str(folder), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["format"], info["policy_type"], info["chunk_length"]) == ("openpi_pi0", "pi05", 10)
    assert (info["state_dim"], info["action_dim"]) == (6, 6)
    assert info["config"]["image_resolution"] == [56, 56]
    assert info["normalization"].startswith("quantiles")
    assert main(["inspect", str(folder)]) == 0
    assert "left_wrist_0_rgb" in capsys.readouterr().out
