"""Intervention switches from the standard library (issue 27): a key in the terminal, tested on a
pseudo-terminal (pty), and a foot pedal, tested with a FIFO carrying Linux ``struct input_event``
records. They toggle the runner's intervention state (ticks a person drives), and the terminal's
settings come back exactly as they were after a normal exit, an exception, Ctrl-C and SIGTERM."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

if sys.platform == "win32":  # pragma: no cover
    pytest.skip("ptys, termios and evdev are POSIX/Linux only", allow_module_level=True)

import fcntl
import pty
import termios

from _robot_fakes import FakeLeader, PointRobot, ScriptedPolicy
from vlastack.errors import ConfigError
from vlastack.robot.intervention import TeleopIntervention
from vlastack.robot.runner import RobotRunner
from vlastack.robot.safety import SafetyFilter, limits_for
from vlastack.robot.switches import (
    EV_KEY,
    INPUT_EVENT,
    EvdevPedalSwitch,
    TerminalKeySwitch,
    parse_key,
)

SRC = str(Path(__file__).resolve().parents[1] / "src")


def wait_for(pred, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.002)
    return pred()


def cbreak(fd) -> bool:
    return not termios.tcgetattr(fd)[3] & (termios.ICANON | termios.ECHO)


@pytest.fixture
def tty_pair():
    master, slave = pty.openpty()
    yield master, slave
    for fd in (master, slave):
        with contextlib.suppress(OSError):
            os.close(fd)


def test_a_key_toggles_and_the_terminal_comes_back(tty_pair):
    master, slave = tty_pair
    before = termios.tcgetattr(slave)
    assert not cbreak(slave)
    switch = TerminalKeySwitch("SPACE", fd=slave, poll_s=0.01)
    assert switch.start() is True and switch.reason is None
    assert cbreak(slave)  # keys one by one, unechoed ...
    assert termios.tcgetattr(slave)[3] & termios.ISIG  # ... and Ctrl-C still interrupts
    os.write(master, b" ")
    assert wait_for(lambda: switch() is True)
    os.write(master, b"xq\n")  # other keys do nothing
    time.sleep(0.05)
    assert switch() is True and switch.presses == 1
    os.write(master, b" ")
    assert wait_for(lambda: switch() is False)
    switch.close()
    assert termios.tcgetattr(slave) == before
    switch.close()  # idempotent
    assert termios.tcgetattr(slave) == before


def test_the_terminal_comes_back_after_an_exception(tty_pair):
    master, slave = tty_pair
    before = termios.tcgetattr(slave)
    switch = TerminalKeySwitch("i", fd=slave, poll_s=0.01)
    with pytest.raises(RuntimeError, match="boom"), switch:
        os.write(master, b"I")  # case matters: 'I' is not 'i'
        os.write(master, b"i")
        assert wait_for(lambda: switch() is True)
        assert switch.presses == 1
        raise RuntimeError("boom")
    assert termios.tcgetattr(slave) == before


CHILD = """
import sys, time
from vlastack.lifeline import raise_on_sigterm
from vlastack.robot.switches import TerminalKeySwitch
raise_on_sigterm()  # as `vlastack` does
with TerminalKeySwitch("SPACE", poll_s=0.01) as switch:
    print("ready", switch.reason, flush=True)
    while True:
        time.sleep(0.01)
"""


def _own_the_terminal_with_default_sigint() -> None:
    # A runner that starts the tests in the background (``cmd &`` in a script) hands every child
    # SIGINT ignored, and Python then keeps ignoring it: the typed Ctrl-C would never arrive.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_the_terminal_comes_back_after_ctrl_c_and_sigterm(tty_pair, how):
    """A child whose controlling terminal is the pty: Ctrl-C typed into the terminal (the line
    discipline sends SIGINT) or SIGTERM ends it, and the pty's settings are the ones before."""
    master, slave = tty_pair
    before = termios.tcgetattr(slave)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD],
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
        preexec_fn=_own_the_terminal_with_default_sigint,
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready, "the child did not start"
        assert proc.stdout.readline().decode().split() == ["ready", "None"]
        assert cbreak(slave)
        if how == "ctrl-c":
            os.write(master, b"\x03")
        else:
            proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read().decode()
    assert proc.returncode != 0
    assert (
        ("KeyboardInterrupt" in err or proc.returncode == -signal.SIGINT)
        if how == "ctrl-c"
        else ("SIGTERM" in err)
    ), err
    assert termios.tcgetattr(slave) == before


