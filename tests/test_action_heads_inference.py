"""The native runner (runners/native: fused weight packs, cached query constants, dropped
all-valid masks) must give the plain modules' chunks, stand aside for layers it does not run,
and see changed weights once it is rebuilt (a runner is built for frozen weights)."""

from __future__ import annotations

import pytest
import torch

from vlastack.models.action_heads import ACTION_HEADS, build_action_head
from vlastack.runners.native import NativeRunner
from vlastack.runners.native.decoder import DecoderPlan
from vlastack.runners.native.linear import plain_linears

D, A, H = 24, 5, 8
HEADS = [n for n in ACTION_HEADS if n != "fast"]  # FAST needs a fitted tokenizer


def native(head):
    """``head.sample_actions`` through a native runner built now."""
    return NativeRunner().head(head)


def make(name: str, width: int = 32):
    torch.manual_seed(0)
    cfg = {"width": width, "num_heads": 2, "mlp_ratio": 2.0 if width == 32 else 4.0}
    return build_action_head(name, cfg, context_dim=D, action_dim=A, action_horizon=H).eval()


# width 256: the q/k/v, FFN and context K/V weights are large enough (≥ 131,072 elements) to run
# through oneDNN's prepacked kernel in the decoder plans, the small ones through F.linear; bins_ar
# decodes 40 tokens one row at a time (B = 1: the GEMV branch) through the plan's KV caches
@pytest.mark.parametrize("name", ["act", "diffusion", "l1", "bins", "bins_ar"])
@pytest.mark.parametrize("B,padded", [(1, False), (3, True)])
def test_decoder_plan_matches_reference_at_prepacked_widths(name, B, padded, kernels):
    head = make(name, width=256)
    from vlastack.runners.native import linear as linear_mod

    assert linear_mod._onednn_shape(4 * 256, 256) and not linear_mod._onednn_shape(256, D)
    g = torch.Generator().manual_seed(1)
    context = torch.randn(B, 4, D, generator=g)
    mask = torch.ones(B, 4, dtype=torch.bool)
    if padded:
        mask[1, 1:] = False
    assert DecoderPlan.supports(head.decoder)
    fast = native(head)(context, mask, torch.Generator().manual_seed(0))
    ref = head.sample_actions(context, mask, torch.Generator().manual_seed(0))
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)


def _count_short_memories(monkeypatch, decoder_mod) -> list:
    """A list that gets an entry each time a ``_ShortMemory`` is built."""
    built: list = []

    class Counting(decoder_mod._ShortMemory):
        def __init__(self, *args):
            built.append(1)
            super().__init__(*args)

    monkeypatch.setattr(decoder_mod, "_ShortMemory", Counting)
    return built


@pytest.mark.parametrize("kernels", ["torch"], indirect=True)
def test_single_pass_chunk_takes_the_short_memory_path(monkeypatch, kernels):
    """ACT's one decoder pass over a short memory (16 queries, 5 memory tokens, 2 heads, width
    256) runs re-associated from the first pass on torch's kernels, and still gives the
    reference chunk."""
    from vlastack.runners.native import decoder as decoder_mod

    built = _count_short_memories(monkeypatch, decoder_mod)
    torch.manual_seed(0)
    head = build_action_head(
        "act", {"width": 256, "num_heads": 2}, context_dim=D, action_dim=A, action_horizon=16
    ).eval()
    context = torch.randn(2, 4, D)
    mask = torch.ones(2, 4, dtype=torch.bool)
    mask[1, 3:] = False
    fast = native(head)(context, mask)
    assert built == [1]
    ref = head.sample_actions(context, mask)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kernels", ["native"], indirect=True)
def test_native_loop_reassociates_only_from_the_second_pass(monkeypatch, kernels):
    """On the native kernels ACT's single pass runs the plain cross-attention (its products and
    attention cost less than building Â and VO once), while a sampler's passes over one memory
    (diffusion: 10 steps) build the short memory once, from the second pass; both still give
    the reference chunks."""
    from vlastack.runners.native import decoder as decoder_mod

    built = _count_short_memories(monkeypatch, decoder_mod)
    context = torch.randn(2, 4, D)
    mask = torch.ones(2, 4, dtype=torch.bool)
    mask[1, 3:] = False
    for name, expect in (("act", []), ("diffusion", [1])):
        torch.manual_seed(0)
        cfg = {"width": 256, "num_heads": 2}
        head = build_action_head(name, cfg, context_dim=D, action_dim=A, action_horizon=16).eval()
        with torch.no_grad():
            assert DecoderPlan.supports(head.decoder) and DecoderPlan(head.decoder).native
        built.clear()
        fast = native(head)(context, mask, torch.Generator().manual_seed(0))
        assert built == expect, name
        ref = head.sample_actions(context, mask, torch.Generator().manual_seed(0))
        torch.testing.assert_close(fast, ref, atol=2e-5, rtol=2e-5)


