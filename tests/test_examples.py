"""The examples run: ``examples/custom_action_head.py`` registers a head that trains, samples,
passes the head contract and exports to ONNX through its self-description alone."""

from __future__ import annotations

import importlib.util
import json
import sys
import warnings
from pathlib import Path

import pytest

import test_action_heads as contract
from vlastack.experiments.head_to_head import head_action_normalization, head_kwargs
from vlastack.models.action_heads import (
    ACTION_HEADS,
    ActionHead,
    BinsHead,
    DiffusionHead,
    L1Head,
    head_class,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name: str, monkeypatch):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, mod)  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def example_module(monkeypatch):
    """The example module, with a copy of the head registry to register into (undone after)."""
    len(ACTION_HEADS)  # load the plugins into the real registry first
    monkeypatch.setattr(ACTION_HEADS, "_entries", dict(ACTION_HEADS._entries))
    return _load("custom_action_head", monkeypatch)


@pytest.fixture
def example(example_module):
    """The example module with its head registered (its one registry line)."""
    example_module.register()
    return example_module


def test_custom_head_example_trains_samples_and_exports(
    example_module, monkeypatch, capsys, tmp_path
):
    pytest.importorskip("onnxruntime", reason="ONNX parity needs onnxruntime (vlastack[export])")
    monkeypatch.setattr(sys, "argv", ["custom_action_head.py", "--out", str(tmp_path)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        example_module.main()  # registers, trains, samples, exports
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["head"] == "mean_pool"
    assert out["loss_last"] < 0.5 * out["loss_first"]
    assert out["chunk_shape"] == [4, 4, 4]
    # graphs are named after the registered name; export code knows nothing of this head
    assert set(out["onnx_max_abs_error"]) == {"mean_pool_sampler"}
    assert out["onnx_max_abs_error"]["mean_pool_sampler"] < 1e-4
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["head"] == "mean_pool" and (tmp_path / "mean_pool_sampler.onnx").is_file()


def test_custom_head_example_under_another_name_exports_the_same_way(example, tmp_path):
    """A plugin may register the same builder under any name: the path is the declaration."""
    pytest.importorskip("onnxruntime", reason="ONNX parity needs onnxruntime (vlastack[export])")
    ACTION_HEADS.add("my_plugin_head", example.build)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = example.run(str(tmp_path), steps=2, head="my_plugin_head")
    assert set(res["manifest"]["graphs"]) == {"my_plugin_head_sampler"}


@pytest.mark.parametrize(
    "check",
    [
        "test_loss_shape_finite_and_gradients_reach_every_parameter",
        "test_loss_seeded_determinism_and_batch_one",
        "test_padded_actions_do_not_change_the_loss",
        "test_masked_context_tokens_are_ignored_and_valid_ones_used",
        "test_all_true_action_dim_mask_equals_none",
        "test_overfits_a_tiny_fixed_dataset",
    ],
)
def test_custom_head_example_passes_the_head_contract(example, monkeypatch, check):
    """The contract tests of every registered head (tests/test_action_heads.py), on the example."""
    monkeypatch.setitem(contract.regen.TINY_CONFIGS, example.NAME, {"width": 32, "hidden": 64})
    getattr(contract, check)(example.NAME)


@pytest.mark.parametrize("B", [1, 4])
def test_custom_head_example_samples_to_the_contract(example, monkeypatch, B):
    monkeypatch.setitem(contract.regen.TINY_CONFIGS, example.NAME, {"width": 32, "hidden": 64})
    contract.test_sample_shape_and_seeded_determinism(example.NAME, B)


def test_custom_head_example_describes_itself(example):
    cls = head_class(example.NAME)
    assert cls is example.MeanPoolHead
    assert cls.export_kind == "single_pass"
    head = example.build(None, context_dim=8, action_dim=2, action_horizon=3)
    assert head.cuda_graph_support() == (True, "")
    assert head_kwargs(example.NAME, {"width": 64, "num_heads": 2, "depth": 3}) == {"width": 64}
    assert head_action_normalization(example.NAME) is None


def test_head_class_reads_the_builders_return_annotation(monkeypatch):
    assert head_class("bins_ar") is BinsHead
    assert head_class("mlp") is L1Head
    assert head_class("diffusion") is DiffusionHead
    len(ACTION_HEADS)
    monkeypatch.setattr(ACTION_HEADS, "_entries", dict(ACTION_HEADS._entries))
    ACTION_HEADS.add("untyped", lambda cfg=None, **kw: L1Head(**kw, width=8))
    # unknown before building: the suite uses the defaults (export reads the built head)
    assert head_class("untyped") is ActionHead
    assert head_kwargs("untyped", {"width": 8, "depth": 3}) == {"width": 8, "depth": 3}