def test_off_when_stdin_is_not_a_terminal():
    r, w = os.pipe()
    try:
        switch = TerminalKeySwitch("SPACE", fd=r)
        assert switch.start() is False
        assert "not a terminal" in switch.reason
        os.write(w, b"   ")
        time.sleep(0.02)
        assert switch() is False
        switch.close()
    finally:
        os.close(r)
        os.close(w)


def test_key_names():
    assert parse_key("space") == (b" ",) and parse_key("ENTER") == (b"\n", b"\r")
    assert parse_key("k") == (b"k",)
    for bad in ("", "ab", "F1", " "):
        with pytest.raises(ConfigError, match="SPACE, ENTER, TAB or one printable"):
            parse_key(bad, "--intervene-key")


def _runner(switch):
    robot = PointRobot()
    limits = limits_for(
        robot.embodiment.action.names, 100.0, robot=robot.embodiment, overrides={"max_delta": 0.1}
    )
    leader = FakeLeader(names=["j0", "j1", "j2"], value=0.5)
    source = TeleopIntervention(leader, robot.embodiment.action.names, intervening=switch)
    runner = RobotRunner(
        robot,
        ScriptedPolicy(),
        SafetyFilter(limits),
        runtime_kwargs={"execute_horizon": 5},
        intervention=source,
    )
    return robot, runner, leader


def test_the_key_switch_drives_the_runner(tty_pair):
    """SPACE after the 5th command, SPACE again after the 9th: the person drives ticks 6-9."""
    master, slave = tty_pair
    with TerminalKeySwitch("SPACE", fd=slave, poll_s=0.01) as switch:
        robot, runner, leader = _runner(switch)

        def press(n):
            if n in (5, 9):
                os.write(master, b" ")
                assert wait_for(lambda: switch() is (n == 5))

        robot.on_command = press
        res = runner.run_episode(max_ticks=20)
    assert res.human_ticks == 4 and leader.actions_read == 4
    assert res.violations == 0


def event(code, value, etype=EV_KEY):
    return INPUT_EVENT.pack(1, 2, etype, code, value)


SYN = INPUT_EVENT.pack(1, 2, 0, 0, 0)


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "event7"
    os.mkfifo(path)
    return path


def _writer(path):
    return os.open(path, os.O_WRONLY)  # the switch has it open for reading: no wait


def test_pedal_hold_toggle_code_and_partial_records(fifo):
    pedal = EvdevPedalSwitch(fifo, poll_s=0.01)
    assert pedal.start() is True
    w = _writer(fifo)
    try:
        down = event(48, 1) + SYN
        os.write(w, down[:10])  # a record split across reads
        time.sleep(0.03)
        assert pedal() is False
        os.write(w, down[10:])
        assert wait_for(lambda: pedal() is True)
        os.write(w, event(48, 2) + SYN)  # autorepeat while held: still down
        os.write(w, event(4, 30, etype=0x04) + SYN)  # EV_MSC scan code: ignored
        time.sleep(0.03)
        assert pedal() is True
        os.write(w, event(48, 0) + SYN)
        assert wait_for(lambda: pedal() is False)
    finally:
        pedal.close()
        os.close(w)

    toggle = EvdevPedalSwitch(fifo, code=30, mode="toggle", poll_s=0.01)
    toggle.start()
    w = _writer(fifo)
    try:
        os.write(w, event(48, 1) + event(48, 0))  # another key: ignored
        time.sleep(0.03)
        assert toggle() is False and toggle.presses == 0
        os.write(w, event(30, 1) + event(30, 0))
        assert wait_for(lambda: toggle() is True)
        os.write(w, event(30, 1))
        assert wait_for(lambda: toggle() is False)
        assert toggle.presses == 2
    finally:
        toggle.close()
        os.close(w)


def test_pedal_lost_turns_off_and_bad_paths(fifo, tmp_path):
    pedal = EvdevPedalSwitch(fifo, poll_s=0.01)
    pedal.start()
    w = _writer(fifo)
    os.write(w, event(48, 1))
    assert wait_for(lambda: pedal() is True)
    os.close(w)  # unplugged: end of file
    assert wait_for(lambda: pedal.lost is not None)
    assert pedal() is False and "end of file" in pedal.lost
    pedal.close()
    with pytest.raises(ConfigError, match=r"event99: no such device; list the input devices"):
        EvdevPedalSwitch(tmp_path / "event99", flag="--intervene-pedal").start()
    with pytest.raises(ConfigError, match="is a folder"):
        EvdevPedalSwitch(tmp_path).start()
    with pytest.raises(ConfigError, match="mode 'sticky'"):
        EvdevPedalSwitch(fifo, mode="sticky")


