"""X-VLA config options the fixture does not exercise, checked against LeRobot 0.6.1 itself:
the other action spaces whose model width is the fixture's 20 (``ee6d``: gripper columns zeroed
before each step and squashed by a sigmoid at the end; ``agibot_ee6d``; ``franka_joint7``: 7
columns kept) and ``dtype: bfloat16``. Each variant is the fixture folder with config.json
changed; LeRobot's ``XVLAPolicy.from_pretrained`` + ``generate_actions`` run in its own
interpreter (``lerobot_xvla_variants_script.py``) on obs0's recorded inputs and noise, and
vlastack's loader must give the same chunk. A wrong action width is refused at load."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import _lerobot_golden as G
from _lerobot_python import lerobot_python
from vlastack.errors import ConfigError
from vlastack.pretrained.lerobot.tokenizer import ByteTokenizer
from vlastack.pretrained.lerobot.xvla_policy import load_lerobot_xvla

SCRIPT = Path(__file__).with_name("lerobot_xvla_variants_script.py")
INPUTS = ("input_ids", "image_input", "image_mask", "domain_id", "proprio")
VARIANTS: dict[str, dict] = {
    "ee6d": {
        "action_mode": "ee6d",
        "output_features": {"action": {"type": "ACTION", "shape": [20]}},
    },
    "agibot_ee6d": {
        "action_mode": "agibot_ee6d",
        "output_features": {"action": {"type": "ACTION", "shape": [20]}},
    },
    "franka_joint7": {
        "action_mode": "franka_joint7",
        "output_features": {"action": {"type": "ACTION", "shape": [7]}},
    },
    "bfloat16": {"dtype": "bfloat16"},
}
# max abs difference allowed per variant: float32 as the fixture's fresh-process tolerance;
# bfloat16 (8 mantissa bits) one bf16 step of values around 1
LIMIT = {"bfloat16": 1e-2}


@pytest.fixture(autouse=True)
def _one_thread():
    """The goldens' thread count; also keeps these tiny models from oversubscribing a busy
    2-core box (two threads made each chunk ~100x slower there; conftest restores it)."""
    torch.set_num_threads(1)


def _variant(kind_dir: Path, dst: Path, change: dict) -> Path:
    shutil.copytree(kind_dir / "pretrained_model", dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg.update(change)
    (dst / "config.json").write_text(json.dumps(cfg, indent=4))
    return dst


def _ours(folder: Path, golden: dict[str, torch.Tensor]) -> torch.Tensor:
    pol = load_lerobot_xvla(folder, device="cpu", tokenizer=ByteTokenizer())
    args = [golden[f"obs0.generate_actions.{n}"] for n in INPUTS]
    with torch.inference_mode():
        return pol.network.model.generate_actions(*args, golden["obs0.noise"], 10).float()


def test_action_width_must_fit_the_action_space(fixtures_dir, tmp_path):
    kind_dir = G.policy_dir(fixtures_dir, "xvla")
    folder = _variant(kind_dir, tmp_path / "ee6d6", {"action_mode": "ee6d"})  # action still 6
    with pytest.raises(ConfigError, match=r"'ee6d' returns 20 action values.*has 6"):
        load_lerobot_xvla(folder, device="cpu", tokenizer=ByteTokenizer())


@pytest.mark.slow  # starts LeRobot 0.6.1 in a subprocess (importing it takes ~10-60 s here)
def test_variants_match_lerobot(fixtures_dir, tmp_path):
    torch.set_num_threads(1)
    kind_dir = G.policy_dir(fixtures_dir, "xvla")
    py = lerobot_python()
    jobs = {n: str(_variant(kind_dir, tmp_path / n, c)) for n, c in VARIANTS.items()}
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    out = tmp_path / "out.safetensors"
    argv = [py, str(SCRIPT), str(kind_dir / "golden.safetensors"), str(tmp_path / "jobs.json")]
    proc = subprocess.run([*argv, str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    theirs = load_file(str(out))
    golden = G.golden(kind_dir)
    tol = G.tolerance(kind_dir)["action_chunk_normalized"]
    for name, folder in jobs.items():
        ours = _ours(Path(folder), golden)
        assert ours.shape == theirs[name].shape, name
        diff = G.max_abs(ours, theirs[name])
        print(f"{name}: max abs diff {diff:.3g}")
        assert diff <= LIMIT.get(name, tol), name
    # the spaces really differ: ee6d's sigmoid puts the gripper columns in (0, 1)
    assert ((theirs["ee6d"][..., [9, 19]] > 0) & (theirs["ee6d"][..., [9, 19]] < 1)).all()
    assert theirs["franka_joint7"].shape[-1] == 7
