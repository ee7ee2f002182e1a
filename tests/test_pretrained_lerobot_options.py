"""LeRobot options beyond the fixtures' defaults give LeRobot 0.6.1's actions.

* Diffusion Policy: DDIM, ``prediction_type`` sample, linear / scaled_linear betas,
  ``clip_sample`` off, ``num_inference_steps`` below the training steps, ``resize_shape`` with
  ``crop_ratio``. Each variant is the diffusion fixture's config with options changed; LeRobot
  itself builds the policy (fixture weights where shapes fit) and ``save_pretrained``s it into
  tmp_path, then records the chunk of golden observation 0 with the recorded start noise and
  DDPM step draws; vlastack loads the saved folder and must give that chunk within the
  fixture's fresh-process tolerance.
* ACT ``temporal_ensemble_coeff``: LeRobot's ``select_action`` over a sequence of golden
  observations (one chunk per control step, ensembled) against vlastack's ``infer`` per step.

LeRobot runs once, as a subprocess in ``.venv-lerobot`` (tests/compat/lerobot_option_checks.py).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import _lerobot_golden as G
from _lerobot_golden import max_abs, raw_obs
from _lerobot_python import lerobot_python, run_checks
from vlastack.errors import ConfigError
from vlastack.pretrained.lerobot import diffusion as dmod
from vlastack.pretrained.lerobot.describe import describe_folder
from vlastack.pretrained.lerobot.diffusion_policy import load_lerobot_diffusion
from vlastack.pretrained.lerobot.policy import load_lerobot_act

COMPAT = Path(__file__).parent / "compat"

DIFFUSION_VARIANTS: dict[str, dict[str, Any]] = {
    "ddim_10": {"noise_scheduler_type": "DDIM", "num_inference_steps": 10},
    "ddim_sample_linear_noclip": {
        "noise_scheduler_type": "DDIM",
        "prediction_type": "sample",
        "beta_schedule": "linear",
        "clip_sample": False,
        "num_inference_steps": 20,
    },
    "ddpm_sample": {"prediction_type": "sample"},
    "ddpm_linear_noclip": {"beta_schedule": "linear", "clip_sample": False},
    "ddpm_scaled_linear_25": {"beta_schedule": "scaled_linear", "num_inference_steps": 25},
    # 48x64 frames -> 36x50 (antialiased down) -> crop 0.8 -> 28x40
    "resize_crop": {"resize_shape": [36, 50], "crop_ratio": 0.8},
    # upsampled, crop_ratio 1: LeRobot drops the fixture's crop_shape
    "resize_only": {"resize_shape": [56, 72], "crop_ratio": 1.0},
}
ENSEMBLE_COEFF = 0.5  # large, so that the weighting order matters
ENSEMBLE_SEQUENCE = [0, 1, 2, 1, 0]


def _variant_folder(src: Path, dst: Path, changes: dict[str, Any]) -> Path:
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    (dst / "config.json").write_text(json.dumps({**cfg, **changes}))
    return dst


@pytest.fixture(scope="module")
def lerobot_runs(fixtures_dir, tmp_path_factory) -> dict[str, Any]:
    py = lerobot_python()
    tmp = tmp_path_factory.mktemp("lerobot_options")
    ddir, adir = G.policy_dir(fixtures_dir, "diffusion"), G.policy_dir(fixtures_dir, "act")
    jobs, folders = [], {}
    for name, changes in DIFFUSION_VARIANTS.items():
        folders[name] = _variant_folder(ddir / "pretrained_model", tmp / name, changes)
        jobs.append(
            {"check": "diffusion_variant", "golden_dir": str(ddir), "folder": str(tmp / name)}
        )
    act_changes = {"temporal_ensemble_coeff": ENSEMBLE_COEFF, "n_action_steps": 1}
    folders["act"] = _variant_folder(adir / "pretrained_model", tmp / "act", act_changes)
    jobs.append(
        {
            "check": "act_ensemble",
            "golden_dir": str(adir),
            "folder": str(folders["act"]),
            "sequence": ENSEMBLE_SEQUENCE,
        }
    )
    (tmp / "jobs.json").write_text(json.dumps(jobs))
    res = run_checks(py, COMPAT / "lerobot_option_checks.py", tmp)
    assert res.returncode == 0, res.stderr[-3000:]
    results = json.loads((tmp / "out.json").read_text())
    return {
        "folders": folders,
        "results": dict(zip([*DIFFUSION_VARIANTS, "act"], results, strict=True)),
    }


@pytest.mark.parametrize("name", list(DIFFUSION_VARIANTS))
def test_diffusion_variant_matches_lerobot(name, lerobot_runs, fixtures_dir):
    ddir = G.policy_dir(fixtures_dir, "diffusion")
    golden, tol = G.golden(ddir), G.tolerance(ddir)
    folder = lerobot_runs["folders"][name]
    want = lerobot_runs["results"][name]
    torch.set_num_threads(1)  # LeRobot's run and the goldens' setting (restored by conftest)
    policy = load_lerobot_diffusion(folder, device="cpu")
    sampler = policy.network.diffusion.sampler
    changes = DIFFUSION_VARIANTS[name]
    assert sampler.kind == changes.get("noise_scheduler_type", "DDPM")
    assert len(sampler.timesteps) == changes.get("num_inference_steps", 100)
    # DDIM never draws; DDPM draws at every step but the last (t = 0)
    assert want["draws"] == (len(sampler.timesteps) - 1 if sampler.stochastic else 0)
    pre = policy.repeated(policy.preprocess([raw_obs(golden, 0)]))
    step_noise = golden["obs0.ddpm_step_noise"][: want["draws"]]
    chunk = policy.postprocess(
        policy.predict_normalized(pre, noise=golden["obs0.noise"], step_noise=step_noise)
    )
    err = max_abs(chunk, torch.tensor(want["chunk"]))
    print(f"{name}: max abs error vs LeRobot {err:.3g}")
    assert err <= tol["action_chunk (dataset units)"], (name, err)
    # the option changes the actions: the default config's golden chunk is far from this one
    assert max_abs(chunk, golden["obs0.action_chunk"]) > 100 * tol["action_chunk (dataset units)"]


def test_resize_and_crop_follow_lerobot_config(lerobot_runs):
    saved = {
        n: json.loads((f / "config.json").read_text()) for n, f in lerobot_runs["folders"].items()
    }
    assert saved["resize_crop"]["crop_shape"] == [28, 40]  # LeRobot's derivation, saved
    assert saved["resize_only"]["crop_shape"] is None
    spec = load_lerobot_diffusion(lerobot_runs["folders"]["resize_crop"], device="cpu").spec
    assert (spec.resize_shape, spec.crop_shape) == ((36, 50), (28, 40))


def test_resize_is_antialiased(lerobot_runs, fixtures_dir, monkeypatch):
    """Bite: a plain bilinear resize (no antialias) misses LeRobot's chunk."""
    ddir = G.policy_dir(fixtures_dir, "diffusion")
    golden, tol = G.golden(ddir), G.tolerance(ddir)
    monkeypatch.setattr(
        dmod,
        "resize",
        lambda x, size: torch.nn.functional.interpolate(x, size=size, mode="bilinear"),
    )
    policy = load_lerobot_diffusion(lerobot_runs["folders"]["resize_crop"], device="cpu")
    pre = policy.repeated(policy.preprocess([raw_obs(golden, 0)]))
    step_noise = golden["obs0.ddpm_step_noise"]
    chunk = policy.postprocess(
        policy.predict_normalized(pre, noise=golden["obs0.noise"], step_noise=step_noise)
    )
    want = torch.tensor(lerobot_runs["results"]["resize_crop"]["chunk"])
    assert max_abs(chunk, want) > 10 * tol["action_chunk (dataset units)"]


