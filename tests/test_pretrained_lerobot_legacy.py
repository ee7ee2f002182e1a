"""LeRobot checkpoints from before 0.4 (stats as buffers inside model.safetensors, no processor
files) load with the actions of their 0.6.1 form.

The old folders are derived from the ACT and Diffusion Policy fixtures the way LeRobot 0.6.1's
``processor/migrate_policy_normalization.py`` reads them backwards: each normalizer stat moved
into ``normalize_inputs.buffer_<feature with _>.<stat>`` (inputs), ``normalize_targets.buffer_``
and ``unnormalize_outputs.buffer_`` (the action), processor files deleted.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import _lerobot_golden as G
from vlastack.errors import ConfigError
from vlastack.evaluation.loading import load_policy
from vlastack.policy_formats import detect_policy_format
from vlastack.pretrained.lerobot.legacy import extract_stats

SAME = dict(rtol=0, atol=1e-6)


def _stats_file(folder: Path, pattern: str) -> dict[str, torch.Tensor]:
    (file,) = folder.glob(pattern)
    return load_file(str(file))


def make_legacy(src: Path, dst: Path, *, compiled: bool = False) -> Path:
    """``src`` (a 0.6.1 folder) rewritten as a LeRobot < 0.4 folder at ``dst``."""
    shutil.copytree(src, dst)
    weights = load_file(str(dst / "model.safetensors"))
    if compiled:  # torch.compile'd policies saved '<module>._orig_mod.<rest>'
        weights = {k.replace("model.", "model._orig_mod.", 1): v for k, v in weights.items()}
    pre = _stats_file(dst, "policy_preprocessor_step_*_normalizer_processor.safetensors")
    post = _stats_file(dst, "policy_postprocessor_step_*_unnormalizer_processor.safetensors")
    cfg = json.loads((dst / "config.json").read_text())
    for flat, t in pre.items():
        feature, _, stat = flat.rpartition(".")
        if stat not in ("mean", "std", "min", "max"):
            continue  # the old buffers held only these
        name = feature.replace(".", "_")
        if feature in cfg["input_features"]:
            if cfg["input_features"][feature]["type"] == "VISUAL":
                t = t.reshape(-1, 1, 1)
            weights[f"normalize_inputs.buffer_{name}.{stat}"] = t.clone()
        else:
            weights[f"normalize_targets.buffer_{name}.{stat}"] = t.clone()
    for flat, t in post.items():
        feature, _, stat = flat.rpartition(".")
        if stat in ("mean", "std", "min", "max"):
            weights[f"unnormalize_outputs.buffer_{feature.replace('.', '_')}.{stat}"] = t.clone()
    save_file(weights, str(dst / "model.safetensors"))
    for f in dst.glob("policy_*processor*"):
        f.unlink()
    return dst


def raw_obs(kind_dir: Path, i: int) -> dict[str, np.ndarray]:
    return G.raw_obs(G.golden(kind_dir), i)


@pytest.fixture(scope="module")
def policies_dir(fixtures_dir: Path) -> Path:
    d = fixtures_dir / "lerobot_policies"
    if not (d / "act").exists():
        pytest.skip(f"LeRobot policy fixtures not found at {d}")
    return d


@pytest.mark.parametrize("kind,compiled", [("act", False), ("act", True), ("diffusion", False)])
def test_old_folder_gives_the_actions_of_the_new_one(policies_dir, tmp_path, kind, compiled):
    new = policies_dir / kind / "pretrained_model"
    old = make_legacy(new, tmp_path / "old", compiled=compiled)
    assert not list(old.glob("policy_*"))
    assert detect_policy_format(old).name == f"lerobot_{kind}"  # type: ignore[union-attr]
    p_new, p_old = load_policy(new), load_policy(old)
    for i in (0, 1, 2):  # obs2 is beyond the stats' range: the clipping-free formulas matter
        obs = raw_obs(policies_dir / kind, i)
        p_new.reset()
        p_old.reset()
        np.testing.assert_allclose(
            p_old.infer(obs)["actions"], p_new.infer(obs)["actions"], **SAME, err_msg=str(i)
        )
    assert p_old.metadata["embodiment"] == {
        **p_new.metadata["embodiment"],
        "extra": {**p_new.metadata["embodiment"]["extra"], "source": str(old)},
    }


def test_buffer_names_map_back_to_feature_names_with_underscores():
    t = torch.zeros(2)
    stats = extract_stats(
        {
            "normalize_inputs.buffer_observation_environment_state.mean": t,
            "normalize_inputs.buffer_observation_state.min": t,
            "model.encoder.weight": t,
        },
        ["observation.environment_state", "observation.state", "action"],
    )
    # LeRobot's converter would say 'observation.environment.state'
    assert sorted(stats) == ["observation.environment_state", "observation.state"]


def test_old_folder_in_inspect(policies_dir, tmp_path, capsys):
    from vlastack.cli.main import main

    old = make_legacy(policies_dir / "act" / "pretrained_model", tmp_path / "old")
    assert main(["inspect", str(old)]) == 0
    out = capsys.readouterr().out
    assert "format lerobot_act" in out
    assert "observation.state: state float (6,) raw units, normalized MEAN_STD" in out
    assert "mean  2.1 -95.3 88.7 65.2 -1.4 12.8" in out


def test_a_folder_without_any_stats_says_what_is_missing(policies_dir, tmp_path):
    old = make_legacy(policies_dir / "act" / "pretrained_model", tmp_path / "old")
    weights = {
        k: v for k, v in load_file(str(old / "model.safetensors")).items() if "normalize" not in k
    }
    save_file(weights, str(old / "model.safetensors"))
    assert detect_policy_format(old) is None  # no processor file, no stats: not claimed
    from vlastack.pretrained.lerobot.policy import load_lerobot_act

    with pytest.raises(ConfigError, match="no policy_preprocessor.json.*normalize_inputs"):
        load_lerobot_act(old, device="cpu")


def test_detection_of_an_old_folder_does_not_import_torch(policies_dir, tmp_path):
    old = make_legacy(policies_dir / "act" / "pretrained_model", tmp_path / "old")
    code = (
        "import sys, vlastack.policy_formats as pf; "
        f"print(pf.detect_policy_format({str(old)!r}).name, 'torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.split() == ["lerobot_act", "False"]
