"""Imported LeRobot policies export to ONNX like native checkpoints (issue #26).

``vlastack export onnx LEROBOT_FOLDER`` writes ACT as one graph (normalized inputs -> normalized
chunk) and Diffusion Policy as an observation encoder + one denoiser step. Checked here on the
golden observations of ``fixtures/lerobot_policies/{act,diffusion}``:

* every graph matches the PyTorch module in onnxruntime within ``PARITY_ATOL`` on the golden
  preprocessed inputs;
* ACT: the graph's chunk, unnormalized by vlastack (and by the manifest's stats in numpy), is
  LeRobot's golden ``action_chunk`` within golden.json's fresh-process tolerance (7.6e-6) with
  onnxruntime's basic graph optimizations, within twice it with the default level (whose
  fusions round one action ~1 float32 ulp further: 1.0e-5 on obs1);
* Diffusion: the 100-step DDPM loop around the exported step (vlastack's ``DiffusionSampler.step``,
  the recorded start noise and step draws) reproduces the golden normalized chunk within
  ``DDPM_ATOL`` (errors of the step accumulate over 100 steps, so this is looser than the
  golden tolerance).

``vlastack export quantize --method ternary`` refuses an imported folder with an error naming
what is supported (int8 is tests/test_pretrained_lerobot_int8.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import _lerobot_golden as G
from _lerobot_golden import OBS, max_abs
from vlastack.cli.main import main
from vlastack.errors import ConfigError
from vlastack.export.onnx import export_onnx, ort_session
from vlastack.export.onnx_lerobot import export_any_onnx
from vlastack.policy_formats import load_registered_policy

pytest.importorskip("onnxruntime")

PARITY_ATOL = 1e-5  # onnxruntime vs PyTorch, per graph, on the golden inputs
DDPM_ATOL = 5e-5  # the DDPM loop around the ONNX step vs LeRobot's chunk (measured <= 1.1e-5)


def _export(fixtures_dir: Path, kind: str, out: Path) -> tuple[Path, dict, dict]:
    kind_dir = G.policy_dir(fixtures_dir, kind)
    manifest = export_any_onnx(kind_dir / "pretrained_model", out)
    return kind_dir, manifest, G.golden(kind_dir)


@pytest.fixture(scope="module")
def act(fixtures_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("act_onnx")
    kind_dir, manifest, golden = _export(fixtures_dir, "act", out)
    policy = load_registered_policy(kind_dir / "pretrained_model", device="cpu")
    return out, manifest, golden, G.tolerance(kind_dir), policy


@pytest.fixture(scope="module")
def diffusion(fixtures_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("diffusion_onnx")
    kind_dir, manifest, golden = _export(fixtures_dir, "diffusion", out)
    policy = load_registered_policy(kind_dir / "pretrained_model", device="cpu")
    return out, manifest, golden, G.tolerance(kind_dir), policy


def _session(path: Path, basic: bool = False):
    """onnxruntime on 1 thread (the goldens' count); ``basic``: only basic graph optimizations
    (the default level's fusions move the ACT chunk by ~1 float32 ulp of the action values)."""
    import onnxruntime as ort

    if not basic:
        return ort_session(path, threads=1)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _run(
    out: Path, manifest: dict, graph: str, feed: dict[str, torch.Tensor], basic: bool = False
) -> np.ndarray:
    entry = manifest["graphs"][graph]
    sess = _session(out / entry["file"], basic)
    return sess.run(entry["outputs"], {k: v.numpy() for k, v in feed.items()})[0]


def test_act_manifest(act):
    out, manifest, _, _, _ = act
    assert manifest["format"] == "lerobot_act"
    assert set(manifest["graphs"]) == {"act_chunk"}
    g = manifest["graphs"]["act_chunk"]
    assert (out / g["file"]).is_file()
    assert g["inputs"] == {
        "observation.images.top": [1, 3, 48, 64],
        "observation.images.wrist": [1, 3, 48, 64],
        "observation.state": [1, 6],
    }
    assert g["outputs"] == ["action_chunk_normalized"]
    assert g["max_abs_error"] <= PARITY_ATOL  # batch 1 and 3 (dynamic batch)
    assert manifest["policy"]["chunk_size"] == 10 and manifest["policy"]["action_dim"] == 6
    unnorm = manifest["normalization"]["unnormalizer"]["features"]["action"]
    assert unnorm["mode"] == "MEAN_STD" and len(unnorm["stats"]["mean"]) == 6
    assert "policy_preprocessor.json" in manifest["processor_files"]
    assert set(json.loads((out / "manifest.json").read_text())["graphs"]) == {"act_chunk"}


@pytest.mark.parametrize("i", OBS)
def test_act_graph_reproduces_the_golden_chunk(act, i):
    out, manifest, golden, tol, policy = act
    names = list(manifest["graphs"]["act_chunk"]["inputs"])
    feed = {k: golden[f"obs{i}.preprocessed.{k}"] for k in names}
    with torch.no_grad():
        ref = policy.network.model(
            [feed["observation.images.top"], feed["observation.images.wrist"]],
            feed["observation.state"],
        )
    # default onnxruntime session: PyTorch parity, and the golden chunk within 2x its tolerance
    fused = torch.from_numpy(_run(out, manifest, "act_chunk", feed))
    assert max_abs(fused, ref) <= PARITY_ATOL
    assert max_abs(fused, golden[f"obs{i}.action_chunk_normalized"]) <= PARITY_ATOL
    err = max_abs(policy.postprocess(fused), golden[f"obs{i}.action_chunk"])
    assert err <= 2 * tol["action_chunk (dataset units)"], err
    # basic optimizations only: LeRobot's golden chunk within golden.json's own tolerance
    got = torch.from_numpy(_run(out, manifest, "act_chunk", feed, basic=True))
    actions = policy.postprocess(got)  # vlastack's unnormalization
    err = max_abs(actions, golden[f"obs{i}.action_chunk"])
    assert err <= tol["action_chunk (dataset units)"], err
    # the manifest's stats alone are enough outside vlastack (MEAN_STD: x * std + mean)
    stats = manifest["normalization"]["unnormalizer"]["features"]["action"]["stats"]
    by_hand = got.numpy() * np.array(stats["std"], np.float32) + np.array(stats["mean"], np.float32)
    assert (
        max_abs(torch.from_numpy(by_hand), golden[f"obs{i}.action_chunk"])
        <= tol["action_chunk (dataset units)"]
    )


def test_diffusion_manifest(diffusion):
    out, manifest, _, _, _ = diffusion
    assert manifest["format"] == "lerobot_diffusion"
    assert set(manifest["graphs"]) == {"diffusion_encoder", "diffusion_step"}
    enc = manifest["graphs"]["diffusion_encoder"]
    assert enc["inputs"] == {
        "observation.state": [1, 2, 6],
        "observation.images.top": [1, 2, 3, 48, 64],
        "observation.images.wrist": [1, 2, 3, 48, 64],
    }
    assert enc["outputs"] == ["global_cond"]
    step = manifest["graphs"]["diffusion_step"]
    assert list(step["inputs"]) == ["x_t", "t", "global_cond"] and step["outputs"] == ["eps"]
    for g in manifest["graphs"].values():
        assert (out / g["file"]).is_file() and g["max_abs_error"] <= PARITY_ATOL
    ddpm = manifest["policy"]["ddpm"]
    assert ddpm["timesteps"][0] == 99 and ddpm["timesteps"][-1] == 0
    assert len(ddpm["alphas_cumprod"]) == ddpm["num_train_timesteps"] == 100
    assert manifest["policy"]["chunk_start"] == 1 and manifest["policy"]["n_action_steps"] == 10
    assert "diffusion_sampler" in manifest["skipped"]
    assert manifest["normalization"]["unnormalizer"]["features"]["action"]["mode"] == "MIN_MAX"


@pytest.mark.parametrize("i", OBS)
def test_diffusion_graphs_reproduce_the_golden_chunk(diffusion, i):
    out, manifest, golden, _, policy = diffusion
    model = policy.network.diffusion
    names = list(manifest["graphs"]["diffusion_encoder"]["inputs"])
    feed = {k: golden[f"obs{i}.policy_input.{k}"] for k in names}
    cond = _run(out, manifest, "diffusion_encoder", feed)
    with torch.no_grad():
        ref_cond = model.global_condition(
            feed["observation.state"],
            [feed["observation.images.top"], feed["observation.images.wrist"]],
            None,
        )
    assert max_abs(torch.from_numpy(cond), ref_cond) <= PARITY_ATOL

    step = manifest["graphs"]["diffusion_step"]
    sess = ort_session(out / step["file"], threads=1)
    sampler = model.sampler
    x = golden[f"obs{i}.noise"]
    step_noise = golden[f"obs{i}.ddpm_step_noise"]
    step_err = 0.0
    for k, t in enumerate(manifest["policy"]["ddpm"]["timesteps"]):
        tt = np.full((x.shape[0],), t, dtype=np.int64)
        eps = sess.run(["eps"], {"x_t": x.numpy(), "t": tt, "global_cond": cond})[0]
        if k in (0, 50, 99):  # step parity along the trajectory
            with torch.no_grad():
                ref = model.unet(x, torch.from_numpy(tt), torch.from_numpy(cond))
            step_err = max(step_err, max_abs(torch.from_numpy(eps), ref))
        x = sampler.step(torch.from_numpy(eps), k, x, step_noise[k] if t > 0 else None)
    assert step_err <= PARITY_ATOL
    start = manifest["policy"]["chunk_start"]
    chunk = x[:, start : start + manifest["policy"]["n_action_steps"]]
    err = max_abs(chunk, golden[f"obs{i}.action_chunk_normalized"])
    assert err <= DDPM_ATOL, err


def test_cli_exports_a_lerobot_folder(fixtures_dir, tmp_path, capsys):
    folder = G.policy_dir(fixtures_dir, "act") / "pretrained_model"
    assert main(["export", "onnx", str(folder), "--out", str(tmp_path / "o")]) == 0
    printed = capsys.readouterr().out
    assert "act_chunk.onnx" in printed and "max |err|" in printed
    rc = main(["export", "onnx", str(folder), "--out", str(tmp_path / "p"), "--parts", "prefix"])
    assert rc == 2 and "select no graph" in capsys.readouterr().err


def test_native_entry_points_at_the_lerobot_one(fixtures_dir, tmp_path):
    folder = G.policy_dir(fixtures_dir, "act") / "pretrained_model"
    with pytest.raises(ConfigError, match="imported 'lerobot_act' checkpoint.*export_any_onnx"):
        export_onnx(folder, tmp_path / "o")


def test_quantize_ternary_refuses_an_imported_folder(fixtures_dir, tmp_path, capsys):
    """int8 of these folders: tests/test_pretrained_lerobot_int8.py; ternary is refused."""
    for kind, fmt in (("act", "lerobot_act"), ("diffusion", "lerobot_diffusion")):
        folder = G.policy_dir(fixtures_dir, kind) / "pretrained_model"
        out = tmp_path / kind
        rc = main(["export", "quantize", str(folder), "--method", "ternary", "--out", str(out)])
        err = capsys.readouterr().err
        assert rc == 2 and "Traceback" not in err
        assert f"imported '{fmt}' checkpoint" in err and "vlastack export onnx" in err
        assert not out.exists()
