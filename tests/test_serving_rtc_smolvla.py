"""Real-time chunking through ``vlastack serve`` with the imported SmolVLA fixture
(../shared/fixtures/lerobot_policies/smolvla): the ``rtc/*`` fields reach
``LeRobotSmolVLAPolicy.infer_guided`` with the connection's own session.

* The served policy advertises guidance; a guided request gives the in-process chunk exactly
  (same observations, same committed actions, same seeded noise), and so does the ``rtc``
  runtime in virtual time through ``RemotePolicy``.
* ``vlastack robot --server HOST:PORT --strategy rtc`` drives PushT through the server with a
  PushT-shaped SmolVLA folder, and the server answers guided requests.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import _lerobot_golden as G
from _lerobot_golden import raw_obs

pytest.importorskip("websockets")


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)  # conftest restores the count


def _load(folder: Path) -> Any:
    from vlastack.pretrained.lerobot.smolvla_policy import load_lerobot_smolvla
    from vlastack.pretrained.lerobot.tokenizer import ByteTokenizer

    return load_lerobot_smolvla(folder, device="cpu", tokenizer=ByteTokenizer())


@pytest.fixture(scope="module")
def folder(fixtures_dir) -> Path:
    return G.policy_dir(fixtures_dir, "smolvla") / "pretrained_model"


@pytest.fixture(scope="module")
def golden(fixtures_dir):
    return G.golden(G.policy_dir(fixtures_dir, "smolvla"))


def _obs(golden, i: int) -> dict[str, Any]:
    return {**raw_obs(golden, i), "task": "pick up the red block"}


def test_guided_smolvla_over_the_wire_equals_in_process(folder, golden):
    from vlastack.serving.client import PolicyClient, ServerError
    from vlastack.serving.server import ServerThread

    local = _load(folder)
    first = local.infer(_obs(golden, 0))["actions"]
    # committed actions far from this chunk (the random-weight fixture's chunks barely depend
    # on the observation): guidance then has something to do
    prev = first[2:] + 25.0
    second = local.infer_guided(_obs(golden, 1), prev, 3)["actions"]
    third = local.infer_guided(_obs(golden, 2), second[4:], 1, schedule="linear")["actions"]
    with ServerThread(_load(folder)) as srv, PolicyClient("127.0.0.1", srv.port) as c:
        assert c.supports_guidance
        got0 = c.infer(_obs(golden, 0))
        assert set(got0) == {"actions", "policy_timing", "server_timing"}
        got1 = c.infer_guided(_obs(golden, 1), got0["actions"][2:] + 25.0, 3)
        got2 = c.infer_guided(
            _obs(golden, 2), prev_chunk_start=4, inference_delay=1, schedule="linear"
        )
        with pytest.raises(ServerError, match=r"'rtc/prev_actions' has shape \(3, 2\)"):
            c.infer(
                {**_obs(golden, 0), "rtc/prev_actions": np.zeros((3, 2)), "rtc/inference_delay": 1}
            )
        assert srv.server.num_guided == 2
    np.testing.assert_array_equal(got0["actions"], first)
    np.testing.assert_array_equal(got1["actions"], second)
    np.testing.assert_array_equal(got2["actions"], third)
    assert got1["rtc"] == {"prefix_steps": len(prev), "inference_delay": 3}
    # the guidance pulled the frozen steps onto the committed ones
    assert np.abs(second[:3] - prev[:3]).mean() < 0.05 * np.abs(first[2:5] - prev[:3]).mean()


def test_rtc_runtime_through_remote_policy_equals_in_process(folder, golden):
    from vlastack.robot.sources import RemotePolicy
    from vlastack.serving.runtime import make_runtime
    from vlastack.serving.server import ServerThread
    from vlastack.serving.simulate import SimClock, SimExecutor

    def run(policy) -> np.ndarray:
        clock = SimClock()
        rt = make_runtime(
            "rtc",
            policy,
            threshold=0.6,
            initial_delay_ticks=1,
            control_hz=10.0,
            executor=SimExecutor(clock, 0.15),
            clock=clock,
        )
        out = []
        for k in range(10):
            out.append(rt.step(_obs(golden, k % 3)))
            clock.sleep(0.1)
        assert rt.num_inferences >= 3
        return np.stack(out)

    local = run(_load(folder))
    with ServerThread(_load(folder)) as srv:
        remote = RemotePolicy("127.0.0.1", srv.port)
        remote.connect()
        got = run(remote)
        remote.close()
        assert srv.server.num_guided >= 2
    np.testing.assert_array_equal(got, local)


def test_robot_cli_rtc_through_a_server_in_pusht(fixtures_dir, tmp_path, capsys):
    pytest.importorskip("gym_pusht")
    from _lerobot_tokenizer import write_byte_tokenizer
    from test_pretrained_lerobot_smolvla_cli import write_pusht_smolvla_folder
    from vlastack.cli.main import main
    from vlastack.policy_formats import detect_policy_format
    from vlastack.serving.server import ServerThread

    kind_dir = G.policy_dir(fixtures_dir, "smolvla")
    root = tmp_path / "root"
    root.mkdir()
    shutil.copytree(kind_dir / "pretrained_model", root / "pretrained_model")
    vlm = root / "smolvlm2_tiny_config"
    vlm.mkdir()
    shutil.copy(kind_dir / "smolvlm2_tiny_config" / "config.json", vlm / "config.json")
    write_byte_tokenizer(vlm)
    folder = write_pusht_smolvla_folder(root, root / "pusht_model")
    fmt = detect_policy_format(folder)
    assert fmt is not None
    policy = fmt.obj.load(folder, embodiment=None, device="cpu")
    with ServerThread(policy) as srv:
        argv = ["robot", "--server", f"127.0.0.1:{srv.port}", "--env", "pusht"]
        argv += ["--strategy", "rtc", "--max-ticks", "12", "--image-size", "96", "96", "--json"]
        rc = main(argv)
        guided = srv.server.num_guided
    out = capsys.readouterr()
    assert rc == 0, out.err[-3000:]
    lines = out.out.strip().splitlines()
    total = json.loads(lines[-1])
    assert total["ticks"] > 0 and total["violations"] == 0
    assert guided >= 1, out.err[-2000:]  # chunks after the first were guided over the wire


def test_robot_cli_rtc_refuses_a_server_without_guidance(capsys):
    from vlastack.cli.main import main
    from vlastack.serving.server import ServerThread
    from vlastack.serving.toy import ToyPolicy

    with ServerThread(ToyPolicy("libero", action_horizon=8)) as srv:
        rc = main(
            ["robot", "--server", f"127.0.0.1:{srv.port}", "--env", "pusht", "--strategy", "rtc"]
        )
    assert rc == 2
    assert "does not advertise real-time-chunking guidance" in capsys.readouterr().err
