"""Human corrections: a fake teleoperator (LeRobot 0.6.1's ``Teleoperator`` members) takes over
from the policy while it reports an intervention; the safety layer still limits what it sends;
the rollout records ``intervention`` per frame, read back by vlastack and by LeRobot itself."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from _robot_fakes import (
    HIGH,
    FakeLeader,
    FakeSO100,
    PointRobot,
    ScriptedPolicy,
    outside_limits,
)
from vlastack.errors import ConfigError
from vlastack.robot.adapters import LeRobotRobot
from vlastack.robot.interface import RobotError
from vlastack.robot.intervention import InterventionSwitch, TeleopIntervention
from vlastack.robot.record import RolloutRecorder
from vlastack.robot.runner import RobotRunner
from vlastack.robot.safety import SafetyFilter, limits_for

MAX_DELTA = 0.1
ON, OFF = 10, 20  # the person drives ticks ON..OFF-1


def _point_runner(leader, recorder=None, policy=None, intervening=None):
    robot = PointRobot()
    limits = limits_for(
        robot.embodiment.action.names,
        100.0,
        robot=robot.embodiment,
        overrides={"max_delta": MAX_DELTA},
    )
    source = TeleopIntervention(leader, robot.embodiment.action.names, intervening=intervening)
    runner = RobotRunner(
        robot,
        policy or ScriptedPolicy(),
        SafetyFilter(limits),
        runtime_kwargs={"execute_horizon": 5},
        recorder=recorder,
        intervention=source,
    )
    return robot, runner


def test_the_teleop_overrides_the_policy_through_the_safety_layer(tmp_path):
    from vlastack.data.reader import DatasetReader

    # the person commands 3.0 (outside the range [-1, 1]), far from the policy's |0.8| sine
    leader = FakeLeader(names=["j0", "j1", "j2"], value=3.0, intervene=lambda n: ON <= n < OFF)
    recorder = RolloutRecorder(tmp_path / "rollouts", PointRobot().embodiment, use_videos=False)
    policy = ScriptedPolicy()
    robot, runner = _point_runner(leader, recorder, policy)
    res = runner.run_episode(max_ticks=40)
    recorder.close()

    cmds = np.array(robot.commands)
    assert res.ticks == 40 and res.human_ticks == OFF - ON
    assert leader.actions_read == OFF - ON  # read only while intervening
    # the safety layer limits the human's command too: clamped to 1.0, 0.1 per tick at most
    assert outside_limits(cmds, max_delta=MAX_DELTA, start=np.zeros(3)) == 0
    assert res.violations == 0
    human = cmds[ON:OFF]
    assert np.all(np.diff(human, axis=0) >= -1e-12)  # moving up toward the person's target
    assert np.all(human <= HIGH) and np.all(human[-1] > cmds[ON - 1] + 0.3)
    assert res.counts["rate_limit"] >= 1 and res.counts["range_clamp"] >= 1
    # handed back: that tick holds (no action queued while the person drove runs), then the
    # policy drives again from a fresh chunk
    np.testing.assert_allclose(cmds[OFF], cmds[OFF - 1])
    assert not np.allclose(cmds[-1], cmds[OFF])

    ds = DatasetReader(tmp_path / "rollouts")
    flag = ds.column("intervention").reshape(-1).astype(bool)
    assert len(flag) == 40 and flag.sum() == OFF - ON
    assert np.flatnonzero(flag).tolist() == list(range(ON, OFF))
    np.testing.assert_allclose(ds.column("action"), cmds, atol=1e-6)  # the command sent
    valid = ds.column("action.policy_valid").reshape(-1).astype(bool)
    assert valid[ON:OFF].sum() >= 1  # the policy's own action recorded beside the human's
    hold = ds.column("safety.hold").reshape(-1).astype(bool)
    assert not hold[ON:OFF].any()  # a person driving is not a hold


def test_a_switch_from_a_key_or_pedal_and_a_nonfinite_human_command():
    switch = InterventionSwitch()
    leader = FakeLeader(names=["j0", "j1", "j2"], value=lambda n: np.nan if n == 2 else 0.5)
    robot, runner = _point_runner(leader, intervening=switch)
    robot.on_command = lambda n: switch.set(5 <= n < 9)  # pressed after command 5, released at 9
    res = runner.run_episode(max_ticks=20)
    assert res.human_ticks == 4 and leader.actions_read == 4
    assert res.counts["nonfinite"] == 1  # the person's NaN: held, like a policy's
    assert res.violations == 0 and np.all(np.isfinite(np.array(robot.commands)))
    assert switch.toggle() is True and switch() is True


def test_teleop_api_and_action_errors():
    class NoAction:
        action_features = {"j0": float}

    with pytest.raises(ConfigError, match="get_action"):
        TeleopIntervention(NoAction(), ["j0"])

    class NoFlag(FakeLeader):
        get_teleop_events = None

    with pytest.raises(ConfigError, match="intervening="):
        TeleopIntervention(NoFlag(names=["j0"]), ["j0"])
    with pytest.raises(ConfigError, match=r"lacks the robot's actions \['j1'\]"):
        TeleopIntervention(FakeLeader(names=["j0"]), ["j0", "j1"])
    source = TeleopIntervention(FakeLeader(names=["j0"]), ["j0"], intervening=lambda: True)
    source.teleop.names = ["other"]
    with pytest.raises(RobotError, match=r"lacks \['j0'\]"):
        source.poll()


def _arm_rollout(tmp_path, leader):
    robot = LeRobotRobot(FakeSO100(), control_hz=100.0)
    limits = limits_for(
        robot.embodiment.action.names,
        100.0,
        overrides={"low": -90, "high": 90, "max_delta": 5},
    )
    recorder = RolloutRecorder(tmp_path / "rollouts", robot.embodiment, use_videos=True)
    runner = RobotRunner(
        robot,
        ScriptedPolicy(dim=6),
        SafetyFilter(limits),
        runtime_kwargs={"execute_horizon": 5},
        task="pick the cube",
        recorder=recorder,
        intervention=TeleopIntervention(leader, robot.embodiment.action.names),
    )
    robot.connect()
    runner.intervention.connect()
    res = runner.run_episode(max_ticks=16)
    recorder.close()
    runner.intervention.disconnect()
    return res


def test_lerobot_itself_reads_the_intervention_flag(tmp_path):
    """LeRobot 0.6.1's ``LeRobotDataset`` loads the rollout with its ``intervention`` column."""
    from _lerobot_python import lerobot_python
    from vlastack.data.reader import DatasetReader

    py = lerobot_python()
    leader = FakeLeader(intervene=lambda n: 4 <= n < 10)
    res = _arm_rollout(tmp_path, leader)
    assert leader.calibrate_arg is True and not leader.is_connected
    assert res.human_ticks == 6
    script = Path(__file__).parent / "compat" / "check_lerobot_load.py"
    args = [py, str(script), str(tmp_path / "rollouts"), "--backends", "pyav"]
    proc = subprocess.run(
        [*args, "--values", "intervention,action.policy_valid"], capture_output=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    seen = json.loads(proc.stdout.decode().strip().splitlines()[-1])["backends"]["pyav"]
    assert seen["num_frames"] == res.ticks
    ours = DatasetReader(tmp_path / "rollouts").column("intervention").reshape(-1).astype(bool)
    values = [rec["value:intervention"] for rec in seen["frames"]]
    theirs = [bool(v[0] if isinstance(v, list) else v) for v in values]
    assert theirs == ours.tolist() and sum(theirs) == 6, values


def test_cli_teleop_takes_over(tmp_path, capsys):
    pytest.importorskip("websockets")
    import _robot_fakes
    from vlastack.cli.main import main
    from vlastack.serving.server import ServerThread

    (tmp_path / "limits.yaml").write_text("low: -90\nhigh: 90\nmax_delta: 5\n")
    args = [
        "robot",
        "--lerobot",
        "_robot_fakes:make_so100",
        "--teleop",
        "_robot_fakes:make_leader_always",
        "--limits",
        str(tmp_path / "limits.yaml"),
        "--control-hz",
        "100",
        "--max-ticks",
        "12",
        "--json",
    ]
    with ServerThread(ScriptedPolicy(dim=6), port=0) as srv:
        rc = main([*args, "--server", f"127.0.0.1:{srv.port}"])
    out = capsys.readouterr().out
    assert rc == 0, out
    total = json.loads(out.strip().splitlines()[-1])
    arm, leader = _robot_fakes.MADE[-1], _robot_fakes.LEADERS[-1]
    assert total["human_ticks"] == total["ticks"] == len(arm.sent) == 12
    sent = np.array([[a[k] for k in arm.action_features] for a in arm.sent])
    # the person commands 30 on every joint; the arm gets there 5 degrees a tick at most
    assert np.all(np.diff(np.vstack([np.zeros(6), sent]), axis=0) <= 5 + 1e-9)
    assert np.all(sent[-1] == 30.0)
    assert not leader.is_connected and leader.calibrate_arg is True
