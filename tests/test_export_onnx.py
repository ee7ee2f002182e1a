"""ONNX export of the continuous action heads: onnxruntime vs PyTorch parity, loops from steps."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from _export_tiny import tiny_config, write_tiny_checkpoint
from vlastack.errors import ConfigError
from vlastack.export.onnx import (
    example_context,
    export_model_heads,
    export_onnx,
    head_graphs,
    ort_session,
)
from vlastack.models.vla import build_vla

pytest.importorskip("onnxruntime", reason="ONNX parity needs onnxruntime (vlastack[export])")

ATOL = 1e-4


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _model(head: str, **kw):
    torch.manual_seed(0)
    return build_vla(tiny_config(head, **kw)).eval()


def _run(sess, feeds):
    return sess.run(None, {k: v.detach().numpy() for k, v in feeds.items()})


@pytest.mark.parametrize("head", ["flow_matching", "flower", "diffusion", "l1", "act"])
def test_every_graph_matches_pytorch(tmp_path, head):
    model = _model(head)
    manifest = export_model_heads(model, tmp_path, check=False)
    expected = {
        "flow_matching": {"flow_matching_prefix", "flow_matching_step", "flow_matching_sampler"},
        "flower": {"flower_prefix", "flower_step", "flower_sampler"},
        "diffusion": {"diffusion_prefix", "diffusion_step", "diffusion_sampler"},
        "l1": {"l1_sampler"},
        "act": {"act_sampler"},
    }[head]
    assert set(manifest["graphs"]) == expected
    # Check on a batch size and inputs other than the ones used for tracing (dynamic batch).
    ctx, mask = example_context(model, batch_size=2, seed=7)
    for graph in head_graphs(model.head, head, ctx, mask, seed=7):
        sess = ort_session(tmp_path / f"{graph.name}.onnx")
        with torch.no_grad():
            ref = graph.module(*graph.inputs)
        refs = ref if isinstance(ref, tuple) else (ref,)
        got = _run(sess, dict(zip(graph.input_names, graph.inputs)))
        for r, o in zip(refs, got):
            assert o.shape == tuple(r.shape)
            np.testing.assert_allclose(o, r.numpy(), atol=ATOL, err_msg=graph.name)


def test_unet_diffusion_graphs_match_pytorch_and_the_sampler(tmp_path):
    """The diffusion head with DP-C's U-Net exports too: the prefix is the pooled context."""
    model = _model(
        "diffusion",
        head_kwargs={"denoiser": "unet", "width": 32, "down_dims": [16, 32], "step_embed_dim": 16},
    )
    manifest = export_model_heads(model, tmp_path, check=False)
    assert set(manifest["graphs"]) == {"diffusion_prefix", "diffusion_step", "diffusion_sampler"}
    ctx, mask = example_context(model, batch_size=2, seed=7)
    for graph in head_graphs(model.head, "diffusion", ctx, mask, seed=7):
        sess = ort_session(tmp_path / f"{graph.name}.onnx")
        with torch.no_grad():
            ref = graph.module(*graph.inputs)
        (got,) = _run(sess, dict(zip(graph.input_names, graph.inputs)))
        np.testing.assert_allclose(got, ref.numpy(), atol=ATOL, err_msg=graph.name)
    noise = torch.randn(2, model.head.action_horizon, model.head.action_dim)
    ref = model.head.sample_actions(ctx, mask, noise=noise).numpy()  # the eager plan path
    (got,) = ort_session(tmp_path / "diffusion_sampler.onnx").run(
        None, {"context": ctx.numpy(), "context_mask": mask.numpy(), "noise": noise.numpy()}
    )
    np.testing.assert_allclose(got, ref, atol=ATOL)


def test_flow_euler_loop_from_step_graph_equals_sample_actions(tmp_path):
    model = _model("flow_matching")
    export_model_heads(model, tmp_path, ["prefix", "step"])
    head = model.head
    ctx, mask = example_context(model, batch_size=2, seed=3)
    noise = torch.randn(2, head.action_horizon, head.action_dim)
    ref = head.sample_actions(ctx, mask, noise=noise).numpy()
    k, v, attn = ort_session(tmp_path / "flow_matching_prefix.onnx").run(
        None, {"context": ctx.numpy(), "context_mask": mask.numpy()}
    )
    step = ort_session(tmp_path / "flow_matching_step.onnx")
    x, n = noise.numpy(), head.num_steps
    for i in range(n):  # openpi's grid: t = 1, 1 - 1/n, ..., 1/n
        t = np.full((2,), 1.0 - i / n, dtype=np.float32)
        (vel,) = step.run(None, {"x_t": x, "t": t, "prefix_k": k, "prefix_v": v, "attn_mask": attn})
        x = x - vel / n
    np.testing.assert_allclose(x, ref, atol=ATOL)


