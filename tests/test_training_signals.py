"""SIGTERM (and Ctrl-C) during training writes a checkpoint, then the process exits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vlastack.training.checkpoint import load_resume_state

TOY = Path(__file__).with_name("training_toy.py")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_writes_checkpoint_then_exits(tmp_path: Path, sig: signal.Signals) -> None:
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(TOY),
            f"--out_dir={out}",
            "--steps=10000",
            "--slow_s=0.05",
            "--log_every=1",
            "--log=none",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(TOY.parent)},
    )
    # Wait until training is under way (the parameter table is printed before step 1).
    deadline = time.monotonic() + 60
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("memory estimate") or time.monotonic() > deadline:
            break
    time.sleep(1.0)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == (143 if sig == signal.SIGTERM else 130), stderr
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["stopped_by"] == sig.name and 0 < result["step"] < 10000
    state = load_resume_state(out / "checkpoints" / "last")
    assert state.step == result["step"]
    assert f"stopped by {sig.name}" in stdout
