"""vlastack's native CPU kernels (``vlastack.native``): each against the torch ops it stands
for, at the plans' shapes and at awkward ones (one row, tails past the panel width, odd K), in
the build this CPU gets and, in subprocesses, the AVX2 and baseline-x86-64 builds other CPUs
get; and the fallbacks when no compiler is there or the kernels are turned off."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from vlastack import native

pytestmark = pytest.mark.skipif(
    not native.available(), reason=f"native kernels unavailable here: {native.status()}"
)

ACTS = {None: lambda y: y, "relu": F.relu, "gelu": F.gelu}


@pytest.mark.parametrize("N,K", [(768, 256), (7, 256), (256, 1024), (33, 47), (1, 1)])
@pytest.mark.parametrize("M", [1, 3, 4, 16, 17])
@pytest.mark.parametrize("activation", [None, "relu", "gelu"])
def test_linear_matches_torch(N, K, M, activation):
    g = torch.Generator().manual_seed(N * 1000 + K + M)
    w = torch.randn(N, K, generator=g) / K**0.5
    b = torch.randn(N, generator=g)
    x = torch.randn(2, M, K, generator=g)
    r = torch.randn(2, M, N, generator=g)
    pack = native.pack_linear(w, b)
    ref = ACTS[activation](F.linear(x, w, b))
    torch.testing.assert_close(native.linear(x, pack, activation), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        native.linear(x, pack, activation, residual=r), ref + r, atol=1e-5, rtol=1e-5
    )
    # no bias; a non-contiguous input; a broadcast residual
    nb = native.pack_linear(w, None)
    xt = torch.randn(K, 2 * M, generator=g).t()[:M]
    torch.testing.assert_close(native.linear(xt, nb), F.linear(xt, w), atol=1e-5, rtol=1e-5)
    row = torch.randn(N, generator=g)
    torch.testing.assert_close(
        native.linear(x, nb, residual=row), F.linear(x, w) + row, atol=1e-5, rtol=1e-5
    )


def test_gelu_is_exact_gelu_to_float_rounding():
    x = torch.linspace(-12, 12, 200_001).view(-1, 1)
    one = native.pack_linear(torch.ones(1, 1), None)
    y = native.linear(x, one, "gelu").view(-1)
    ref = F.gelu(x.view(-1).double()).float()
    assert (y - ref).abs().max().item() < 2e-6


def test_ln_linear_matches_layer_norm_then_linear():
    g = torch.Generator().manual_seed(0)
    for K, affine in ((256, True), (1024, True), (40, False)):
        w, b = torch.randn(96, K, generator=g) / K**0.5, torch.randn(96, generator=g)
        x = torch.randn(3, 16, K, generator=g) * 3 + 1
        ln = torch.nn.LayerNorm(K, elementwise_affine=affine)
        if affine:
            torch.nn.init.normal_(ln.weight, generator=g)
            torch.nn.init.normal_(ln.bias, generator=g)
        norm = (ln.weight, ln.bias, ln.eps)
        with torch.no_grad():
            ref = F.relu(F.linear(ln(x), w, b))
            out = native.ln_linear(x, norm, native.pack_linear(w, b), "relu")
        torch.testing.assert_close(out, ref, atol=2e-5, rtol=2e-5)


def _sdpa(q, k, v, heads, mask=None):
    def split(t):
        return t.reshape(t.shape[0], t.shape[1], heads, -1).transpose(1, 2)

    m = None if mask is None else mask[:, None, None, :]
    o = F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=m)
    return o.transpose(1, 2).reshape(q.shape)


@pytest.mark.parametrize(
    "B,T,S,H,hd", [(1, 16, 16, 4, 64), (2, 16, 4, 4, 64), (3, 3, 3, 4, 64), (2, 5, 7, 2, 12),
                   (1, 17, 300, 4, 64), (2, 1, 9, 8, 8)]
)  # fmt: skip
def test_attention_matches_sdpa(B, T, S, H, hd):
    g = torch.Generator().manual_seed(T * S)
    D = H * hd
    qkv = torch.randn(B, T, 3 * D, generator=g)
    kv = torch.randn(B, S, 2 * D, generator=g)
    q, k, v = qkv[..., :D], kv[..., :D], kv[..., D:]  # strided views, as the plans pass them
    mask = torch.rand(B, S, generator=g) > 0.3
    mask[:, 0] = True
    for m in (None, mask):
        torch.testing.assert_close(
            native.attention(q, k, v, H, m), _sdpa(q, k, v, H, m), atol=1e-5, rtol=1e-5
        )
    # the stacked-projection entry points the plans use
    torch.testing.assert_close(
        native.self_attention(qkv, H, native.key_mask_bytes(mask[:, :T], B) if S >= T else None),
        _sdpa(qkv[..., :D], qkv[..., D : 2 * D], qkv[..., 2 * D :], H,
              mask[:, :T] if S >= T else None),
        atol=1e-5, rtol=1e-5,
    )  # fmt: skip
    stacked = torch.randn(B, S, 3 * 2 * D, generator=g)  # three layers' K, V
    lk, lv = stacked[..., 2 * D : 3 * D], stacked[..., 3 * D : 4 * D]
    torch.testing.assert_close(
        native.cross_attention(q.contiguous(), stacked, 1, H, native.key_mask_bytes(mask, B)),
        _sdpa(q, lk, lv, H, mask),
        atol=1e-5,
        rtol=1e-5,
    )


def test_attention_with_every_key_masked_matches_sdpa():
    q, k, v = torch.randn(2, 3, 8), torch.randn(2, 4, 8), torch.randn(2, 4, 8)
    mask = torch.ones(2, 4, dtype=torch.bool)
    mask[1] = False
    out = native.attention(q, k, v, 2, mask)
    torch.testing.assert_close(out, _sdpa(q, k, v, 2, mask), atol=1e-6, rtol=1e-6)
    assert not out[1].any() and out[0].abs().sum() > 0


@pytest.mark.parametrize(
    "B,T,C,N,k,s,p,groups",
    [(1, 16, 7, 64, 5, 1, 2, 8), (2, 16, 64, 64, 5, 1, 2, 8), (1, 16, 64, 64, 3, 2, 1, 0),
     (3, 8, 128, 256, 5, 1, 2, 8), (2, 16, 64, 7, 1, 1, 0, 0), (1, 16, 20, 24, 5, 1, 2, 8)],
)  # fmt: skip
def test_conv1d_block_matches_conv_groupnorm_mish_film(B, T, C, N, k, s, p, groups):
    g = torch.Generator().manual_seed(N + C)
    conv = torch.nn.Conv1d(C, N, k, s, p)
    gn = torch.nn.GroupNorm(groups, N) if groups else None
    if gn is not None:
        torch.nn.init.normal_(gn.weight, generator=g)
        torch.nn.init.normal_(gn.bias, generator=g)
    norm = None if gn is None else (groups, gn.weight, gn.bias, gn.eps)
    x = torch.randn(B, T, C, generator=g)
    film = torch.randn(B, 3 * N, generator=g)  # FiLM rows are slices of one stacked product
    pack = native.pack_conv1d(conv.weight, conv.bias)
    with torch.no_grad():
        y = conv(x.transpose(1, 2))
        y = (F.mish(gn(y)) if gn is not None else y).transpose(1, 2)
        res = torch.randn(y.shape, generator=g)
        scale, shift = film[:, None, N : 2 * N], film[:, None, 2 * N :]
        cases = [
            (native.conv1d(x, pack, k, s, p, norm), y),
            (native.conv1d(x, pack, k, s, p, norm, (film[:, N : 2 * N], film[:, 2 * N :]), res),
             y * scale + shift + res),
            (native.conv1d(x, pack, k, s, p, norm, (None, film[:, 2 * N :])), y + shift),
            (native.conv1d(x, pack, k, s, p, residual=res),
             conv(x.transpose(1, 2)).transpose(1, 2) + res),
        ]  # fmt: skip
    for out, ref in cases:
        torch.testing.assert_close(out, ref, atol=2e-5, rtol=2e-5)


def test_big_products_keep_torch_threads(monkeypatch):
    """With several torch threads, a product past ``_THREADED_MIN_MACS`` runs torch's threaded
    kernel (the native one is single-threaded); the result is the same either way."""
    calls = []
    real = F.linear
    monkeypatch.setattr(native.F, "linear", lambda *a: calls.append(1) or real(*a))
    w, x = torch.randn(1024, 1024), torch.randn(64, 1024)
    pack = native.pack_linear(w, None)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        out = native.linear(x, pack)
        assert calls == [1]
        torch.set_num_threads(1)
        out1 = native.linear(x, pack)
        assert calls == [1]
    finally:
        torch.set_num_threads(before)
    torch.testing.assert_close(out, out1, atol=1e-4, rtol=1e-4)


def test_disabled_keeps_plans_on_torch():
    from vlastack.runners.native.linear import plan_linear

    w = torch.randn(64, 32)
    assert type(plan_linear(w, None, True)) is native.NativeLinear
    with native.disabled():
        assert not native.usable(w)
        assert type(plan_linear(w, None, True)) is not native.NativeLinear
    assert not native.usable(w.double()) and native.usable(w)


_PARITY = textwrap.dedent(
    """
    import torch, torch.nn.functional as F
    from vlastack import native
    print(native.status())
    assert native.available(), native.status()
    g = torch.Generator().manual_seed(0)
    for N, K, M in ((768, 256, 16), (7, 256, 3), (40, 33, 7)):
        w, b = torch.randn(N, K, generator=g) / K**0.5, torch.randn(N, generator=g)
        x = torch.randn(M, K, generator=g)
        out = native.linear(x, native.pack_linear(w, b), "gelu")
        assert (out - F.gelu(F.linear(x, w, b))).abs().max() < 1e-5
    q, kv = torch.randn(1, 16, 64), torch.randn(1, 16, 128)
    def sd(t): return t.view(1, -1, 4, 16).transpose(1, 2)
    ref = F.scaled_dot_product_attention(sd(q), sd(kv[..., :64]), sd(kv[..., 64:]))
    out = native.attention(q, kv[..., :64], kv[..., 64:], 4)
    assert (out - ref.transpose(1, 2).reshape(1, 16, 64)).abs().max() < 1e-5
    print("parity ok")
    """
)


def _subprocess(env_extra: dict, tmp_path) -> subprocess.CompletedProcess:
    env = {**os.environ, "VLASTACK_CACHE": str(tmp_path), **env_extra}
    return subprocess.run(
        [sys.executable, "-c", _PARITY], env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.skipif(
    not os.uname().machine.startswith(("x86_64", "amd64")), reason="x86-64 instruction sets"
)
@pytest.mark.parametrize("march", ["haswell", "x86-64"])
def test_other_cpus_builds_agree(march, tmp_path):
    """The AVX2 (1 x 6 register blocking, 16-column panels) and baseline SSE builds, compiled
    here for another -march, give the same numbers: CI and users' CPUs may be either."""
    proc = _subprocess({"VLASTACK_NATIVE_CFLAGS": f"-march={march}"}, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "16-column panels" in proc.stdout and "parity ok" in proc.stdout
    assert list(tmp_path.glob("native/vlkernels-*.so"))  # built into the cache asked for


def test_no_compiler_falls_back_with_a_reason(tmp_path):
    code = (
        "from vlastack import native; import torch\n"
        "print(native.status())\n"
        "from vlastack.models.action_heads import build_action_head\n"
        "h = build_action_head('act', None, context_dim=8, action_dim=3, action_horizon=4)\n"
        "print(h.eval().sample_actions(torch.randn(1, 2, 8), torch.ones(1, 2, dtype=torch.bool))"
        ".shape)\n"
    )
    env = {**os.environ, "VLASTACK_CACHE": str(tmp_path), "CC": "/nonexistent/cc"}
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert "off (" in proc.stdout and "/nonexistent/cc" in proc.stdout
    assert "torch.Size([1, 4, 3])" in proc.stdout
    off = subprocess.run(
        [sys.executable, "-c", "from vlastack import native; print(native.status())"],
        env={**os.environ, "VLASTACK_NATIVE": "0"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "off (VLASTACK_NATIVE=0)" in off.stdout


@pytest.mark.parametrize("activation", ["gelu", "relu"])
def test_one_call_decoder_matches_the_per_op_loop_and_the_modules(activation):
    """``vl_decoder`` (the whole decoder in one call) against ``DecoderPlan._run_native``'s
    per-op loop and the modules: padded keys, batch 3, and from block 1 with given queries."""
    from vlastack.models.layers.decoder import CrossDecoder
    from vlastack.runners.native.decoder import DecoderPlan

    torch.manual_seed(0)
    dec = CrossDecoder(64, 3, 4, 2.0, activation=activation).eval()
    x, ctx = torch.randn(3, 5, 64), torch.randn(3, 4, 64)
    valid = torch.ones(3, 4, dtype=torch.bool)
    valid[1, 2:] = False
    cross_mask = valid[:, None, None, :]
    first_q = torch.randn(3, 5, 64)
    with torch.no_grad():
        plan = DecoderPlan(dec)
        assert plan.native and plan.native_params is not None
        fused = plan.run(x, plan.context_kv(ctx), cross_mask)
        fused1 = plan.run(x, plan.context_kv(ctx), cross_mask, start=1, first_q=first_q)
        params, plan.native_params = plan.native_params, None
        loop = plan.run(x, plan.context_kv(ctx), cross_mask)
        loop1 = plan.run(x, plan.context_kv(ctx), cross_mask, start=1, first_q=first_q)
        plan.native_params = params
        ref = dec(x, dec.context_kv(ctx), valid)  # the plain module
    torch.testing.assert_close(fused, loop, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fused1, loop1, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fused, ref, atol=1e-5, rtol=1e-5)
    # an expanded (batch stride 0) input is read, not written
    x0 = torch.randn(1, 5, 64)
    before = x0.clone()
    with torch.no_grad():
        out = plan.run(x0.expand(3, -1, -1), plan.context_kv(ctx), cross_mask)
        ref0 = plan.run(x0.expand(3, -1, -1).contiguous(), plan.context_kv(ctx), cross_mask)
    torch.testing.assert_close(out, ref0)
    assert torch.equal(x0, before)
