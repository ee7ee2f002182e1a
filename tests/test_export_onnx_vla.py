"""Imported LeRobot SmolVLA / pi0 / pi0.5 folders export to ONNX and run through the
``onnxruntime`` runner (issue #26 "export to ONNX/int8 like any vlastack checkpoint"; #25's
"imported networks run eager only").

On ``fixtures/lerobot_policies/{smolvla,pi0,pi05}``:

* ``vlastack export onnx FOLDER --out DIR`` (the fixture folder itself: no tokenizer needed)
  writes ``<kind>_prefix.onnx`` (VLM KV cache) and ``<kind>_step.onnx`` (the expert's velocity)
  with a manifest; the CLI's own check (onnxruntime vs PyTorch on random inputs at batch 1 and
  3, token length 48/200) is within ``PARITY_ATOL``;
* those two files, driven by a 10-step Euler loop written here in numpy on the golden
  preprocessed inputs and noise (token lengths 21-31: the token axis is dynamic), give
  ``sample_actions``'s output within ``ORT_ATOL`` of vlastack eager and of LeRobot's golden, and
  after vlastack's unnormalization LeRobot's golden ``action_chunk`` within ``2 x`` golden.json's
  fresh-process tolerance (measured: 1x, i.e. one float32 ulp of the action values);
* the policy served with ``--runner onnxruntime`` (``vlastack serve``'s loader) predicts the same
  chunks as the eager policy within the same bounds; ``eval``'s loader honours
  ``VLASTACK_RUNNER``; runners that do not apply say so.

Measured here (2-core EPYC, loaded): normalized chunk |onnxruntime - eager| <= 1.2e-6
(SmolVLA), 1.4e-6 (pi0), 1.1e-6 (pi0.5), i.e. ~1e-6 relative to the normalized range; dataset
units 7.6e-6 / 7.6e-6 / 1.5e-5 (golden tolerances 7.6e-6 / 7.6e-6 / 1.5e-5).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import _lerobot_cli as L
import _lerobot_golden as G
from _lerobot_golden import OBS, max_abs
from _lerobot_tokenizer import write_byte_tokenizer
from vlastack.cli.main import main
from vlastack.errors import ConfigError
from vlastack.export.onnx import ort_session
from vlastack.pretrained.lerobot.pi0_policy import load_lerobot_pi0
from vlastack.pretrained.lerobot.smolvla_policy import load_lerobot_smolvla
from vlastack.pretrained.lerobot.tokenizer import ByteTokenizer

pytest.importorskip("onnxruntime")

KINDS = ("smolvla", "pi0", "pi05")
PARITY_ATOL = 1e-5  # per graph, onnxruntime vs PyTorch (the CLI's check)
ORT_ATOL = 5e-6  # normalized chunk, onnxruntime vs eager / golden (measured <= 1.4e-6)


@pytest.fixture(scope="module")
def exported(fixtures_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vla_onnx")
    out = {}
    for kind in KINDS:
        src = G.policy_dir(fixtures_dir, kind) / "pretrained_model"
        assert main(["export", "onnx", str(src), "--out", str(root / kind)]) == 0
        out[kind] = root / kind
    return out


def _policy(fixtures_dir: Path, kind: str):
    folder = G.policy_dir(fixtures_dir, kind) / "pretrained_model"
    if kind == "smolvla":
        return load_lerobot_smolvla(folder, device="cpu", tokenizer=ByteTokenizer())
    return load_lerobot_pi0(folder, device="cpu", tokenizer="bytes")


def _golden_args(golden: dict, i: int) -> dict[str, torch.Tensor]:
    p = f"obs{i}.sample_actions."
    return {k[len(p) :]: v for k, v in golden.items() if k.startswith(p)}


def _euler_numpy(prefix, step, feed: dict, noise: np.ndarray, steps: int, state) -> np.ndarray:
    """LeRobot's Euler loop (dt = -1/steps from t = 1), here in numpy around the two graphs."""
    pad, k, v = prefix.run(["prefix_pad", "prefix_k", "prefix_v"], feed)
    x = noise.astype(np.float32)
    dt = np.float32(-1.0 / steps)
    for s in range(steps):
        t = np.full((x.shape[0],), 1.0 + s * (-1.0 / steps), dtype=np.float32)
        step_feed = {"x_t": x, "t": t, "prefix_pad": pad, "prefix_k": k, "prefix_v": v}
        if state is not None:
            step_feed["state"] = state
        (vel,) = step.run(["velocity"], step_feed)
        x = x + dt * vel
    return x


@pytest.mark.parametrize("kind", KINDS)
def test_export_writes_prefix_and_step_graphs(exported, kind):
    out = exported[kind]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == f"lerobot_{kind}"
    assert set(manifest["graphs"]) == {f"{kind}_prefix", f"{kind}_step"}
    for g in manifest["graphs"].values():
        assert (out / g["file"]).is_file()
        assert 0 <= g["max_abs_error"] <= PARITY_ATOL, g
    pol = manifest["policy"]
    assert pol["flow"]["num_steps"] == 10 and pol["chunk_size"] == 10
    assert (
        len(pol["cameras"]) == 2
        and pol["state_input"]
        == {
            "smolvla": "prefix",
            "pi0": "suffix",
            "pi05": "none",
        }[kind]
    )
    action = manifest["normalization"]["unnormalizer"]["features"]["action"]
    assert action["mode"] in ("MEAN_STD", "QUANTILES") and action["stats"]
    # the token axis is dynamic (the golden prompts are shorter than the export's 48 / 200)
    prefix = manifest["graphs"][f"{kind}_prefix"]
    assert prefix["dynamic_axes"]["lang_tokens"] == {"0": "batch", "1": "tokens"}


