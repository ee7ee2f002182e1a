"""The runner with a fake arm shaped like LeRobot 0.6.1's ``Robot`` (SO-100 follower), safety
limits from a YAML file, and the rollout recorded as a LeRobot v3 dataset read back with
vlastack's reader; plus the limits' sources and their errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from _robot_fakes import FakeSO100, PointRobot, ScriptedPolicy
from vlastack.embodiment import EmbodimentSpec, VectorSpec
from vlastack.errors import ConfigError
from vlastack.robot.adapters import LeRobotRobot
from vlastack.robot.record import RolloutRecorder
from vlastack.robot.runner import RobotRunner
from vlastack.robot.safety import KINDS, SafetyFilter, limits_for, read_limits_file

LIMITS_YAML = """\
low: [-90, -90, -90, -90, -150, 0]
high: [90, 90, 90, 90, 150, 100]
max_delta: 5
stale_after_s: 1.0
"""


class ArmPolicy(ScriptedPolicy):
    """Scripted chunks scaled to degrees (chunk 1 overshoots: 140), restarting every episode."""

    def reset(self):
        self.calls = 0

    def infer(self, obs):
        assert obs["observation.state"].shape == (6,)
        assert obs["observation.images.front"].shape == (24, 32, 3)
        assert obs["task"] == "pick the cube"
        out = super().infer(obs)
        out["actions"] = out["actions"] * 40.0 + 20.0
        return out


def test_fake_lerobot_arm_recorded_and_read_back(tmp_path):
    from vlastack.data.reader import DatasetReader

    arm = FakeSO100()
    robot = LeRobotRobot(arm, control_hz=100.0)
    assert robot.embodiment.action.names[0] == "shoulder_pan.pos"
    assert [c.name for c in robot.embodiment.cameras] == ["front"]
    (tmp_path / "limits.yaml").write_text(LIMITS_YAML)
    limits = limits_for(
        robot.embodiment.action.names,
        100.0,
        robot=robot.embodiment,
        overrides=read_limits_file(tmp_path / "limits.yaml"),
    )
    recorder = RolloutRecorder(tmp_path / "rollouts", robot.embodiment, use_videos=False)
    policy = ArmPolicy(dim=6, faults={1: "range", 3: "nan"})
    runner = RobotRunner(
        robot,
        policy,
        SafetyFilter(limits),
        runtime_kwargs={"execute_horizon": 5},
        task="pick the cube",
        recorder=recorder,
    )
    robot.connect()
    assert arm.is_connected and arm.calibrate_arg is True
    # 20 actions reach both faults; the rest is room for ticks a loaded machine makes late
    results = [runner.run_episode(max_ticks=45, seed=s) for s in (0, 1)]
    recorder.close()
    robot.disconnect()
    assert not arm.is_connected

    sent = np.array([[a[k] for k in robot.embodiment.action.names] for a in arm.sent])
    assert len(sent) == sum(r.ticks for r in results)
    assert np.all(sent >= limits.low) and np.all(sent <= limits.high)
    for r in results:
        assert r.violations == 0 and r.counts["nonfinite"] == 5
        assert r.counts["range_clamp"] + r.counts["rate_limit"] >= 5

    ds = DatasetReader(tmp_path / "rollouts")
    assert ds.info["total_episodes"] == 2 and len(ds) == len(sent)
    assert ds.embodiment is not None and ds.embodiment.robot_type == "so100_follower"
    np.testing.assert_allclose(ds.column("action"), sent, rtol=1e-6, atol=1e-4)
    flags = ds.column("safety.interventions")
    assert flags.shape == (len(sent), len(KINDS))
    assert flags[:, KINDS.index("nonfinite")].sum() == 10
    valid = ds.column("action.policy_valid").reshape(-1)
    assert (~valid).sum() >= 10  # the NaN ticks are marked invalid, their raw values zeroed
    assert np.all(np.isfinite(ds.column("action.policy")))
    frame = ds.frame(3)
    assert np.asarray(frame["observation.images.front"]).shape[-1] in (3, 24, 32)
    assert ds.task_of(0) == "pick the cube"


def test_lerobot_adapter_names_missing_api():
    class NotARobot:
        def connect(self):
            pass

    with pytest.raises(ConfigError, match="get_observation") as exc:
        LeRobotRobot(NotARobot(), control_hz=30)
    assert "send_action" in str(exc.value)


def test_limits_sources_and_refusals(tmp_path):
    names = ["a", "b"]
    ckpt = EmbodimentSpec(
        "r", [], VectorSpec(["s"]), VectorSpec(names, low=[-1, -2], high=[1, 2]), 10
    )
    robot = EmbodimentSpec(
        "r", [], VectorSpec(["s"]), VectorSpec(names, low=[-3, -1], high=[0.5, 3]), 10
    )
    lim = limits_for(names, 10, checkpoint=ckpt, robot=robot)
    np.testing.assert_allclose(lim.low, [-1, -1])
    np.testing.assert_allclose(lim.high, [0.5, 2])
    np.testing.assert_allclose(lim.max_delta, 0.25 * np.array([1.5, 3.0]))
    np.testing.assert_allclose(lim.max_velocity, lim.max_delta * 10)
    # stats min/max (+5 %) when no embodiment declares a range
    bare = EmbodimentSpec("r", [], VectorSpec(["s"]), VectorSpec(names), 10)
    lim = limits_for(names, 10, checkpoint=bare, stats={"action": {"min": [0, 0], "max": [10, 2]}})
    np.testing.assert_allclose(lim.low, [-0.5, -0.1])
    # no range anywhere: refuse, pointing at the file
    with pytest.raises(ConfigError, match="--limits"):
        limits_for(names, 10, checkpoint=bare)
    # a file overrides, by name too; bad entries name the field and the file
    f = tmp_path / "lim.json"
    f.write_text('{"low": {"a": -5, "b": -5}, "high": 5, "safe_action": [0, 0]}')
    lim = limits_for(
        names, 10, checkpoint=ckpt, overrides=read_limits_file(f), overrides_source=str(f)
    )
    np.testing.assert_allclose(lim.high, [5, 5])
    f.write_text('{"max_delta": [1, 2, 3]}')
    with pytest.raises(ConfigError, match=r"lim\.json: max_delta has 3 values for 2 actions"):
        limits_for(
            names, 10, checkpoint=ckpt, overrides=read_limits_file(f), overrides_source=str(f)
        )
    f.write_text('{"max_speed": 1}')
    with pytest.raises(ConfigError, match="unknown key"):
        read_limits_file(f)


def test_declared_safe_action_is_what_a_hold_sends():
    robot = PointRobot(camera=False)
    limits = limits_for(
        robot.embodiment.action.names,
        100,
        robot=robot.embodiment,
        overrides={"safe_action": [0.5, 0.5, 0.5], "max_delta": 1.0},
    )
    res = RobotRunner(
        robot,
        ScriptedPolicy(faults={0: "nan", 1: "nan", 2: "nan"}),
        SafetyFilter(limits),
        runtime_kwargs={"execute_horizon": 5},
    ).run_episode(max_ticks=10)
    assert res.counts["nonfinite"] >= 1
    assert len(robot.commands) == 10 and all(np.allclose(c, 0.5) for c in robot.commands)


def test_a_subclass_of_lerobots_own_robot_abc(tmp_path):
    """LeRobot 0.6.1's interpreter: an arm subclassing ``lerobot.robots.Robot`` itself."""
    import os
    import subprocess
    from pathlib import Path

    from _lerobot_python import lerobot_python

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo / "src")}
    out = subprocess.run(
        [lerobot_python(), str(repo / "tests" / "robot_lerobot_script.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    sent = np.array(res["sent"])
    assert res["robot_type"] == "vlastack_soft_arm" and not res["connected"]
    assert len(sent) == 60 and np.all(np.abs(sent) <= 90)
    assert np.all(np.abs(np.diff(sent, axis=0)) <= 20 + 1e-9)
    assert res["counts"]["nonfinite"] == 5 and res["counts"]["range_clamp"] == 5


class KeyedPolicy(ScriptedPolicy):
    """Expects the state under the key ``--obs-key`` renamed it to."""

    def infer(self, obs):
        assert "state" in obs and "observation.state" not in obs, sorted(obs)
        return super().infer(obs)


def test_cli_lerobot_arm_through_a_server(tmp_path, capsys):
    pytest.importorskip("websockets")
    import _robot_fakes
    from vlastack.cli.main import main
    from vlastack.serving.server import ServerThread

    args = [
        "robot",
        "--lerobot",
        "_robot_fakes:make_so100",
        "--control-hz",
        "100",
        "--max-ticks",
        "20",
        "--obs-key",
        "observation.state=state",
        "--json",
    ]
    with ServerThread(KeyedPolicy(dim=6), port=0) as srv:
        server = ["--server", f"127.0.0.1:{srv.port}"]
        assert main(args + server) == 2  # no range declared anywhere: refuses
        assert "--limits" in capsys.readouterr().err
        (tmp_path / "limits.yaml").write_text(LIMITS_YAML)
        rc = main(args + server + ["--limits", str(tmp_path / "limits.yaml")])
    out = capsys.readouterr().out
    assert rc == 0, out
    total = json.loads(out.strip().splitlines()[-1])
    arm = _robot_fakes.MADE[-1]
    assert total["ticks"] == len(arm.sent) > 0 and total["violations"] == 0
    assert not arm.is_connected  # disconnected at the end


def test_lerobot_itself_loads_the_recorded_rollouts(tmp_path):
    """LeRobot 0.6.1's ``LeRobotDataset`` reads a recorded rollout (video camera, the extra
    ``action.policy`` / ``safety.*`` columns) with the commands as its ``action``."""
    import subprocess
    from pathlib import Path

    from _lerobot_python import lerobot_python
    from vlastack.data.reader import DatasetReader

    py = lerobot_python()
    robot = LeRobotRobot(FakeSO100(), control_hz=100.0)
    (tmp_path / "limits.yaml").write_text(LIMITS_YAML)
    limits = limits_for(
        robot.embodiment.action.names, 100.0, overrides=read_limits_file(tmp_path / "limits.yaml")
    )
    recorder = RolloutRecorder(tmp_path / "rollouts", robot.embodiment, use_videos=True)
    runner = RobotRunner(
        robot,
        ArmPolicy(dim=6, faults={1: "nan"}),
        SafetyFilter(limits),
        runtime_kwargs={"execute_horizon": 5},
        task="pick the cube",
        recorder=recorder,
    )
    robot.connect()
    res = runner.run_episode(max_ticks=15)
    recorder.close()
    script = Path(__file__).parent / "compat" / "check_lerobot_load.py"
    proc = subprocess.run(
        [py, str(script), str(tmp_path / "rollouts"), "--backends", "pyav"],
        capture_output=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    seen = json.loads(proc.stdout.decode().strip().splitlines()[-1])["backends"]["pyav"]
    assert (seen["num_episodes"], seen["num_frames"]) == (1, res.ticks)
    act = DatasetReader(tmp_path / "rollouts").column("action")
    for rec in seen["frames"]:
        assert rec["task"] == "pick the cube"
        assert rec["shape:observation.images.front"] == [3, 24, 32]
        assert rec["shape:safety.interventions"] == [len(KINDS)]
        np.testing.assert_allclose(rec["action"][0], act[rec["index"]], rtol=1e-6)


def test_cli_imported_lerobot_act_drives_the_fake_arm(fixtures_dir, capsys, caplog):
    """A LeRobot ACT ``pretrained_model`` (the shared fixture: random weights, SO-100 shaped)
    in process, its action stats as the range (no embodiment range, no limits file)."""
    import logging

    import _robot_fakes
    from vlastack.cli.main import main

    ckpt = fixtures_dir / "lerobot_policies" / "act" / "pretrained_model"
    args = [
        "robot",
        str(ckpt),
        "--lerobot",
        "_robot_fakes:make_so100_two_cams",
        "--control-hz",
        "30",
        "--max-ticks",
        "20",
        "--json",
    ]
    with caplog.at_level(logging.INFO, logger="vlastack.robot"):
        assert main(args) == 0
    total = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "range from checkpoint action stats min/max +5%" in caplog.text
    arm = _robot_fakes.MADE[-1]
    sent = np.array([[a[f"{m}.pos"] for m in arm.MOTORS] for a in arm.sent])
    assert total["ticks"] == len(sent) > 0 and total["violations"] == 0
    assert np.all(np.isfinite(sent))
    import re

    low, high = (
        np.array([float(v) for v in re.search(rf"{k}=\[([^\]]*)\]", caplog.text)[1].split(",")])
        for k in ("low", "high")
    )
    assert np.all(sent >= low - 0.1) and np.all(sent <= high + 0.1)  # the log shows 4 digits