def test_the_pedal_drives_the_runner(fifo):
    pedal = EvdevPedalSwitch(fifo, poll_s=0.01)
    with pedal:
        w = _writer(fifo)
        robot, runner, leader = _runner(pedal)

        def step(n):
            if n in (5, 9):
                os.write(w, event(48, int(n == 5)) + SYN)  # down after the 5th, up after the 9th
                assert wait_for(lambda: pedal() is (n == 5))

        robot.on_command = step
        try:
            res = runner.run_episode(max_ticks=20)
        finally:
            os.close(w)
    assert res.human_ticks == 4 and leader.actions_read == 4
    assert res.violations == 0


CLI_ARGS = [
    "robot",
    "--lerobot",
    "_robot_fakes:make_so100",
    "--teleop",
    "_robot_fakes:make_leader_plain",
    "--control-hz",
    "50",
    "--max-ticks",
    "40",
    "--json",
]


def _cli(tmp_path, extra):
    from vlastack.cli.main import main
    from vlastack.serving.server import ServerThread

    (tmp_path / "limits.yaml").write_text("low: -90\nhigh: 90\nmax_delta: 5\n")
    args = [*CLI_ARGS, "--limits", str(tmp_path / "limits.yaml"), *extra]
    with ServerThread(ScriptedPolicy(dim=6), port=0) as srv:
        return main([*args, "--server", f"127.0.0.1:{srv.port}"])


def test_cli_key_switch_on_a_pty_and_off_without_one(tmp_path, capsys, monkeypatch, tty_pair):
    pytest.importorskip("websockets")
    import _robot_fakes

    master, slave = tty_pair
    before = termios.tcgetattr(slave)
    # pytest's stdin is not a terminal: the switch is off, said so, and the policy drives
    rc = _cli(tmp_path, ["--intervene-key", "SPACE"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "--intervene-key SPACE is off: stdin is not a terminal" in out
    assert json.loads(out.strip().splitlines()[-1])["human_ticks"] == 0

    # stdin on a pty: SPACE, typed once the CLI has the terminal in cbreak mode, hands over
    monkeypatch.setattr(sys, "stdin", os.fdopen(os.dup(slave), "r"))

    def type_space():
        if wait_for(lambda: cbreak(slave), timeout=60):
            os.write(master, b" ")

    typist = threading.Thread(target=type_space, daemon=True)
    typist.start()
    rc = _cli(tmp_path, ["--intervene-key", "SPACE"])
    typist.join(timeout=5)
    out = capsys.readouterr().out
    assert rc == 0, out
    total = json.loads(out.strip().splitlines()[-1])
    assert 1 <= total["human_ticks"] <= 40, total
    arm = _robot_fakes.MADE[-1]
    sent = np.array([[a[k] for k in arm.action_features] for a in arm.sent])
    assert np.all(np.abs(np.diff(sent, axis=0)) <= 5 + 1e-9)  # the person's 30 rate-limited
    assert sent[-1].max() > 1.0  # moving toward the person's 30 degrees
    assert termios.tcgetattr(slave) == before  # the CLI put the terminal back


def test_cli_pedal_and_flag_errors(tmp_path, capsys, fifo):
    pytest.importorskip("websockets")
    from vlastack.cli.main import main

    def press():  # blocks until the CLI opens the pedal, then holds it down
        fd = os.open(fifo, os.O_WRONLY)
        os.write(fd, event(48, 1) + SYN)
        time.sleep(5)
        os.close(fd)

    threading.Thread(target=press, daemon=True).start()
    rc = _cli(tmp_path, ["--intervene-pedal", str(fifo)])
    out = capsys.readouterr().out
    assert rc == 0, out
    total = json.loads(out.strip().splitlines()[-1])
    assert total["human_ticks"] >= 20, total  # held from (nearly) the first tick

    base = ["robot", "--env", "pusht", "--server", "127.0.0.1:1"]  # refused before connecting
    for extra, said in [
        (["--intervene-key", "SPACE"], "add --teleop"),
        (["--teleop", "x:y", "--intervene-key", "F1"], "--intervene-key 'F1': expected SPACE"),
        (["--pedal-mode", "toggle"], "need --intervene-pedal"),
    ]:
        assert main([*base, *extra]) == 2
        assert said in capsys.readouterr().err