def test_act_temporal_ensemble_matches_lerobot_select_action(lerobot_runs, fixtures_dir):
    adir = G.policy_dir(fixtures_dir, "act")
    golden, tol = G.golden(adir), G.tolerance(adir)
    policy = load_lerobot_act(lerobot_runs["folders"]["act"], device="cpu")
    assert policy.metadata["action_horizon"] == policy.metadata["execute_horizon"] == 1
    info = describe_folder(lerobot_runs["folders"]["act"], "act", "lerobot_act")  # inspect
    assert info["chunk_length"] == info["execute_horizon"] == 1
    want = np.asarray(lerobot_runs["results"]["act"])  # (steps, 1, A)
    for run in range(2):  # the second run checks that reset() clears the ensemble
        policy.reset()
        got = np.stack([policy.infer(raw_obs(golden, i))["actions"] for i in ENSEMBLE_SEQUENCE])
        assert got.shape == want.shape
        err = float(np.abs(got.astype(np.float64) - want).max())
        assert err <= tol["action_chunk (dataset units)"], (run, err)
    # bite: without ensembling, the first actions of the chunks differ from LeRobot's
    policy.ensembler = None
    plain = np.stack([policy.infer(raw_obs(golden, i))["actions"][:1] for i in ENSEMBLE_SEQUENCE])
    assert float(np.abs(plain - want).max()) > 100 * tol["action_chunk (dataset units)"]


def test_bad_options_are_named(fixtures_dir, tmp_path):
    src = G.policy_dir(fixtures_dir, "diffusion") / "pretrained_model"
    cases = [
        ({"noise_scheduler_type": "PNDM"}, "noise_scheduler_type 'PNDM'"),
        ({"prediction_type": "v_prediction"}, "prediction_type 'v_prediction'"),
        ({"beta_schedule": "cubic"}, "beta_schedule 'cubic'"),
        ({"num_inference_steps": 101}, "num_inference_steps 101"),
        ({"crop_ratio": 1.5}, "crop_ratio 1.5"),
        ({"resize_shape": [0, 10]}, "resize_shape"),
    ]
    for i, (changes, words) in enumerate(cases):
        folder = _variant_folder(src, tmp_path / str(i), changes)
        with pytest.raises(ConfigError, match=words):
            load_lerobot_diffusion(folder, device="cpu")
    act = G.policy_dir(fixtures_dir, "act") / "pretrained_model"
    folder = _variant_folder(act, tmp_path / "act", {"temporal_ensemble_coeff": 0.01})
    with pytest.raises(ConfigError, match="temporal_ensemble_coeff 0.01 needs n_action_steps 1"):
        load_lerobot_act(folder, device="cpu")
