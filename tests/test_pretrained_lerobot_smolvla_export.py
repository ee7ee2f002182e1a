"""``vlastack export lerobot`` for imported SmolVLA policies: the folder written back is the
source's byte for byte when nothing changed, import -> export -> import gives identical tensors
and actions, a changed weight or stat is carried through, and LeRobot 0.6.1's own
``SmolVLAPolicy.from_pretrained`` + processors load the export and give the same chunks
(``tests/compat/check_lerobot_smolvla_export.py`` in ``.venv-lerobot``)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

import _lerobot_golden as G
from _lerobot_golden import OBS, max_abs, raw_obs
from _lerobot_python import lerobot_python
from _lerobot_tokenizer import write_byte_tokenizer
from vlastack.cli.main import main
from vlastack.pretrained.lerobot import write as lw
from vlastack.pretrained.lerobot.smolvla_policy import LeRobotSmolVLAPolicy, load_lerobot_smolvla
from vlastack.pretrained.lerobot.tokenizer import ByteTokenizer

COMPAT_SCRIPT = Path(__file__).parent / "compat" / "check_lerobot_smolvla_export.py"
TASKS = ["pick up the red block", "put the green cup in the sink", "open the top drawer"]


@pytest.fixture(scope="module")
def kind_dir(fixtures_dir: Path) -> Path:
    return G.policy_dir(fixtures_dir, "smolvla")


@pytest.fixture(scope="module")
def golden(kind_dir: Path) -> dict[str, torch.Tensor]:
    return G.golden(kind_dir)


@pytest.fixture
def root(kind_dir: Path, tmp_path: Path) -> Path:
    """tmp_path/{pretrained_model, smolvlm2_tiny_config (config.json + a byte tokenizer)}: the
    layout config.json's relative vlm_model_name expects, for exports written beside it."""
    shutil.copytree(kind_dir / "pretrained_model", tmp_path / "pretrained_model")
    vlm = tmp_path / "smolvlm2_tiny_config"
    vlm.mkdir()
    shutil.copy(kind_dir / "smolvlm2_tiny_config" / "config.json", vlm / "config.json")
    write_byte_tokenizer(vlm)
    return tmp_path


def _load(folder: Path) -> LeRobotSmolVLAPolicy:
    return load_lerobot_smolvla(folder, device="cpu", tokenizer=ByteTokenizer())


def _chunks(policy: LeRobotSmolVLAPolicy, golden) -> list[torch.Tensor]:
    torch.set_num_threads(1)  # restored by conftest
    out = []
    for i in OBS:
        pre = policy.preprocess([{**raw_obs(golden, i), "task": TASKS[i]}])
        out.append(
            policy.postprocess(policy.predict_normalized(pre, noise=golden[f"obs{i}.noise"]))
        )
    return out


def _fine_tune(policy: LeRobotSmolVLAPolicy) -> None:
    """A stand-in for training: change an expert weight, the state mean and the action std."""
    with torch.no_grad():
        policy.network.model.action_out_proj.bias.add_(0.05)
        policy.network.model.vlm_with_expert.lm_expert.layers[1].mlp.up_proj.weight.mul_(1.1)
    norm, unnorm = policy.processors.normalizer, policy.processors.unnormalizer
    norm.stats["observation.state"]["mean"] = norm.stats["observation.state"]["mean"] + 1.0
    unnorm.stats["action"]["std"] = unnorm.stats["action"]["std"] * 1.1


def test_unchanged_export_is_the_source_byte_for_byte(root):
    src = root / "pretrained_model"
    out = lw.write_pretrained(_load(src), root / "out")
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in src.iterdir())
    for f in src.iterdir():
        assert (out / f.name).read_bytes() == f.read_bytes(), f.name


def test_round_trip_and_fine_tuned_export(root, golden, kind_dir):
    tol = G.tolerance(kind_dir)["action_chunk (dataset units)"]
    policy = _load(root / "pretrained_model")
    again = _load(lw.write_pretrained(policy, root / "out"))
    a, b = policy.network.state_dict(), again.network.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    for x, y, i in zip(_chunks(policy, golden), _chunks(again, golden), OBS, strict=True):
        assert torch.equal(x, y) and max_abs(y, golden[f"obs{i}.action_chunk"]) <= tol
    _fine_tune(policy)
    tuned = _load(lw.write_pretrained(policy, root / "tuned"))
    for x, y, i in zip(_chunks(policy, golden), _chunks(tuned, golden), OBS, strict=True):
        assert torch.equal(x, y)
        assert max_abs(y, golden[f"obs{i}.action_chunk"]) > 1.0


def test_cli_exports_a_smolvla_folder(root, capsys):
    src = root / "pretrained_model"
    assert main(["export", "lerobot", str(src), "--out", str(root / "cli")]) == 0
    assert (root / "cli" / "model.safetensors").read_bytes() == (
        src / "model.safetensors"
    ).read_bytes()


def test_lerobot_loads_the_exported_smolvla_folder(root, golden, kind_dir):
    """LeRobot's SmolVLAPolicy.from_pretrained + make_pre_post_processors read the export (with
    the tokenizers-built byte tokenizer beside it): the golden chunks within the fixture's
    fresh-process tolerance, and for a fine-tuned export the chunks vlastack computes."""
    py = lerobot_python()
    tol = G.tolerance(kind_dir)["action_chunk (dataset units)"]
    plain = lw.write_pretrained(_load(root / "pretrained_model"), root / "plain")
    policy = _load(root / "pretrained_model")
    _fine_tune(policy)
    tuned_want = _chunks(policy, golden)
    tuned = lw.write_pretrained(policy, root / "tuned")
    res = subprocess.run(
        [py, str(COMPAT_SCRIPT), str(kind_dir), str(plain), str(tuned)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    for i in OBS:
        chunk = torch.tensor(got[str(plain)][i])
        assert max_abs(chunk, golden[f"obs{i}.action_chunk"]) <= tol, i
        chunk = torch.tensor(got[str(tuned)][i])
        assert max_abs(chunk, tuned_want[i]) <= tol, i
        assert max_abs(chunk, golden[f"obs{i}.action_chunk"]) > 1.0, i
