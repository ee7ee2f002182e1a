"""The CNN encoders' exact-math speedups: the channels-last max pool (models/vision/fusion.py),
Conv→BatchNorm folding at inference (the native runner's, runners/native/vision.py; the modules
stay plain), hf_resnet's frozen BatchNorm."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from vlastack.errors import ConfigError
from vlastack.models.vision import build_vision_encoder
from vlastack.models.vision.fusion import FastMaxPool2d, accelerate_hf_resnet
from vlastack.runners.native.vision import fold_encoder

RESNET18 = {
    "embedding_size": 64,
    "hidden_sizes": [64, 128, 256, 512],
    "depths": [2, 2, 2, 2],
    "layer_type": "basic",
}


def _random_bn_stats(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("cfg", [(3, 2, 1), (2, 2, 0), (3, 1, 1)])
def test_fast_max_pool_matches_max_pool_forward_and_backward(dtype, cfg) -> None:
    k, s, p = cfg
    torch.manual_seed(0)
    # ReLU'd input: many tied zeros, the case where an argmax choice could differ
    x = torch.relu(torch.randn(3, 5, 13, 11)).to(dtype)
    ref_pool, fast_pool = nn.MaxPool2d(k, s, p), FastMaxPool2d(k, s, p)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = ref_pool(a), fast_pool(b)
    assert yb.is_contiguous() and torch.equal(ya, yb)
    g = torch.randn_like(ya)
    ya.backward(g)
    yb.backward(g)
    assert b.grad is not None and a.grad is not None
    if dtype == torch.float32:
        torch.testing.assert_close(b.grad, a.grad, rtol=0, atol=1e-6)
    else:  # overlapping windows: ours sums in float32, the stock bf16 kernel in bf16
        ref = x.double().requires_grad_()
        ref_pool(ref).backward(g.double())
        assert ref.grad is not None
        err_fast = (b.grad.double() - ref.grad).abs().max()
        err_stock = (a.grad.double() - ref.grad).abs().max()
        assert err_fast <= err_stock
    with torch.no_grad():
        assert torch.equal(fast_pool(x), ref_pool(x))


def test_fast_max_pool_takes_the_stock_op_where_it_does_not_apply() -> None:
    x = torch.randn(1, 2, 9, 9)
    for pool in (FastMaxPool2d(3, 2, 1, ceil_mode=True), FastMaxPool2d(3, 2, 1, dilation=2)):
        ref = nn.MaxPool2d(3, 2, 1, dilation=pool.dilation, ceil_mode=pool.ceil_mode)
        assert torch.equal(pool(x), ref(x))


def test_native_runner_folds_eval_pairs_and_follows_the_statistics() -> None:
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU())
    ref = nn.Sequential(*copy.deepcopy(list(seq)))
    ref.load_state_dict(seq.state_dict())
    assert list(seq.state_dict()) == list(ref.state_dict())
    _random_bn_stats(seq)
    ref.load_state_dict(seq.state_dict())
    x = torch.randn(2, 4, 8, 8)
    assert fold_encoder(seq) is seq  # training mode: batch statistics, nothing to fold
    seq.eval()
    ref.eval()
    fast = fold_encoder(seq)
    assert len(fast) == 2 and isinstance(fast[0], nn.Conv2d)  # the folded path runs
    assert isinstance(seq[1], nn.BatchNorm2d)  # the module itself is untouched
    with torch.no_grad():
        torch.testing.assert_close(fast(x), ref(x), rtol=1e-5, atol=1e-5)
    # a training-mode step updates the running statistics inside BatchNorm's kernel: the
    # runner built again (as Policy does when runners.structure_key changes) follows them
    seq.train()
    ref.train()
    seq(x * 3 + 1)
    ref(x * 3 + 1)
    seq.eval()
    ref.eval()
    with torch.no_grad():
        torch.testing.assert_close(fold_encoder(seq)(x), ref(x), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(fast(x), ref(x), rtol=1e-5, atol=1e-5)  # the old fold is stale
    # and so does load_state_dict
    _random_bn_stats(ref)
    seq.load_state_dict(ref.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(fold_encoder(seq)(x), ref(x), rtol=1e-5, atol=1e-5)


def test_accelerated_hf_resnet_keeps_keys_outputs_and_gradients() -> None:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    base = transformers.ResNetModel(
        transformers.ResNetConfig(**{**RESNET18, "depths": [1, 1, 1, 1]})
    )
    _random_bn_stats(base)
    fast = accelerate_hf_resnet(copy.deepcopy(base))
    assert list(fast.state_dict()) == list(base.state_dict())
    assert isinstance(fast.embedder.pooler, FastMaxPool2d)
    x = torch.randn(2, 3, 64, 64)
    for train in (True, False):
        base.train(train)
        fast.train(train)
        base.zero_grad()
        fast.zero_grad()
        ya = base(pixel_values=x).last_hidden_state
        yb = fast(pixel_values=x).last_hidden_state
        torch.testing.assert_close(yb, ya, rtol=1e-4, atol=1e-4)
        ya.square().mean().backward()
        yb.square().mean().backward()
        for (name, pa), pb in zip(base.named_parameters(), fast.parameters()):
            assert pa.grad is not None and pb.grad is not None, name
            torch.testing.assert_close(pb.grad, pa.grad, rtol=1e-3, atol=1e-5, msg=name)
    folded = fold_encoder(fast)  # eval: the native runner's form, every pair folded
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in fast.modules()) > 0
    with torch.no_grad():
        torch.testing.assert_close(
            folded(pixel_values=x).last_hidden_state,
            base(pixel_values=x).last_hidden_state,
            rtol=1e-4,
            atol=1e-4,
        )


def test_hf_resnet_freeze_bn_is_torchvisions_frozen_batchnorm() -> None:
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    enc = build_vision_encoder("hf_resnet", {"freeze_bn": True})
    bns = [m for m in enc.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(not p.requires_grad for m in bns for p in m.parameters())
    enc.train()
    assert all(not m.training for m in bns)
    stats = {k: v.clone() for k, v in enc.state_dict().items() if "running" in k}
    x = torch.rand(4, 3, 64, 64)
    enc(x).square().mean().backward()
    after = enc.state_dict()
    assert all(torch.equal(after[k], v) for k, v in stats.items())
    convs = [m for m in enc.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.weight.grad is not None for c in convs)
    # without freeze_bn the statistics move, as before
    plain = build_vision_encoder("hf_resnet")
    plain.train()
    before = {k: v.clone() for k, v in plain.state_dict().items() if "running_mean" in k}
    plain(x)
    assert any(not torch.equal(plain.state_dict()[k], v) for k, v in before.items())


def test_freeze_bn_on_an_encoder_without_batchnorm_names_the_field() -> None:
    pytest.importorskip("transformers")
    with pytest.raises(ConfigError, match="freeze_bn"):
        build_vision_encoder("hf_vit", {"freeze_bn": True})


def test_modules_carry_no_inference_fast_path() -> None:
    """The plain modules run the same ops with and without autograd (no folding inside them,
    bit for bit) and store nothing on themselves at inference: speed is the runner's."""
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    for name, kwargs in (("hf_resnet", {}), ("mobilenet_v2", {"pretrained": False})):
        enc = build_vision_encoder(name, kwargs).eval()
        _random_bn_stats(enc)
        x = torch.rand(2, 3, 64, 64)
        with_grad = enc(x)
        with torch.no_grad():
            without = enc(x)
        assert torch.equal(with_grad, without), name
        assert not any("_inference_cache" in m.__dict__ for m in enc.modules()), name
