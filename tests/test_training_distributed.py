"""torchrun on the CPU (gloo): 2 processes x half the batch == 1 process x the full batch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from training_toy import toy_parts
from vlastack.training.config import TrainConfig, apply_overrides
from vlastack.training.loop import train

TOY = Path(__file__).with_name("training_toy.py")
TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which(
    "torchrun"
)
ARGS = ["--steps=3", "--batch_size=8", "--lr=1e-2", "--warmup_steps=1", "--val_batches=1"]


def run(cmd: list[str], out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(TOY.parent), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        cmd + [f"--out_dir={out}"], capture_output=True, text=True, env=env, timeout=240
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(TORCHRUN is None, reason="torchrun is not on PATH")
@pytest.mark.parametrize("mode", ["ddp", pytest.param("fsdp", marks=pytest.mark.slow)])
def test_two_ranks_match_one_process(tmp_path: Path, mode: str) -> None:
    cfg = apply_overrides(
        TrainConfig(log="none", progress=False), [*ARGS, f"--out_dir={tmp_path}/one"]
    )
    res = train(cfg, lambda c: toy_parts(loss_noise=0.0))
    single = {"step": res.step, "losses": res.losses, "last": str(res.last_checkpoint)}
    multi = run(
        [TORCHRUN, "--standalone", "--nproc_per_node=2", str(TOY), *ARGS, f"--distributed={mode}"],
        tmp_path / "two",
    )
    assert multi["step"] == single["step"] == 3
    assert multi["losses"] == pytest.approx(single["losses"], rel=1e-5)
    a = load_file(str(Path(single["last"]) / "model.safetensors"))
    b = load_file(str(Path(multi["last"]) / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    # only rank 0 wrote: one run folder, one checkpoint per save, no per-rank files
    assert sorted(p.name for p in (tmp_path / "two" / "checkpoints").iterdir()) == [
        "best",
        "last",
        "step_000003",
    ]
