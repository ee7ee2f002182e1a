"""Imported LeRobot ACT / Diffusion policies written back as LeRobot ``pretrained_model`` folders
(``vlastack export lerobot``, ``vlastack.pretrained.lerobot.write``).

Round trip import -> export -> import: every tensor equal, the golden observations give identical
actions, the folder has the source's file names and JSON (byte for byte: no field is changed);
a changed weight or stat (fine-tuning) is what gets exported; LeRobot 0.6.1 itself loads the
exported ACT folder and gives the golden chunk (and the fine-tuned chunk vlastack computes).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors import safe_open

import _lerobot_golden as G
from _lerobot_golden import OBS, max_abs, raw_obs
from _lerobot_python import lerobot_python
from vlastack.cli.main import main
from vlastack.errors import ConfigError
from vlastack.policy import Policy
from vlastack.pretrained.lerobot import write as lw
from vlastack.pretrained.lerobot.diffusion_policy import (
    LeRobotDiffusionPolicy,
    load_lerobot_diffusion,
)
from vlastack.pretrained.lerobot.policy import LeRobotACTPolicy, load_lerobot_act

LOADERS = {"act": load_lerobot_act, "diffusion": load_lerobot_diffusion}
COMPAT_SCRIPT = Path(__file__).parent / "compat" / "check_lerobot_act_export.py"


@pytest.fixture(scope="module", params=["act", "diffusion"])
def kind(request) -> str:
    return request.param


def _src(fixtures_dir: Path, kind: str) -> Path:
    return G.policy_dir(fixtures_dir, kind) / "pretrained_model"


def _load(kind: str, folder: Path) -> Any:
    return LOADERS[kind](folder, device="cpu")


def _normalizers(policy: Any) -> tuple[Any, Any]:
    if isinstance(policy, LeRobotDiffusionPolicy):
        return policy.processors.normalizer, policy.processors.unnormalizer
    return policy.normalizer, policy.unnormalizer


def _chunks(policy: Any, golden: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """Final action chunks of the three golden observations (diffusion: the recorded noise)."""
    torch.set_num_threads(1)  # restored by conftest
    policy.reset()  # diffusion: the golden history stacks [0, 0], [0, 1], [1, 2]
    out = []
    for i in OBS:
        obs = raw_obs(golden, i)
        if isinstance(policy, LeRobotACTPolicy):
            out.append(torch.from_numpy(policy.infer(obs)["actions"]))
            continue
        chunk = policy.predict_normalized(
            policy.window(policy.preprocess([obs])),
            golden[f"obs{i}.noise"],
            golden[f"obs{i}.ddpm_step_noise"],
        )
        out.append(policy.postprocess(chunk)[0])
    return out


def _assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def _assert_same_stats(p: Any, q: Any) -> None:
    for n, m in zip(_normalizers(p), _normalizers(q), strict=True):
        assert (n is None) == (m is None)
        if n is not None:
            _assert_same_tensors(n.flat_stats(), m.flat_stats())


def test_round_trip_gives_identical_tensors_and_actions(fixtures_dir, kind, tmp_path):
    src = _src(fixtures_dir, kind)
    golden = G.golden(src.parent)
    policy = _load(kind, src)
    out = lw.write_pretrained(policy, tmp_path / "out")
    again = _load(kind, out)
    _assert_same_tensors(policy.network.state_dict(), again.network.state_dict())
    _assert_same_stats(policy, again)
    want = _chunks(policy, golden)
    for i, (a, b) in enumerate(zip(want, _chunks(again, golden), strict=True)):
        assert torch.equal(a, b), i
        tol = G.tolerance(src.parent)["action_chunk (dataset units)"]
        assert max_abs(b, golden[f"obs{i}.action_chunk"][0]) <= tol, i


def test_exported_files_have_the_source_names_and_content(fixtures_dir, kind, tmp_path):
    """No documented exception: every JSON field is kept (device included), and the
    unchanged weights and stats come back as the same bytes (LeRobot's own formatting)."""
    src = _src(fixtures_dir, kind)
    out = lw.write_pretrained(_load(kind, src), tmp_path / "out")
    names = sorted(p.name for p in src.iterdir())
    assert sorted(p.name for p in out.iterdir()) == names
    for name in names:
        if name.endswith(".json"):
            assert json.loads((out / name).read_text()) == json.loads((src / name).read_text())
        else:
            with safe_open(str(src / name), "pt") as f, safe_open(str(out / name), "pt") as g:
                assert sorted(f.keys()) == sorted(g.keys()), name
                for k in f.keys():  # noqa: SIM118
                    assert torch.equal(f.get_tensor(k), g.get_tensor(k)), (name, k)
                    assert f.get_tensor(k).dtype == g.get_tensor(k).dtype, (name, k)
        assert (out / name).read_bytes() == (src / name).read_bytes(), name
    assert not [p for p in tmp_path.iterdir() if p.name != "out"]  # no temp folder left


def _fine_tune(policy: Any) -> tuple[str, str]:
    """Change one weight that reaches the actions and one action stat, in place."""
    key = (
        "model.action_head.bias"
        if isinstance(policy, LeRobotACTPolicy)
        else ("diffusion.unet.final_conv.1.bias")
    )
    with torch.no_grad():
        policy.network.state_dict()[key].add_(0.25)
    _, unnorm = _normalizers(policy)
    stat = "mean" if isinstance(policy, LeRobotACTPolicy) else "max"
    unnorm.stats["action"][stat] = unnorm.stats["action"][stat] + 1.5
    return key, stat


def test_fine_tuned_weights_and_stats_are_exported(fixtures_dir, kind, tmp_path):
    src = _src(fixtures_dir, kind)
    golden = G.golden(src.parent)
    policy = _load(kind, src)
    before = _chunks(policy, golden)
    key, stat = _fine_tune(policy)
    tuned = _chunks(policy, golden)
    assert not torch.equal(before[0], tuned[0])
    again = _load(kind, lw.write_pretrained(policy, tmp_path / "out"))
    _assert_same_tensors(policy.network.state_dict(), again.network.state_dict())
    _assert_same_stats(policy, again)
    orig = _load(kind, src)
    assert not torch.equal(orig.network.state_dict()[key], again.network.state_dict()[key])
    assert not torch.equal(
        _normalizers(orig)[1].stats["action"][stat], _normalizers(again)[1].stats["action"][stat]
    )
    for i, (a, b) in enumerate(zip(tuned, _chunks(again, golden), strict=True)):
        assert torch.equal(a, b), i


def test_lerobot_loads_the_exported_act_folder(fixtures_dir, tmp_path):
    """LeRobot's ACTPolicy.from_pretrained + make_pre_post_processors read the export: the
    golden chunks within the fixture's fresh-process tolerance, and for a fine-tuned export the
    chunks vlastack computes for that policy."""
    py = lerobot_python()
    src = _src(fixtures_dir, "act")
    golden = G.golden(src.parent)
    tol = G.tolerance(src.parent)["action_chunk (dataset units)"]
    plain = lw.write_pretrained(_load("act", src), tmp_path / "plain")
    policy = _load("act", src)
    _fine_tune(policy)
    tuned_want = _chunks(policy, golden)
    tuned = lw.write_pretrained(policy, tmp_path / "tuned")
    res = subprocess.run(
        [py, str(COMPAT_SCRIPT), str(src.parent), str(plain), str(tuned)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    for i in OBS:
        chunk = torch.tensor(got[str(plain)][i])
        assert max_abs(chunk, golden[f"obs{i}.action_chunk"]) <= tol, i
        chunk = torch.tensor(got[str(tuned)][i])[0]
        assert max_abs(chunk, tuned_want[i]) <= tol, i
        assert max_abs(chunk, golden[f"obs{i}.action_chunk"][0]) > 1.0, i


# ---- CLI, overwrite rules, atomicity ------------------------------------------------------


def test_cli_exports_refuses_a_non_empty_out_and_force_replaces(fixtures_dir, tmp_path, capsys):
    src = _src(fixtures_dir, "act")
    out = tmp_path / "out"
    out.mkdir()  # an empty folder is fine
    assert main(["export", "lerobot", str(src), "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    (out / "model.safetensors").write_bytes(b"stale")
    assert main(["export", "lerobot", str(src), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "exists and is not empty" in err and "--force" in err
    assert (out / "model.safetensors").read_bytes() == b"stale"
    assert main(["export", "lerobot", str(src), "--out", str(out), "--force"]) == 0
    assert (out / "model.safetensors").read_bytes() == (src / "model.safetensors").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    # onto its own source: read into memory first, then replaced
    assert main(["export", "lerobot", str(out), "--out", str(out), "--force"]) == 0
    for p in src.iterdir():
        assert (out / p.name).read_bytes() == p.read_bytes(), p.name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        lw.export_checkpoint(src, tmp_path / "file", force=True)


def test_native_checkpoints_are_refused(tmp_path, capsys):
    from _export_tiny import write_tiny_checkpoint

    ckpt = write_tiny_checkpoint(tmp_path / "native")
    assert main(["export", "lerobot", str(ckpt), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "native vlastack checkpoint" in err
    assert "only imported LeRobot policies" in err
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match="no checkpoint folder"):
        lw.export_checkpoint(tmp_path, tmp_path / "out")
    with pytest.raises(ConfigError, match="not an imported LeRobot policy"):
        lw.write_pretrained(Policy.from_checkpoint(ckpt), tmp_path / "out")


def test_legacy_folders_are_refused(fixtures_dir, tmp_path):
    policy = _load("act", _src(fixtures_dir, "act"))
    policy.folder_json = None  # what a LeRobot < 0.4 folder would give
    with pytest.raises(ConfigError, match="LeRobot < 0.4"):
        lw.write_pretrained(policy, tmp_path / "out")
    assert not list(tmp_path.iterdir())


def test_a_failed_write_leaves_out_as_it_was(fixtures_dir, tmp_path, monkeypatch):
    src = _src(fixtures_dir, "act")
    policy = _load("act", src)
    calls = []

    def fail_on_third(path):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full")

    monkeypatch.setattr(lw, "fsync_file", fail_on_third)
    with pytest.raises(OSError, match="disk full"):
        lw.write_pretrained(policy, tmp_path / "out")
    assert not list(tmp_path.iterdir())  # neither out nor a temp folder
    old = tmp_path / "old"
    old.mkdir()
    (old / "keep.txt").write_text("old export")
    calls.clear()
    with pytest.raises(OSError, match="disk full"):
        lw.write_pretrained(policy, old, force=True)
    assert [p.name for p in old.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]


# ---- Policy.from_checkpoint and registered formats ----------------------------------------


def test_policy_from_checkpoint_loads_registered_formats(fixtures_dir, kind, tmp_path):
    src = _src(fixtures_dir, kind)
    policy = Policy.from_checkpoint(src, device="cpu")
    assert isinstance(policy, LeRobotACTPolicy if kind == "act" else LeRobotDiffusionPolicy)
    assert policy.device == torch.device("cpu")
    assert policy.checkpoint == str(src)
    with pytest.raises(ConfigError, match="drop --embodiment"):
        Policy.from_checkpoint(src, device="cpu", embodiment="left_arm")
    actions = policy.infer(raw_obs(G.golden(src.parent), 0))["actions"]
    assert actions.shape == (10, 6) and np.isfinite(actions).all()
