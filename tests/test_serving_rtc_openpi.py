"""The real PyPI openpi-client (its own venv, numpy<2) against a vlastack server that takes
real-time-chunking guidance (``serving.guidance``).

A plain openpi request gets exactly the reply it got before guidance existed (same keys, the
in-process actions); the same unmodified client can send the ``rtc/*`` fields as ordinary
observation keys (openpi's msgpack_numpy packs them, an ``np.int64`` delay included) and gets the
in-process guided chunk; a malformed field comes back as openpi's ``RuntimeError`` naming the
field, and the connection goes on. A server whose policy has no flow head refuses a guided
request the same way and still answers plain ones.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from _export_tiny import tiny_obs, write_tiny_checkpoint
from vlastack.policy import Policy
from vlastack.serving.protocol import packb, unpackb
from vlastack.serving.server import ServerThread

ROOT = Path(__file__).resolve().parents[1]
OPENPI_PY = ROOT / ".venv-openpi" / "bin" / "python"
SCRIPT = Path(__file__).with_name("serving_rtc_openpi_script.py")

pytestmark = pytest.mark.skipif(
    not OPENPI_PY.exists(),
    reason="the real openpi-client lives in .venv-openpi: python3 -m venv .venv-openpi && "
    ".venv-openpi/bin/pip install openpi-client typing_extensions",
)


@pytest.fixture(autouse=True)
def one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _run_openpi(policy, requests: list[dict], tmp_path: Path) -> dict:
    src, out = tmp_path / "requests.msgpack", tmp_path / "replies.msgpack"
    src.write_bytes(packb({"requests": requests}))
    with ServerThread(policy) as srv:
        proc = subprocess.run(
            [str(OPENPI_PY), str(SCRIPT), str(srv.port), str(src), str(out)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return unpackb(out.read_bytes())


def test_openpi_client_plain_guided_and_bad_guidance(tmp_path):
    ckpt = write_tiny_checkpoint(tmp_path / "flow", action_horizon=8)
    local = Policy.from_checkpoint(ckpt, seed=3)
    first = local.infer(tiny_obs(0))["actions"]
    second = local.infer_guided(tiny_obs(1), first[3:], 2)["actions"]
    third = local.infer(tiny_obs(2))["actions"]
    nan = first[3:].copy()
    nan[0, 1] = np.nan
    requests = [
        tiny_obs(0),
        {**tiny_obs(1), "rtc/prev_actions": nan, "rtc/inference_delay": 2},
        {**tiny_obs(1), "rtc/prev_actions": first[3:], "rtc/inference_delay": -1},
        {**tiny_obs(1), "rtc/prev_actions": first[3:], "rtc/inference_delay": np.int64(2)},
        tiny_obs(2),
    ]
    rec = _run_openpi(Policy.from_checkpoint(ckpt, seed=3), requests, tmp_path)
    assert rec["metadata"]["rtc"]["version"] == 1
    plain, bad_nan, bad_delay, guided, plain_again = rec["replies"]
    assert set(plain) == {"actions", "policy_timing", "server_timing"}
    np.testing.assert_array_equal(plain["actions"], first)
    for reply, field in (
        (bad_nan, "'rtc/prev_actions' holds a non-finite value (NaN)"),
        (bad_delay, "'rtc/inference_delay' is -1"),
    ):
        assert reply["error"].startswith("Error in inference server:\nbad request: ")
        assert field in reply["error"] and "Traceback" not in reply["error"]
    np.testing.assert_array_equal(guided["actions"], second)
    assert guided["rtc"] == {"prefix_steps": 5, "inference_delay": 2}
    assert set(plain_again) == {"actions", "policy_timing", "server_timing"}
    np.testing.assert_array_equal(plain_again["actions"], third)


def test_openpi_client_against_a_policy_without_guidance(tmp_path):
    ckpt = write_tiny_checkpoint(tmp_path / "l1", head="l1", action_horizon=8)
    policy = Policy.from_checkpoint(ckpt, seed=3)
    expected = Policy.from_checkpoint(ckpt, seed=3).infer(tiny_obs(0))["actions"]
    guided = {"rtc/prev_actions": expected[2:], "rtc/inference_delay": 1}
    rec = _run_openpi(policy, [{**tiny_obs(0), **guided}, tiny_obs(0)], tmp_path)
    assert "rtc" not in rec["metadata"] and rec["metadata"] == policy.metadata
    refused, plain = rec["replies"]
    assert "cannot sample with real-time-chunking guidance" in refused["error"]
    np.testing.assert_array_equal(plain["actions"], expected)
