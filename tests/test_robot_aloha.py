"""``vlastack robot`` driving the ALOHA sim (gym-aloha) inside ``.venv-aloha``, its own venv, with
chunks from a policy server in this process whose policy returns a NaN chunk (the server refuses
to send it) and an out-of-range chunk.
The runner, safety layer and adapter run in that venv's interpreter (no torch there)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from _robot_fakes import ScriptedPolicy
from vlastack.envs.remote import runner

ALOHA_VENV = runner.default_venv("aloha")
pytestmark = [
    pytest.mark.sim,
    pytest.mark.skipif(
        not runner.venv_python(ALOHA_VENV).exists(),
        reason=f"ALOHA venv not built at {ALOHA_VENV}; build it with "
        "`python -m vlastack.envs.remote.runner --make-venv aloha` (about 1 min, 650 MB)",
    ),
]


def test_robot_runner_drives_aloha_sim_in_its_own_venv(tmp_path):
    pytest.importorskip("websockets")
    from vlastack.serving.server import ServerThread

    limits = tmp_path / "limits.json"
    limits.write_text(json.dumps({"low": -2.0, "high": 2.0, "max_delta": 0.2}))
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo / "src"), "MUJOCO_GL": "egl"}
    policy = ScriptedPolicy(dim=14, horizon=10, faults={1: "nan", 3: "range"})
    with ServerThread(policy, port=0) as srv:
        out = subprocess.run(
            [
                str(runner.venv_python(ALOHA_VENV)),
                "-m",
                "vlastack",
                "robot",
                "--server",
                f"127.0.0.1:{srv.port}",
                "--env",
                "aloha/transfer_cube",
                "--control-hz",
                "50",
                "--max-ticks",
                "70",
                "--execute-horizon",
                "10",
                "--image-size",
                "96",
                "96",
                "--limits",
                str(limits),
                "--json",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=240,
        )
    assert out.returncode == 0, out.stderr[-3000:]
    total = json.loads(out.stdout.strip().splitlines()[-1])
    assert total["ticks"] == 70 and total["violations"] == 0
    # chunk 1 is NaN: vlastack's server refuses to send a non-finite chunk (an error frame
    # instead), so the runner sees one policy error and holds; no NaN reaches the robot
    assert total["interventions"]["policy_error"] == 1
    assert "nonfinite" not in total["interventions"]
    assert total["interventions"]["range_clamp"] == 10  # chunk 3 (3.0) clamped to 2.0