def test_layer_kv_cache_appends_like_concatenation():
    """Growing past its first capacity (16) and appending several tokens at once both give
    what concatenating every step's K/V would."""
    from vlastack.models.layers.attention import LayerKVCache

    cache, ks, vs = LayerKVCache(), [], []
    g = torch.Generator().manual_seed(0)
    for T in [1] * 20 + [5, 1, 17]:
        k, v = torch.randn(2, 3, T, 4, generator=g), torch.randn(2, 3, T, 4, generator=g)
        ks.append(k)
        vs.append(v)
        k_all, v_all = cache.append(k, v)
        assert torch.equal(k_all, torch.cat(ks, 2)) and torch.equal(v_all, torch.cat(vs, 2))
    assert cache.n == 43 and cache.k is not None and cache.k.shape[2] == 64


@pytest.mark.parametrize("how", ["assign", "load_state_dict_assign", "dict_swap"])
def test_decoder_plan_sees_replaced_parameters(how):
    """A parameter replaced by a new tensor (not updated in place): the rebuilt runner sees it."""
    from torch import nn

    head = make("act", width=64)
    context, mask = torch.randn(1, 3, D), torch.ones(1, 3, dtype=torch.bool)
    before = native(head)(context, mask)
    fc1 = head.decoder.blocks[2].mlp[0]
    new = nn.Parameter(fc1.weight.detach() + 0.5 * torch.randn_like(fc1.weight))
    if how == "assign":
        fc1.weight = new
    elif how == "load_state_dict_assign":
        sd = {k: v.clone() for k, v in head.state_dict().items()}
        sd["decoder.blocks.2.mlp.0.weight"] = new.detach().clone()
        head.load_state_dict(sd, assign=True)
    else:  # written straight into the module's parameter dict: no registration hook fires
        fc1._parameters["weight"] = new
    after = native(head)(context, mask)
    ref = head.sample_actions(context, mask)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, ref, atol=1e-5, rtol=1e-5)


def test_cached_plan_sees_a_submodule_replaced_after_caching():
    """A block's activation swapped after a runner was built: the runner built again declines
    the plan for that decoder, and the module path runs the new layer."""
    head = make("diffusion", width=64)
    context, mask = torch.randn(2, 3, D), torch.ones(2, 3, dtype=torch.bool)
    assert DecoderPlan.supports(head.decoder)
    native(head)(context, mask, torch.Generator().manual_seed(0))
    head.decoder.blocks[1].mlp[1] = torch.nn.GELU(approximate="tanh")
    assert not DecoderPlan.supports(head.decoder)
    fast = native(head)(context, mask, torch.Generator().manual_seed(0))
    ref = head.sample_actions(context, mask, torch.Generator().manual_seed(0))
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)


def test_importing_the_heads_installs_no_global_module_hooks():
    """The inference caches check their own keys on use: no torch-wide registration hook."""
    import torch.nn.modules.module as torch_module

    import vlastack.models.action_heads  # noqa: F401
    import vlastack.models.layers  # noqa: F401

    for hooks in (
        torch_module._global_module_registration_hooks,
        torch_module._global_parameter_registration_hooks,
        torch_module._global_buffer_registration_hooks,
    ):
        assert not [h for h in hooks.values() if h.__module__.startswith("vlastack")]


