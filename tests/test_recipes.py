"""Every recipe builds, runs one optimizer step and samples a chunk; overrides and --backbone work."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _model_batches import make_batch  # noqa: E402
from vlastack.data.normalization import NormalizationConfig  # noqa: E402
from vlastack.errors import ConfigError  # noqa: E402
from vlastack.models.vla import build_vla  # noqa: E402
from vlastack.recipes import RECIPES, TRAIN_KEYS, get_recipe  # noqa: E402

REQUIRED = {
    "rt1",
    "rt2",
    "rt_h",
    "octo",
    "openvla",
    "openvla_oft",
    "pi0",
    "pi0_fast",
    "pi05",
    "smolvla",
    "diffusion_policy",
    "act",
    "bitvla",
    "cpu_default",
    "flower",
    "hierarchy",
}


def test_all_required_recipes_are_registered_with_docs():
    assert set(RECIPES) >= REQUIRED
    for name in RECIPES:
        fn = RECIPES.get(name)
        assert fn.__doc__ and len(fn.__doc__.strip()) > 40, name
        r = fn()
        assert r.name == name and r.paper and set(r.train) <= set(TRAIN_KEYS)
        NormalizationConfig(dict(r.normalization))  # valid modes for the Normalizer


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_recipe_trains_one_step_and_samples(name):
    torch.manual_seed(0)
    r = get_recipe(name, image_size=(48, 48))
    model = build_vla(r.model)
    batch = make_batch(r.model, B=2)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=r.train["lr"], betas=tuple(r.train["betas"]))
    before = [p.detach().clone() for p in params]
    loss = model.loss(batch)
    assert loss.shape == (2,) and torch.isfinite(loss).all()
    loss.mean().backward()
    opt.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, params))
    model.eval()
    actions = model.sample_actions(batch, generator=torch.Generator().manual_seed(0))
    assert actions.shape == (2, r.model.action_horizon, r.model.action_dim)
    assert torch.isfinite(actions).all()


def test_recipe_characteristics_follow_the_papers():
    assert (
        get_recipe("rt2").model.action_tokens_in_lm
        and get_recipe("openvla").model.action_tokens_in_lm
    )
    pi05 = get_recipe("pi05").model
    assert pi05.insulate_head and pi05.aux_token_loss == "fast"
    assert get_recipe("rt1").model.film and get_recipe("rt1").model.projector == "token_learner"
    assert get_recipe("rt_h").model.motion_hierarchy
    assert set(get_recipe("bitvla").model.ternary) == {"language", "vision"}
    assert get_recipe("diffusion_policy").model.head_kwargs["num_train_timesteps"] == 100
    assert get_recipe("openvla").normalization["action"] == "quantile"
    assert get_recipe("act").normalization["action"] == "mean_std"
    assert get_recipe("act").model.head_kwargs["activation"] == "relu"  # DETR's FFN, as ACT's
    assert get_recipe("smolvla").model.language_kwargs["num_layers"] == 2


def test_overrides_and_did_you_mean():
    r = get_recipe("cpu_default", action_dim=7, lr=1e-3, head_kwargs={"width": 32, "depth": 1})
    assert r.model.action_dim == 7 and r.train["lr"] == 1e-3
    assert get_recipe("cpu_default").model.action_dim == 2  # recipes are fresh copies
    with pytest.raises(ConfigError, match="Did you mean 'action_dim'"):
        get_recipe("cpu_default", actoin_dim=3)
    with pytest.raises(ConfigError, match="Did you mean 'openvla'"):
        get_recipe("openvl")
    with pytest.raises(ConfigError, match="no hub backbone"):
        get_recipe("diffusion_policy", backbone="some/model")


def test_backbone_override_loads_a_local_folder(tmp_path):
    torch.manual_seed(0)
    r = get_recipe("pi0")
    lm = build_vla(r.model).language
    lm.model.save_pretrained(tmp_path / "lm")
    lm.tokenizer.save_pretrained(tmp_path / "lm")
    r2 = get_recipe("pi0", backbone=str(tmp_path / "lm"))
    assert r2.model.language_kwargs["pretrained"] == str(tmp_path / "lm")
    loaded = build_vla(r2.model).language
    for (k, a), (_, b) in zip(lm.model.state_dict().items(), loaded.model.state_dict().items()):
        assert torch.equal(a, b), k


def test_list_command_prints_every_family(capsys):
    import json

    from vlastack.cli.main import main

    assert main(["list", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["recipes"]) >= REQUIRED
    assert {"small_cnn", "mobilenet_v2"} <= set(out["encoders"])
    assert {"minilm", "hf_causal_lm"} <= set(out["backbones"])
    assert set(out["projectors"]) == {"mlp", "perceiver", "token_learner"}
    assert "flow_matching" in out["heads"]
    assert all(desc for fam in out.values() if isinstance(fam, dict) for desc in fam.values())
    assert main(["list", "nope"]) == 2
