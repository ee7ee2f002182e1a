"""Post-training quantization: int8 layers, ternary checkpoints, loading through Policy, compare."""

from __future__ import annotations

import copy
import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from _export_tiny import tiny_config, tiny_obs, write_tiny_checkpoint
from vlastack.errors import ConfigError
from vlastack.export.comparison import parameter_bytes
from vlastack.export.quantize import (
    Int8Linear,
    int8_per_channel,
    is_int8_linear,
    load_policy,
    quantization_info,
    quantize_checkpoint,
    quantize_dynamic_int8,
    resolve_int8_backend,
    ternarize_model,
    ternary_storage_weight,
)
from vlastack.models.bitlinear import BitLinear, ternary_quantize
from vlastack.models.vla import build_vla
from vlastack.policy import Policy

BACKENDS = ["weight_only"] + (["dynamic"] if resolve_int8_backend("auto") == "dynamic" else [])


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        yield


def test_int8_grid_is_a_fixed_point():
    w = torch.randn(16, 32)
    q, s = int8_per_channel(w)
    assert q.dtype == torch.int8 and int(q.abs().max()) == 127
    assert torch.allclose(q.float() * s[:, None], w, atol=float(s.max()) / 2 + 1e-7)
    q2, s2 = int8_per_channel(q.float() * s[:, None])
    assert torch.equal(q, q2) and torch.allclose(s, s2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_int8_vla_outputs_close_to_fp32(backend):
    torch.manual_seed(0)
    cfg = tiny_config("l1")
    model = build_vla(cfg).eval()
    from _model_batches import make_batch

    batch = make_batch(cfg, B=3)
    ref = model.sample_actions(batch)
    q = quantize_dynamic_int8(copy.deepcopy(model), backend=backend)
    n_int8 = sum(is_int8_linear(m) for m in q.modules())
    assert n_int8 > 5
    assert not any(type(m) is nn.Linear for m in q.head.modules())
    out = q.sample_actions(batch)
    # Relative error of the chunk: weight rounding only (weight_only) vs. also 7-bit activations
    # (fbgemm's reduce_range) through every layer of the tiny random model (dynamic).
    rel = ((out - ref).norm() / ref.norm()).item()
    assert 0 < rel < (0.05 if backend == "weight_only" else 0.1)
    assert parameter_bytes(q) < 0.6 * parameter_bytes(model)


def test_int8_parts_only_touch_the_chosen_parts():
    model = build_vla(tiny_config("flow_matching"))
    quantize_dynamic_int8(model, parts=["head"], backend="weight_only")
    assert any(isinstance(m, Int8Linear) for m in model.head.modules())
    assert any(type(m) is nn.Linear for m in model.projector.modules())
    with pytest.raises(ConfigError, match="unknown"):
        quantize_dynamic_int8(model, parts=["heads"])


def test_ternary_storage_weight_is_exact_for_bitlinear():
    w = torch.randn(24, 40)
    stored = ternary_storage_weight(w)
    vals = torch.unique(stored)
    assert len(vals) == 3 and torch.allclose(vals[0], -vals[2]) and vals[1] == 0
    q, s = ternary_quantize(w)
    layer = BitLinear(40, 24, quantize_activations=False)
    with torch.no_grad():
        layer.weight.copy_(stored)
    torch.testing.assert_close(layer.quantized_weight(), q.float() * s)


def test_ternary_checkpoint_loads_through_policy(tmp_path):
    src = write_tiny_checkpoint(tmp_path / "run", "flow_matching")
    dst = quantize_checkpoint(src, tmp_path / "tern", "ternary", ["projector", "head"])
    cfg = json.loads((dst / "config.json").read_text())
    assert cfg["quantization"]["method"] == "ternary"
    assert cfg["model"]["ternary"] == ["head", "projector"]
    pol = Policy.from_checkpoint(dst)
    bit = [m for m in pol.model.head.modules() if isinstance(m, BitLinear)]
    assert bit and all(len(torch.unique(m.weight)) <= 3 for m in bit)
    # Same actions as ternarizing the source in memory (the stored weights are a fixed point).
    ref = Policy.from_checkpoint(src)
    ternarize_model(ref.model, ["projector", "head"])
    a_mem = ref.infer(tiny_obs())["actions"]
    a_ckpt = pol.infer(tiny_obs())["actions"]
    np.testing.assert_allclose(a_ckpt, a_mem, atol=1e-5)
    full = Policy.from_checkpoint(src).infer(tiny_obs())["actions"]
    assert np.abs(full - a_ckpt).max() > 1e-3  # ternary really changed the model


@pytest.mark.parametrize("head", ["flow_matching", "diffusion", "act"])
def test_int8_checkpoint_loads_and_infers(tmp_path, head):
    src = write_tiny_checkpoint(tmp_path / "run", head)
    dst = quantize_checkpoint(src, tmp_path / "q", "int8", backend="weight_only")
    assert quantization_info(dst)["backend"] == "weight_only"
    full = Policy.from_checkpoint(src).infer(tiny_obs())["actions"]
    plain = Policy.from_checkpoint(dst)  # float weights on the int8 grid
    lp = load_policy(dst)  # int8 kernels
    assert any(isinstance(m, Int8Linear) for m in lp.model.modules())
    a_plain = plain.infer(tiny_obs())["actions"]
    a_int8 = lp.infer(tiny_obs())["actions"]
    assert a_int8.shape == full.shape and np.isfinite(a_int8).all()
    np.testing.assert_allclose(a_int8, a_plain, atol=1e-4)  # weight-only kernel = same grid
    scale = np.abs(full).max()
    assert 0 < np.abs(a_int8 - full).max() < 0.05 * scale + 1e-3


def test_quantize_checkpoint_refuses_bad_input(tmp_path):
    src = write_tiny_checkpoint(tmp_path / "run", "l1")
    with pytest.raises(ConfigError, match="method"):
        quantize_checkpoint(src, tmp_path / "a", "int4")
    dst = quantize_checkpoint(src, tmp_path / "a", "int8")
    with pytest.raises(ConfigError, match="already exists"):
        quantize_checkpoint(src, dst, "int8")
    with pytest.raises(ConfigError, match="already quantized"):
        quantize_checkpoint(dst, tmp_path / "b", "int8")
    with pytest.raises(ConfigError, match="ternary parts"):
        quantize_checkpoint(src, tmp_path / "c", "ternary", ["state"])
    assert not list(tmp_path.glob(".tmp-*"))


def test_compare_on_a_dataset(tmp_path, lerobot_fixture):
    from vlastack.data.format import DatasetReader
    from vlastack.export.comparison import compare

    stats = DatasetReader(lerobot_fixture).stats
    src = write_tiny_checkpoint(tmp_path / "run", "l1", stats=stats)
    dst = quantize_checkpoint(src, tmp_path / "q", "ternary", ["head"])
    res = compare(src, dst, lerobot_fixture, max_windows=8, latency_repeats=3, measure_rss=False)
    assert res["num_windows"] == 8 and res["val_episodes"]
    for side in ("reference", "quantized"):
        m = res[side]
        assert m["action_mae"] > 0 and m["latency_ms_p95"] >= m["latency_ms_p50"] > 0
        assert m["param_bytes"] > 0
    assert res["quantized"]["ternary_packed_bytes"] < res["reference"]["param_bytes"]
    assert res["quantized_vs_reference_mae"] > 0
    assert res["delta"]["action_mae"] == pytest.approx(
        res["quantized"]["action_mae"] - res["reference"]["action_mae"]
    )


def test_peak_rss_runs_in_a_fresh_process(tmp_path):
    from vlastack.export.comparison import memory_delta_mb

    ck = write_tiny_checkpoint(tmp_path / "run", "l1")
    mem = memory_delta_mb(ck, tiny_obs(), repeats=1)
    assert set(mem) == {"peak_rss_delta_mb", "rss_delta_mb"}
    assert 0 < mem["rss_delta_mb"] < 2000 and 0 <= mem["peak_rss_delta_mb"] < 2000


def test_simulator_success_of_a_quantized_checkpoint(tmp_path, monkeypatch):
    """The closed-loop part of compare(): the fake reach env through evaluation.rollout, the int8
    checkpoint against its fp32 source on the same seeds. Every chunk the rollout asks for is
    recorded: the int8 policy must act like the fp32 one within int8's rounding (per-channel
    weights carry ~0.4% relative error), yet not identically (the int8 kernels did run)."""
    from _export_tiny import tiny_stats
    from vlastack.export import comparison as quantize_mod
    from vlastack.export.comparison import _sim_success

    stats = tiny_stats(4)
    stats["action"] = {k: v[:2] for k, v in stats["action"].items()}
    src = write_tiny_checkpoint(tmp_path / "run", "l1", stats=stats, cameras=["top"], action_dim=2)
    q = quantize_checkpoint(src, tmp_path / "q", "int8", backend="weight_only")

    chunks: dict[str, list[np.ndarray]] = {}
    real_load = quantize_mod.load_policy

    def recording_load(path, **kw):
        policy = real_load(path, **kw)
        seen = chunks.setdefault(str(path), [])
        infer = policy.infer

        def recording_infer(obs):
            out = infer(obs)
            seen.append(np.array(out["actions"]))
            return out

        policy.infer = recording_infer
        return policy

    monkeypatch.setattr(quantize_mod, "load_policy", recording_load)
    rate_fp32 = _sim_success(src, "fake/reach-easy", 2, 0)
    rate_int8 = _sim_success(q, "fake/reach-easy", 2, 0)
    assert rate_fp32 is not None and rate_int8 == rate_fp32
    ref, got = chunks[str(src)], chunks[str(q)]
    assert len(got) == len(ref) > 2  # same number of chunks: the episodes ran alike
    ref_a, got_a = np.stack(ref), np.stack(got)
    scale = np.abs(ref_a).max()
    err = np.abs(got_a - ref_a).max()
    assert 0 < err <= 0.02 * scale, (err, scale)


def test_int8_keeps_torch_transformer_layers_working(tmp_path):
    """A trunk of nn.TransformerEncoderLayer (Octo-style recipes, `demo`) must still run after
    int8 quantization: torch's layer reads its linears' raw weights on its inference path."""
    import torch

    from vlastack.export.quantize import quantize_dynamic_int8
    from vlastack.models.vla import build_vla

    cfg = tiny_config("l1", trunk_layers=1, language="minilm")
    model = build_vla(cfg).eval()
    obs = tiny_obs(0)
    batch = {
        "observation.images.front": torch.rand(1, 1, 3, *cfg.image_size),
        "observation.images.wrist": torch.rand(1, 1, 3, *cfg.image_size),
        "observation.state": torch.from_numpy(obs["observation.state"])[None, None],
        "task": [obs["task"]],
    }
    with torch.no_grad():
        ref = model.sample_actions(batch)
        quantize_dynamic_int8(model, backend="dynamic")
        out = model.sample_actions(batch)
    assert out.shape == ref.shape and torch.isfinite(out).all()