def test_decoder_plan_declines_what_it_does_not_run():
    """A tanh-approximated GELU is not what the plan's fused GELU computes: no plan, and the
    module path (still exact) runs."""
    head = make("diffusion", width=64)
    context, mask = torch.randn(2, 3, D), torch.ones(2, 3, dtype=torch.bool)
    head.decoder.blocks[1].mlp[1] = torch.nn.GELU(approximate="tanh")
    assert not DecoderPlan.supports(head.decoder)
    fast = native(head)(context, mask, torch.Generator().manual_seed(0))
    ref = head.sample_actions(context, mask, torch.Generator().manual_seed(0))
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", HEADS)
@pytest.mark.parametrize("B,padded", [(1, False), (3, True), (2, False)])
def test_fast_path_matches_reference(name, B, padded, kernels):
    head = make(name)
    g = torch.Generator().manual_seed(1)
    context = torch.randn(B, 4, D, generator=g)
    mask = torch.ones(B, 4, dtype=torch.bool)
    if padded:
        mask[1, 2:] = False
    fast = native(head)(context, mask, torch.Generator().manual_seed(0))
    ref = head.sample_actions(context, mask, torch.Generator().manual_seed(0))
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["act", "diffusion", "flow_matching"])
def test_cached_packs_follow_weight_updates(name, kernels):
    """The runner rebuilt after an in-place update gives the updated modules' chunk."""
    head = make(name)
    context, mask = torch.randn(1, 3, D), torch.ones(1, 3, dtype=torch.bool)
    before = native(head)(context, mask, torch.Generator().manual_seed(0))
    with torch.no_grad():  # an in-place update, like an optimizer step or load_state_dict
        for p in head.parameters():
            p.add_(0.05 * torch.randn_like(p))
    after = native(head)(context, mask, torch.Generator().manual_seed(0))
    ref = head.sample_actions(context, mask, torch.Generator().manual_seed(0))
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["act", "l1", "flow_matching"])
def test_fast_path_respects_ternary_linears(name):
    """BitLinear (and int8) layers must not be bypassed by the stacked raw-weight shortcuts."""
    from vlastack.models.bitlinear import ternarize_

    head = make(name)
    assert plain_linears(head)
    assert ternarize_(head) > 0
    assert not plain_linears(head)
    context, mask = torch.randn(2, 4, D), torch.ones(2, 4, dtype=torch.bool)
    fast = native(head)(context, mask, torch.Generator().manual_seed(0))
    ref = head.sample_actions(context, mask, torch.Generator().manual_seed(0))
    torch.testing.assert_close(fast, ref, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", ["act", "l1"])
def test_fast_path_with_weights_cast_under_inference_mode(name):
    """A head cast to bf16 inside ``inference_mode`` has inference-tensor weights: the native
    runner's packs (oneDNN or MKL in bf16) must still build and match the module path."""
    head = make(name)
    context, mask = torch.randn(2, 4, D), torch.ones(2, 4, dtype=torch.bool)
    with torch.inference_mode():
        head = head.to(torch.bfloat16)
        assert next(head.parameters()).is_inference()
        fast = native(head)(context.bfloat16(), mask, torch.Generator().manual_seed(0))
        ref = head.sample_actions(context.bfloat16(), mask, torch.Generator().manual_seed(0))
    assert fast.dtype == torch.bfloat16
    torch.testing.assert_close(fast.float(), ref.float(), atol=3e-2, rtol=3e-2)


def test_fast_path_respects_int8_swap_after_caching():
    """torch's dynamic int8 swap replaces Linear layers after a runner ran; the runner built
    again must notice and let the swapped layers run."""
    head = make("act")
    context, mask = torch.randn(1, 3, D), torch.ones(1, 3, dtype=torch.bool)
    assert plain_linears(head)
    native(head)(context, mask)
    torch.ao.quantization.quantize_dynamic(head, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
    assert not plain_linears(head)
    fast = native(head)(context, mask)
    ref = head.sample_actions(context, mask)
    torch.testing.assert_close(fast, ref, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("activation", [None, "gelu", "relu"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packed_linear_matches_linear(activation, dtype, monkeypatch, kernels):
    from torch import nn

    from vlastack.runners.native import linear as linear_mod

    lin = nn.Linear(512, 320).to(dtype)  # large enough for the prepacked kernel
    x = torch.randn(2, 16, 512, dtype=dtype)
    if linear_mod._mkldnn_linear_ops():
        # bf16 needs AVX-512 or AVX-NE-CONVERT in oneDNN; elsewhere it must stand aside
        assert linear_mod.onednn_plan(lin.weight) == linear_mod._onednn_dtype(dtype)
        assert not linear_mod._onednn_shape(64, 512)  # small: MKL's sgemm
    ref = torch.nn.functional.linear(x, lin.weight, lin.bias)
    fns = {None: lambda y: y, "gelu": torch.nn.functional.gelu, "relu": torch.relu}
    ref = fns[activation](ref)
    tol = 1e-5 if dtype == torch.float32 else 3e-2

    def run(x, onednn):
        plain, fused = linear_mod.plan_linear_fns(onednn, activation or "gelu")
        pack = linear_mod.plan_linear(lin.weight, lin.bias, onednn)
        return fused(x, pack) if activation else plain(x, pack)

    with torch.no_grad():
        onednn = linear_mod.onednn_plan(lin.weight)
        torch.testing.assert_close(run(x, onednn), ref, atol=tol, rtol=tol)
        torch.testing.assert_close(run(x, False), ref, atol=tol, rtol=tol)  # without oneDNN
        x3 = torch.randn(3, 512, dtype=dtype)  # another row count than the pack was made for
        plain = linear_mod.plan_linear_fns(onednn)[0]
        torch.testing.assert_close(
            plain(x3, linear_mod.plan_linear(lin.weight, lin.bias, onednn)),
            torch.nn.functional.linear(x3, lin.weight, lin.bias),
            atol=tol,
            rtol=tol,
        )


def test_head_with_cached_packs_deepcopies_and_pickles():
    """Quantization and checkpoint code copy heads after a runner ran; nothing of the runner
    (oneDNN packs are opaque tensors) is stored on the head, so copies work and agree."""
    import copy
    import io

    head = make("act")
    context, mask = torch.randn(1, 3, D), torch.ones(1, 3, dtype=torch.bool)
    before = native(head)(context, mask)
    assert "_inference_cache" not in head.decoder.__dict__
    clone = copy.deepcopy(head)
    buf = io.BytesIO()
    torch.save(head, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    torch.testing.assert_close(clone.sample_actions(context, mask), before)
    torch.testing.assert_close(loaded.sample_actions(context, mask), before)


@pytest.mark.parametrize("width", [32, 256])
@pytest.mark.parametrize("B,padded", [(1, False), (3, True)])
def test_relu_act_head_fast_path_matches_reference(width, B, padded, kernels):
    """ACT's ReLU feed-forward (DETR's, LeRobot's): the decoder plan fuses ReLU into the first
    FFN product (oneDNN's post-op at width 256) and must give the module path's chunk; the CVAE
    encoder's blocks (training only) take the same activation."""
    torch.manual_seed(0)
    head = build_action_head(
        "act",
        {"width": width, "num_heads": 2, "activation": "relu"},
        context_dim=D,
        action_dim=A,
        action_horizon=H,
    ).eval()
    assert all(type(b.mlp[1]) is torch.nn.ReLU for b in head.decoder.blocks)
    assert all(type(b.mlp[1]) is torch.nn.ReLU for b in head.encoder)
    assert DecoderPlan.supports(head.decoder)
    g = torch.Generator().manual_seed(1)
    context = torch.randn(B, 4, D, generator=g)
    mask = torch.ones(B, 4, dtype=torch.bool)
    if padded:
        mask[1, 1:] = False
    fast = native(head)(context, mask)
    ref = head.sample_actions(context, mask)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    # and a ReLU that differs from GELU on these inputs: the plan really ran ReLU
    gelu = build_action_head(
        "act", {"width": width, "num_heads": 2}, context_dim=D, action_dim=A, action_horizon=H
    ).eval()
    gelu.load_state_dict(head.state_dict())
    assert not torch.allclose(gelu.sample_actions(context, mask), fast, atol=1e-4)


def test_decoder_plan_declines_mixed_activations():
    head = build_action_head(
        "act",
        {"width": 32, "num_heads": 2, "activation": "relu"},
        context_dim=D,
        action_dim=A,
        action_horizon=H,
    ).eval()
    head.decoder.blocks[0].mlp[1] = torch.nn.GELU()
    context, mask = torch.randn(2, 3, D), torch.ones(2, 3, dtype=torch.bool)
    assert not DecoderPlan.supports(head.decoder)
    fast = native(head)(context, mask)
    ref = head.sample_actions(context, mask)
    torch.testing.assert_close(fast, ref, atol=1e-6, rtol=1e-6)


def test_unknown_activation_names_the_field():
    from vlastack.errors import ConfigError

    with pytest.raises(ConfigError, match="activation.*'swish'"):
        build_action_head(
            "act", {"activation": "swish"}, context_dim=D, action_dim=A, action_horizon=H
        )