def test_flow_sampler_graph_equals_sample_actions_with_that_noise(tmp_path):
    model = _model("flow_matching")
    export_model_heads(model, tmp_path, ["sampler"])
    ctx, mask = example_context(model, batch_size=1, seed=5)
    noise = torch.randn(1, 4, 4)
    ref = model.head.sample_actions(ctx, mask, noise=noise).numpy()
    (got,) = ort_session(tmp_path / "flow_matching_sampler.onnx").run(
        None, {"context": ctx.numpy(), "context_mask": mask.numpy(), "noise": noise.numpy()}
    )
    np.testing.assert_allclose(got, ref, atol=ATOL)
    assert np.abs(ref - noise.numpy()).max() > 0.1  # the loop really ran


def test_ddpm_head_exports_steps_but_not_the_loop(tmp_path):
    model = _model(
        "diffusion", head_kwargs={"width": 32, "depth": 1, "num_heads": 2, "sampler": "ddpm"}
    )
    manifest = export_model_heads(model, tmp_path)
    assert set(manifest["graphs"]) == {"diffusion_prefix", "diffusion_step"}
    assert "diffusion_sampler" in manifest["skipped"]


def test_export_onnx_from_checkpoint_and_bad_input(tmp_path):
    ck = write_tiny_checkpoint(tmp_path / "run", "l1")
    manifest = export_onnx(ck, tmp_path / "onnx")
    assert manifest["graphs"]["l1_sampler"]["max_abs_error"] < ATOL
    assert (tmp_path / "onnx" / "normalization.json").is_file()
    assert (tmp_path / "onnx" / "manifest.json").is_file()
    with pytest.raises(ConfigError, match="parts"):
        export_onnx(ck, tmp_path / "x", ["decoder"])
    with pytest.raises(ConfigError, match="continuous"):
        export_model_heads(_model("bins"), tmp_path / "bins")


# ---- the mlp head (an alias of l1 in the registry, but its own name in configs and graphs) ----
def _golden_mlp():
    import importlib.util
    from pathlib import Path

    from safetensors.torch import load_file

    golden = Path(__file__).resolve().parent / "golden"
    spec = importlib.util.spec_from_file_location(
        "golden_regenerate_onnx", golden / "regenerate.py"
    )
    assert spec is not None and spec.loader is not None
    regen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(regen)
    return regen, load_file(str(golden / "mlp.safetensors"))


def test_mlp_head_graph_matches_pytorch_and_golden(tmp_path):
    """The golden tiny mlp head exports one sampler graph; onnxruntime reproduces the eager
    head and the committed golden chunk, on the golden inputs (batch 2, a padded context row)."""
    from vlastack.export.onnx import ExportedGraph, export_graph
    from vlastack.models.action_heads import build_action_head

    regen, golden = _golden_mlp()
    torch.manual_seed(0)
    head = build_action_head(
        "mlp",
        regen.TINY_CONFIGS["mlp"],
        context_dim=regen.CONTEXT_DIM,
        action_dim=regen.ACTION_DIM,
        action_horizon=regen.ACTION_HORIZON,
    ).eval()
    x = regen.golden_inputs()
    ctx, mask = x["context"], x["context_mask"]
    graphs = head_graphs(head, "mlp", ctx[:1], mask[:1])  # traced at batch 1
    assert [g.name for g in graphs] == ["mlp_sampler"]
    (graph,) = graphs
    assert isinstance(graph, ExportedGraph)
    path = export_graph(graph, tmp_path / "mlp_sampler.onnx")
    (got,) = ort_session(path).run(None, {"context": ctx.numpy(), "context_mask": mask.numpy()})
    with torch.no_grad():
        ref = head.sample_actions(ctx, mask)
    assert got.shape == (2, regen.ACTION_HORIZON, regen.ACTION_DIM)
    np.testing.assert_allclose(got, ref.numpy(), atol=ATOL)
    np.testing.assert_allclose(got, golden["samples"].numpy(), atol=ATOL)


def test_mlp_vla_exports_and_matches_pytorch(tmp_path):
    """A whole tiny VLA with head='mlp': export_model_heads names the graph after the head, and the
    checkpoint path (export_onnx) checks itself against PyTorch within tolerance."""
    model = _model("mlp", head_kwargs={"width": 32, "depth": 2, "num_heads": 2})
    manifest = export_model_heads(model, tmp_path / "m", check=False)
    assert manifest["head"] == "mlp"
    assert set(manifest["graphs"]) == {"mlp_sampler"}
    ctx, mask = example_context(model, batch_size=3, seed=11)
    mask[1, -2:] = False
    sess = ort_session(tmp_path / "m" / "mlp_sampler.onnx")
    (got,) = sess.run(None, {"context": ctx.numpy(), "context_mask": mask.numpy()})
    with torch.no_grad():
        ref = model.head.sample_actions(ctx, mask).numpy()
    np.testing.assert_allclose(got, ref, atol=ATOL)
    assert np.abs(ref[0] - ref[1]).max() > 1e-3  # the inputs really reach the output

    ck = write_tiny_checkpoint(
        tmp_path / "run", "mlp", head_kwargs={"width": 32, "depth": 2, "num_heads": 2}
    )
    manifest = export_onnx(ck, tmp_path / "onnx")
    assert manifest["graphs"]["mlp_sampler"]["max_abs_error"] < ATOL
    assert (tmp_path / "onnx" / "mlp_sampler.onnx").is_file()
