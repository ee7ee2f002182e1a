"""FLOWER (recipe ``flower``, head ``flower``): intermediate fusion drops the upper half of the
LM's layers (not stored, not computed), one global AdaLN controller modulates every block, causal
action tokens, 4 Euler steps of rectified flow with a clipped chunk; the VLA-level goldens of
``flower`` and ``hierarchy`` (tests/golden/recipe_trends.py); both recipes in ``vlastack list``."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from vlastack.errors import ConfigError
from vlastack.models.action_heads import FlowerHead, build_action_head
from vlastack.models.action_heads.flower import FlowerBlock, GlobalAdaLN
from vlastack.recipes import get_recipe

GOLDEN = Path(__file__).resolve().parent / "golden"
_spec = importlib.util.spec_from_file_location("recipe_trends", GOLDEN / "recipe_trends.py")
assert _spec is not None and _spec.loader is not None
trends = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(trends)


@pytest.fixture(autouse=True)
def one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def head(**over) -> FlowerHead:
    torch.manual_seed(0)
    cfg = {"width": 32, "depth": 2, "num_heads": 2, **over}
    h = build_action_head("flower", cfg, context_dim=24, action_dim=3, action_horizon=6)
    assert isinstance(h, FlowerHead)
    return h


def inputs(B: int = 2):
    g = torch.Generator().manual_seed(0)
    ctx = torch.randn(B, 5, 24, generator=g)
    mask = torch.ones(B, 5, dtype=torch.bool)
    mask[0, 4:] = False
    return ctx, mask


def test_layer_fraction_keeps_the_lower_half_of_the_lm_and_drops_the_rest():
    from vlastack.models.language import build_language

    full = build_language("hf_causal_lm", {"config": {"num_hidden_layers": 4}})
    torch.manual_seed(0)
    half = build_language(
        "hf_causal_lm", {"config": {"num_hidden_layers": 4}, "layer_fraction": 0.5}
    )
    assert len(half.model.get_decoder().layers) == 2 == half.model.config.num_hidden_layers
    keys = half.state_dict().keys()
    assert not any(".layers.2." in k or ".layers.3." in k for k in keys)  # not stored
    n_full = sum(p.numel() for p in full.parameters())
    n_half = sum(p.numel() for p in half.parameters())
    per_layer = sum(p.numel() for p in full.model.get_decoder().layers[0].parameters())
    assert n_full - n_half == 2 * per_layer
    ran = []  # not computed: only the kept layers run on a forward
    for layer in half.model.get_decoder().layers:
        layer.register_forward_hook(lambda *a: ran.append(1))
    x = torch.randn(1, 3, half.out_dim)
    half.hidden_states(x, torch.ones(1, 3, dtype=torch.bool))
    assert len(ran) == 2
    odd = build_language(
        "hf_causal_lm", {"config": {"num_hidden_layers": 3}, "layer_fraction": 0.5}
    )
    assert len(odd.model.get_decoder().layers) == 2  # rounded up
    with pytest.raises(ConfigError, match="not both"):
        build_language("hf_causal_lm", {"num_layers": 1, "layer_fraction": 0.5})
    with pytest.raises(ConfigError, match="layer_fraction"):
        build_language("hf_causal_lm", {"layer_fraction": 1.5})


def test_recipe_is_flower():
    r = get_recipe("flower")
    assert r.model.head == "flower" and r.model.head_kwargs["num_steps"] == 4
    assert r.model.language == "hf_causal_lm" and r.model.language_kwargs["layer_fraction"] == 0.5
    assert r.normalization["action"] == "quantile"  # the chunk is clipped to [-1, 1]
    assert "2509.04996" in r.paper
    from vlastack.models.vla import build_vla

    model = build_vla(get_recipe("flower", image_size=(32, 32)).model)
    assert len(model.language.model.get_decoder().layers) == 2  # 2 of the tiny LM's 4


def test_one_global_adaln_controller_modulates_every_block():
    h = head(depth=3)
    controllers = [m for m in h.modules() if isinstance(m, GlobalAdaLN)]
    assert len(controllers) == 1
    blocks = [m for m in h.modules() if isinstance(m, FlowerBlock)]
    assert len(blocks) == 3 and all(b.lora is None for b in blocks)  # no per-block modulation
    calls = []
    controllers[0].register_forward_hook(lambda *a: calls.append(1))
    ctx, mask = inputs()
    cache = h.prefix_cache(ctx, mask)
    x, t = torch.randn(2, 6, 3), torch.rand(2)
    ref = h.velocity(x, t, cache)
    assert len(calls) == 1  # once per velocity evaluation, shared by the 3 blocks
    # the signals reach every block: zeroing the controller's weights changes the velocity
    with torch.no_grad():
        controllers[0].proj.weight.zero_()
    assert not torch.allclose(h.velocity(x, t, cache), ref)
    # with lora_dim the blocks add their own low-rank modulation (FLOWER's per-block adapter)
    assert all(b.lora is not None for b in head(lora_dim=8).modules() if isinstance(b, FlowerBlock))


def test_action_tokens_attend_causally():
    h = head().eval()
    ctx, mask = inputs()
    cache = h.prefix_cache(ctx, mask)
    x, t = torch.randn(2, 6, 3), torch.full((2,), 0.5)
    later = x.clone()
    later[:, 4:] += 1.0
    v, v2 = h.velocity(x, t, cache), h.velocity(later, t, cache)
    torch.testing.assert_close(v[:, :4], v2[:, :4])  # earlier tokens do not see later ones
    assert not torch.allclose(v[:, 4:], v2[:, 4:])
    v3 = head(causal=False).eval()
    c3 = v3.prefix_cache(ctx, mask)
    assert not torch.allclose(v3.velocity(x, t, c3)[:, :4], v3.velocity(later, t, c3)[:, :4])


def test_four_euler_steps_uniform_times_and_a_clipped_chunk():
    h = head().eval()
    assert h.num_steps == 4 and h.time_alpha == 1.0 and h.output_range == 1.0
    calls = []
    real = h.velocity
    h.velocity = lambda *a: (calls.append(float(a[1][0])), real(*a))[1]  # type: ignore[method-assign]
    ctx, mask = inputs()
    out = h.sample_actions(ctx, mask, torch.Generator().manual_seed(0))
    assert calls == [1.0, 0.75, 0.5, 0.25]  # t = 1 (noise) → 0, openpi's / FLOWER's grid
    assert out.abs().max() <= 1.0
    big = h.sample_actions(ctx, mask, noise=torch.full((2, 6, 3), 50.0))
    assert big.abs().max() == 1.0  # clamped, as FLOWER does
    free = head(clip_range=None).eval()
    assert free.output_range is None
    assert free.sample_actions(ctx, mask, noise=torch.full((2, 6, 3), 50.0)).abs().max() > 1.0
    assert head(time_sampling="beta").time_alpha == 1.5
    with pytest.raises(ConfigError, match="time_sampling"):
        head(time_sampling="logit")
    with pytest.raises(ConfigError, match="state"):
        head().prefix_cache(ctx, mask, state=torch.zeros(2, 3))


def test_rtc_guidance_works_for_flower():
    h = head().eval()
    ctx, mask = inputs(1)
    prev = torch.full((1, 6, 3), 0.3)
    w = torch.tensor([1.0, 1.0, 1.0, 0.5, 0.0, 0.0])
    out = h.sample_actions_guided(ctx, mask, prev, w, generator=torch.Generator().manual_seed(0))
    free = h.sample_actions(ctx, mask, torch.Generator().manual_seed(0))
    assert out.shape == (1, 6, 3)
    assert (out[0, :3] - 0.3).abs().mean() < (free[0, :3] - 0.3).abs().mean()


@pytest.mark.parametrize("name", trends.NAMES)
def test_vla_golden_outputs(name):
    from safetensors.torch import load_file

    path = GOLDEN / f"vla_{name}.safetensors"
    assert path.exists(), f"missing {path}; run tests/golden/recipe_trends.py"
    ref = load_file(str(path))
    got = trends.golden_outputs(name)
    assert set(got) == set(ref)
    for key in ref:
        if key == "subtask_ids":
            assert torch.equal(got[key], ref[key])
        else:
            torch.testing.assert_close(got[key], ref[key], atol=1e-4, rtol=1e-4)


def test_both_recipes_are_listed_with_their_papers(capsys):
    from vlastack.cli.main import main

    assert main(["list", "recipes", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["recipes"]
    assert "FLOWER" in listed["flower"] and "System 2" in listed["hierarchy"]
    assert "2509.04996" in get_recipe("flower").paper
    assert "2403.01823" in get_recipe("hierarchy").paper
    assert "2504.16054" in get_recipe("hierarchy").paper
