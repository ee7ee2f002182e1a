"""BitLinear (BitNet b1.58 / BitVLA): ternary weights, 8-bit activations, straight-through gradients."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vlastack.models.bitlinear import BitLinear, activation_quant_8bit, ternarize_, ternary_quantize


def test_ternary_values_and_absmean_scale():
    torch.manual_seed(0)
    w = torch.randn(16, 32)
    q, scale = ternary_quantize(w)
    assert set(q.unique().tolist()) <= {-1, 0, 1} and q.dtype == torch.int8
    torch.testing.assert_close(scale, w.abs().mean())
    # Closed form: |w| < scale/2 -> 0, else sign(w).
    expected = torch.where(w.abs() < scale / 2, torch.zeros_like(w), w.sign())
    assert torch.equal(q.float(), expected)


def test_activation_quantization_has_256_levels_per_token():
    x = torch.randn(4, 64)
    xq = activation_quant_8bit(x)
    step = x.abs().amax(-1, keepdim=True) / 127
    levels = xq / step
    torch.testing.assert_close(levels, levels.round(), rtol=0, atol=1e-4)
    assert (xq - x).abs().max() <= step.max() / 2 + 1e-6


def test_forward_equals_quantized_linear_and_ste_gradient():
    torch.manual_seed(0)
    layer = BitLinear(32, 8)
    x = torch.randn(5, 32, requires_grad=True)
    y = layer(x)
    q, s = ternary_quantize(layer.weight)
    ref_w = (q.float() * s).detach().requires_grad_(True)
    xq = activation_quant_8bit(x.detach()).requires_grad_(True)
    ref = F.linear(xq, ref_w, layer.bias)
    torch.testing.assert_close(y, ref)
    g = torch.randn_like(y)
    y.backward(g)
    ref.backward(g)
    # STE: the latent weight receives the gradient of the quantized weight; inputs likewise.
    torch.testing.assert_close(layer.weight.grad, ref_w.grad)
    torch.testing.assert_close(x.grad, xq.grad)
    assert layer.weight.grad.abs().sum() > 0


def test_ternarize_swaps_linears_in_place_and_keeps_skipped_ones():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Sequential(nn.Linear(16, 16)))
    model.lm_head = nn.Linear(16, 4)
    before = [m.weight.clone() for m in model.modules() if isinstance(m, nn.Linear)]
    assert ternarize_(model) == 2
    kinds = [type(m).__name__ for m in model.modules() if isinstance(m, nn.Linear)]
    assert kinds == ["BitLinear", "BitLinear", "Linear"]
    after = [m.weight for m in model.modules() if isinstance(m, nn.Linear)]
    for b, a in zip(before, after):
        assert torch.equal(b, a)  # latent weights are copied
    out = model[2](model[1](model[0](torch.randn(3, 8))))
    assert torch.isfinite(out).all()
    assert ternarize_(model) == 0  # idempotent
