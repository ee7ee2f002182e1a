"""The real PyPI openpi-client (in its own venv, numpy<2) against a vlastack PolicyServer."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from vlastack.serving.protocol import unpackb
from vlastack.serving.server import ServerThread
from vlastack.serving.toy import ToyPolicy

ROOT = Path(__file__).resolve().parents[1]
OPENPI_PY = ROOT / ".venv-openpi" / "bin" / "python"
SCRIPT = Path(__file__).with_name("serving_openpi_script.py")

pytestmark = pytest.mark.skipif(
    not OPENPI_PY.exists(),
    reason="the real openpi-client lives in .venv-openpi: python3 -m venv .venv-openpi && "
    ".venv-openpi/bin/pip install openpi-client typing_extensions",
)


@pytest.mark.parametrize("style", ["libero", "aloha", "droid"])
def test_openpi_client_broker_and_runtime(style, tmp_path):
    served, local = (
        ToyPolicy(style, action_horizon=10, seed=5),
        ToyPolicy(style, action_horizon=10, seed=5),
    )
    out = tmp_path / "record.msgpack"
    with ServerThread(served, api_key="k3y") as srv:
        proc = subprocess.run(
            [str(OPENPI_PY), str(SCRIPT), str(srv.port), style, str(out), "k3y"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = unpackb(out.read_bytes())

    assert rec["metadata"] == served.metadata
    for obs, got in zip(rec["direct_obs"], rec["direct_out"]):
        # parity: served actions equal in-process infer on the observation the client sent
        np.testing.assert_array_equal(got["actions"], local.infer(obs)["actions"])
        assert set(got) == {"actions", "policy_timing", "server_timing"}

    assert rec["error"].startswith(
        "Error in inference server:\nbad request: observation is missing"
    )
    assert "Traceback" not in rec["error"]
    np.testing.assert_array_equal(
        rec["after_error"]["actions"], local.infer(rec["direct_obs"][1])["actions"]
    )

    # ActionChunkBroker(action_horizon=4) under runtime.Runtime: infer at steps 0, 4, 8, and each
    # step executes row (step % 4) of the chunk computed from the observation of the query step.
    obs, actions = rec["runtime_obs"], rec["runtime_actions"]
    # openpi's Runtime checks max_episode_steps before counting the step: 10 -> 11 steps.
    assert len(actions) == len(obs) == 11
    for step, act in enumerate(actions):
        query = step - step % 4
        expected = local.infer(obs[query])["actions"][step % 4]
        np.testing.assert_array_equal(act["actions"], expected)
        assert isinstance(act["server_timing"]["infer_ms"], float)
