"""``vlastack serve``: clear errors for bad checkpoints, and a real server process with --toy."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request

import numpy as np

from vlastack.cli.main import main
from vlastack.serving.client import PolicyClient
from vlastack.serving.toy import ToyPolicy, example_observation


def test_missing_checkpoint_is_a_clear_error(capsys, tmp_path):
    assert main(["serve", str(tmp_path / "nope")]) == 2
    assert "no such checkpoint folder" in capsys.readouterr().err
    assert main(["serve"]) == 2
    assert "needs a CHECKPOINT" in capsys.readouterr().err


def test_unloadable_checkpoint_is_a_clear_error(capsys, tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    assert main(["serve", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert str(tmp_path) in err or "vlastack.policy" in err


def test_serve_toy_process_end_to_end():
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vlastack",
            "serve",
            "--toy",
            "droid",
            "--port",
            "0",
            "--api-key",
            "abc",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        port = None
        deadline = time.monotonic() + 30
        assert proc.stderr is not None
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            m = re.search(r"serving on ws://127\.0\.0\.1:(\d+)", line)
            port = int(m.group(1)) if m else None
        assert port, "server did not report its port"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            assert r.read() == b"OK\n"
        with PolicyClient("127.0.0.1", port, api_key="abc") as client:
            obs = example_observation("droid")
            np.testing.assert_array_equal(
                client.infer(obs)["actions"], ToyPolicy("droid").infer(obs)["actions"]
            )
    finally:
        proc.terminate()
        proc.wait(30)  # SIGTERM stops serve in ~1 s; generous for a loaded CI box