@pytest.mark.parametrize("kind", KINDS)
def test_onnx_files_give_eager_and_golden_chunks(exported, fixtures_dir, kind):
    torch.set_num_threads(1)
    kind_dir = G.policy_dir(fixtures_dir, kind)
    golden, tol = G.golden(kind_dir), G.tolerance(kind_dir)
    policy = _policy(fixtures_dir, kind)
    manifest = json.loads((exported[kind] / "manifest.json").read_text())
    prefix = ort_session(exported[kind] / f"{kind}_prefix.onnx", threads=1)
    step = ort_session(exported[kind] / f"{kind}_step.onnx", threads=1)
    names = {i.name for i in prefix.get_inputs()}
    for i in OBS:
        a = _golden_args(golden, i)
        feed = {n: a[n].numpy() for n in names}
        state = a["state"].numpy() if kind == "pi0" else None
        onnx_out = _euler_numpy(prefix, step, feed, a["noise"].numpy(), 10, state)
        n_img = len(manifest["policy"]["cameras"])
        args = (
            [a[f"images.{j}"] for j in range(n_img)],
            [a[f"img_masks.{j}"] for j in range(n_img)],
            a["lang_tokens"],
            a["lang_masks"],
            a.get("state"),
            a["noise"],
        )
        with torch.inference_mode():
            eager = policy.network.model.sample_actions(*args)
        got = torch.from_numpy(onnx_out)
        assert max_abs(got, eager) <= ORT_ATOL
        assert max_abs(got, a["output"]) <= ORT_ATOL
        chunk = got[:, :, : manifest["policy"]["action_dim"]]
        if kind == "smolvla":
            final = policy.postprocess(chunk)
        else:
            final = policy.postprocess(chunk, golden[f"obs{i}.raw.observation.state"][None])
        err = max_abs(final, golden[f"obs{i}.action_chunk"])
        assert err <= 2 * tol["action_chunk (dataset units)"], (i, err)


@pytest.fixture(scope="module")
def smolvla_root(fixtures_dir, tmp_path_factory) -> Path:
    """The SmolVLA fixture beside a real (tokenizers-built) byte tokenizer folder, as serve
    loads it from the processor JSON's ``tokenizer_name``."""
    kind_dir = G.policy_dir(fixtures_dir, "smolvla")
    root = tmp_path_factory.mktemp("smolvla_ort")
    shutil.copytree(kind_dir / "pretrained_model", root / "pretrained_model")
    vlm = root / "smolvlm2_tiny_config"
    vlm.mkdir()
    shutil.copy(kind_dir / "smolvlm2_tiny_config" / "config.json", vlm / "config.json")
    write_byte_tokenizer(vlm)
    return root / "pretrained_model"


def _folder(kind: str, fixtures_dir: Path, smolvla_root: Path, monkeypatch) -> Path:
    if kind == "smolvla":
        return smolvla_root
    monkeypatch.setenv("VLASTACK_LEROBOT_TOKENIZER", "bytes")
    return G.policy_dir(fixtures_dir, kind) / "pretrained_model"


@pytest.mark.parametrize("kind", KINDS)
def test_served_with_runner_onnxruntime_matches_eager(
    kind, fixtures_dir, smolvla_root, monkeypatch
):
    folder = _folder(kind, fixtures_dir, smolvla_root, monkeypatch)
    argv = [str(folder), "--device", "cpu", "--threads", "1"]
    served = L.serve_policy([*argv, "--runner", "onnxruntime"])
    eager = L.serve_policy(argv)
    assert served.runner == "onnxruntime" and eager.runner == "eager"
    assert served.metadata["runner"] == "onnxruntime"
    kind_dir = G.policy_dir(fixtures_dir, kind)
    golden, meta = G.golden(kind_dir), json.loads((kind_dir / "golden.json").read_text())
    torch.set_num_threads(1)
    obs = [{**G.raw_obs(golden, i), "task": meta["observations"][i]["task"]} for i in OBS]
    for i in OBS:
        got, want = (
            p.predict_normalized(p.preprocess([obs[i]]), noise=golden[f"obs{i}.noise"])
            for p in (served, eager)
        )
        assert 0 < max_abs(got, want) <= ORT_ATOL or torch.equal(got, want)
        assert max_abs(got, golden[f"obs{i}.action_chunk_normalized"]) <= ORT_ATOL
    # a batch of the three (tokens padded to the longest) through the same graphs
    replies = served.infer_batch(obs, sessions=[served.new_session() for _ in OBS])
    want_b = eager.infer_batch(obs, sessions=[eager.new_session() for _ in OBS])
    for r, w in zip(replies, want_b, strict=True):
        np.testing.assert_allclose(r["actions"], w["actions"], rtol=1e-5, atol=1e-4)


def test_eval_loader_takes_the_runner_and_others_refuse(fixtures_dir, monkeypatch):
    from vlastack.evaluation.loading import load_policy

    folder = _folder("pi0", fixtures_dir, Path(), monkeypatch)
    monkeypatch.setenv("VLASTACK_RUNNER", "onnxruntime")  # what `vlastack eval --runner` sets
    assert load_policy(folder).runner == "onnxruntime"  # graphs are exported on first chunk
    monkeypatch.delenv("VLASTACK_RUNNER")
    policy = load_policy(folder)
    assert policy.runner == "eager"
    with pytest.raises(ConfigError, match="eager, onnxruntime"):
        policy.use_runner("native")
