"""Two rates in ``eval`` and ``robot`` and System 2 in the background (``HierarchicalRuntime``
with ``high_level_async``): a slow System 2 (an injected sleep) stalls the ticks it runs on in
synchronous mode and no tick in the background; one run in flight at most; the subtask switches
when it finishes; an exception surfaces as ``HighLevelError``; ``close`` leaves no thread; the
synchronous mode repeats exactly. Then the commands: ``eval --high-level-hz`` (records, summary,
manifest, a flat checkpoint refused), the robot runner at two rates on a virtual clock, and
``robot --server`` refusing the flag."""

from __future__ import annotations

import json
import threading
import time
import warnings

import numpy as np
import pytest
import torch

from _export_tiny import tiny_obs, tiny_stats, write_tiny_checkpoint
from _robot_fakes import PointRobot
from test_hierarchy import tiny_hierarchical_policy
from vlastack.cli.main import main
from vlastack.errors import ConfigError
from vlastack.serving.hierarchy import SUBTASK_KEY, HierarchicalRuntime, HighLevelError

SLOW_S = 0.25  # the injected System 2 cost; a System 1 call costs microseconds


@pytest.fixture(autouse=True)
def one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
    torch.set_num_threads(n)


class SlowHierarchical:
    """System 2 sleeps ``high_s`` (and raises on the calls listed in ``fail_on``); System 1 is
    instant. Records which tick's observation reached each level, and the most System 2 calls
    that ever ran at once."""

    supports_hierarchy = True
    metadata = {"action_horizon": 1}

    def __init__(self, high_s: float = SLOW_S, fail_on: tuple[int, ...] = ()) -> None:
        self.high_s = high_s
        self.fail_on = fail_on
        self.high_calls: list[int] = []
        self.low_calls: list[tuple[int, str]] = []
        self._lock = threading.Lock()
        self._running = 0
        self.max_running = 0

    def infer_high_level(self, obs, session=None):
        with self._lock:
            self._running += 1
            self.max_running = max(self.max_running, self._running)
            n = len(self.high_calls)
            self.high_calls.append(int(obs["tick"]))
        try:
            time.sleep(self.high_s)
            if n in self.fail_on:
                raise ValueError("the VLM ran out of memory")
            return {SUBTASK_KEY: f"subtask@{obs['tick']}"}
        finally:
            with self._lock:
                self._running -= 1

    def infer(self, obs, session=None):
        self.low_calls.append((int(obs["tick"]), obs[SUBTASK_KEY]))
        return {"actions": np.full((1, 2), float(obs["tick"]))}

    def reset(self) -> None:
        pass


def _system2_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("vlastack-system2")]


def _drive(rt: HierarchicalRuntime, ticks: range, period_s: float = 0.005) -> list[float]:
    """Step once per tick, ``period_s`` apart; the wall time (s) of every step."""
    took = []
    for tick in ticks:
        t0 = time.perf_counter()
        rt.step({"tick": tick})
        took.append(time.perf_counter() - t0)
        time.sleep(period_s)
    return took


class GatedHierarchical(SlowHierarchical):
    """System 2 calls after the first wait until the test opens ``gate`` (at most 10 s)."""

    def __init__(self) -> None:
        super().__init__(high_s=0.0)
        self.gate = threading.Event()

    def infer_high_level(self, obs, session=None):
        if self.high_calls:
            assert self.gate.wait(10.0), "the test never opened the gate"
        return super().infer_high_level(obs, session)


def test_a_slow_system2_stalls_its_ticks_in_sync_mode_and_none_in_the_background():
    sync_policy = SlowHierarchical()
    sync = HierarchicalRuntime(sync_policy, high_level_hz=1.0, control_hz=20.0, execute_horizon=1)
    took = _drive(sync, range(41))
    assert sync.high_level_ticks == [0, 20, 40]
    assert all(took[t] >= SLOW_S for t in (0, 20, 40))  # the tick waited for System 2

    policy = SlowHierarchical()
    rt = HierarchicalRuntime(
        policy, high_level_hz=1.0, control_hz=20.0, high_level_async=True, execute_horizon=1
    )
    took = _drive(rt, range(90))
    assert took[0] >= SLOW_S  # the first tick has no subtask to act on: it waits
    # the other ticks cost System 1's own time, far below System 2's (the median: a loaded
    # machine may delay a tick or two by itself; the gated test below is the strict one)
    assert np.median(took[1:]) < SLOW_S / 10, np.median(took[1:])
    assert len(rt.tick_ms) == 90
    # System 2 started at tick 20 acts from the first tick after it finished, not before
    assert rt.high_level_ticks[:2] == [0, 20]
    switch = next(t for t, s in policy.low_calls if s == "subtask@20")
    assert switch > 20
    assert all(s == "subtask@0" for t, s in policy.low_calls if t < switch)
    rt.close()
    assert not _system2_threads()


def test_system1_ticks_on_while_system2_is_stuck_and_switches_when_it_finishes():
    policy = GatedHierarchical()
    rt = HierarchicalRuntime(
        policy, high_level_hz=10.0, control_hz=20.0, high_level_async=True, execute_horizon=1
    )
    for tick in range(31):  # System 2 is due every 2 ticks; the run of tick 2 never finishes
        rt.step({"tick": tick})
    assert not policy.gate.is_set() and rt.subtask == "subtask@0"
    assert [s for _, s in policy.low_calls] == ["subtask@0"] * 31  # all 31 ticks acted
    assert rt.high_level_ticks == [0, 2] and rt.high_level_skipped == 14  # ticks 4..30
    assert policy.max_running == 1 and len(_system2_threads()) == 1
    policy.gate.set()
    deadline = time.monotonic() + 10.0
    tick = 31
    while rt.subtask != "subtask@2":
        assert time.monotonic() < deadline, "the finished System 2 never took effect"
        rt.step({"tick": tick})
        tick += 1
        time.sleep(0.001)
    assert policy.low_calls[-1] == (tick - 1, "subtask@2")  # the switch: the tick after it
    assert rt.summary()["high_level_skipped"] == rt.high_level_skipped
    rt.close()
    assert not _system2_threads()


def test_a_system2_exception_in_the_background_is_a_clear_error_not_a_hang():
    policy = SlowHierarchical(high_s=0.05, fail_on=(1,))  # the run started at tick 20 fails
    rt = HierarchicalRuntime(
        policy, high_level_hz=1.0, control_hz=20.0, high_level_async=True, execute_horizon=1
    )
    deadline = time.monotonic() + 10.0
    with pytest.raises(HighLevelError, match="tick 20: ValueError: the VLM ran out") as err:
        for tick in range(100_000):
            assert time.monotonic() < deadline, "the error never surfaced"
            rt.step({"tick": tick})
            time.sleep(0.005)
    assert isinstance(err.value.__cause__, ValueError)
    assert "System 2 (infer_high_level" in str(err.value)
    rt.close()
    assert not _system2_threads()

    first = HierarchicalRuntime(
        SlowHierarchical(high_s=0.0, fail_on=(0,)),
        high_level_hz=1.0,
        control_hz=20.0,
        high_level_async=True,
    )
    with pytest.raises(HighLevelError, match="tick 0"):  # the blocking first run raises too
        first.step({"tick": 0})
    first.close()


def test_reset_drops_a_run_in_flight():
    policy = SlowHierarchical(high_s=0.2)
    rt = HierarchicalRuntime(
        policy, high_level_hz=1.0, control_hz=20.0, high_level_async=True, execute_horizon=1
    )
    _drive(rt, range(21), period_s=0.0)  # the run of tick 20 is in flight
    rt.reset()
    rt.step({"tick": 1000})
    assert rt.subtask == "subtask@1000" and rt.high_level_ticks == [0]
    assert "subtask@20" not in [s for _, s in policy.low_calls]
    rt.close()


def _run_real(policy, async_: bool, ticks: int = 12):
    rt = HierarchicalRuntime(
        policy,
        high_level_hz=2.0,
        control_hz=10.0,
        high_level_async=async_,
        execute_horizon=2,
    )
    rt.reset()
    actions, subtasks = [], []
    for t in range(ticks):
        actions.append(rt.step(tiny_obs(t)))
        subtasks.append(rt.subtask)
    rt.close()
    return np.stack(actions), subtasks, list(rt.high_level_ticks)


def test_sync_mode_is_deterministic_and_the_real_policy_runs_in_the_background():
    a1, s1, h1 = _run_real(tiny_hierarchical_policy(seed=3), async_=False)
    a2, s2, h2 = _run_real(tiny_hierarchical_policy(seed=3), async_=False)
    np.testing.assert_array_equal(a1, a2)
    assert s1 == s2 and h1 == h2 == [0, 5, 10]
    # the real torch policy with System 2 in its own thread: finite actions, known subtasks
    policy = tiny_hierarchical_policy(seed=3)
    a3, s3, h3 = _run_real(policy, async_=True)
    assert np.isfinite(a3).all() and a3.shape == a1.shape
    assert set(s3) <= set(policy.model.hierarchy.vocab) and h3[0] == 0
    assert not _system2_threads()


# ---- the commands ---------------------------------------------------------------------------

TINY_HIER = dict(head="flow_matching", hierarchy=True, trunk_layers=1)


def _fake_env_ckpt(tmp_path, hierarchy: bool = True):
    kw = dict(TINY_HIER, cameras=["top"], action_dim=2, gripper_index=None)
    if not hierarchy:
        kw.pop("hierarchy")
    stats = {
        "observation.state": tiny_stats(4)["observation.state"],
        "action": tiny_stats(2)["action"],
    }
    name = "hier" if hierarchy else "flat"
    return write_tiny_checkpoint(tmp_path / name, kw.pop("head"), stats=stats, **kw)


EVAL = ["--episodes-per-task", "1", "--image-size", "16", "--workers", "0", "--no-progress"]


def _eval(ck, out, *extra):
    code = main(["eval", str(ck), "--env", "fake/reach-easy", "--out", str(out), *EVAL, *extra])
    records = [json.loads(x) for x in (out / "episodes.jsonl").read_text().splitlines()]
    return code, records, json.loads((out / "summary.json").read_text())


def test_eval_at_two_rates_records_the_rates_and_system2_runs(tmp_path, capsys):
    ck = _fake_env_ckpt(tmp_path)
    code, recs, summary = _eval(ck, tmp_path / "a", "--high-level-hz", "2")
    assert code == 0 and recs[0]["status"] in ("success", "failure")
    hl = recs[0]["extra"]["high_level"]
    steps = recs[0]["steps"]
    # the fake env runs at 10 Hz: System 2 every 5 env steps, from the first
    assert hl["high_level_hz"] == 2.0 and hl["control_hz"] == 10.0
    assert hl["high_level_async"] is False
    assert hl["high_level_runs"] == -(-steps // 5) and len(hl["tick_ms"]) == steps
    two = summary["two_rate"]
    assert two["high_level_runs"] == hl["high_level_runs"] and two["ticks"] == steps
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["protocol"]["high_level_hz"] == 2.0
    assert "System 2 ran" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "a"), "--out", str(tmp_path / "a.html")]) == 0
    page = (tmp_path / "a.html").read_text()
    assert "Two rates (System 2 / System 1)" in page and "2 / 10" in page

    # synchronous two rates repeat exactly: the manifest's re-run (its rates included)
    rerun = ["eval", "--manifest", str(tmp_path / "a" / "manifest.json"), "--out"]
    assert main([*rerun, str(tmp_path / "b"), "--workers", "0", "--no-progress"]) == 0
    again = [json.loads(x) for x in (tmp_path / "b" / "episodes.jsonl").read_text().splitlines()]
    assert again[0]["extra"]["high_level"]["high_level_hz"] == 2.0
    for key in ("status", "steps", "mean_squared_jerk", "chunk_jump", "num_chunks"):
        assert again[0][key] == recs[0][key], key
    assert again[0]["extra"]["high_level"]["high_level_runs"] == hl["high_level_runs"]

    code, bg, summary = _eval(ck, tmp_path / "c", "--high-level-hz", "2", "--high-level-async")
    assert code == 0 and bg[0]["status"] != "error"
    assert bg[0]["extra"]["high_level"]["high_level_async"] is True
    assert summary["two_rate"]["high_level_runs"] >= 1


def test_eval_refuses_two_rates_for_a_flat_checkpoint_and_bad_flags(tmp_path, capsys):
    flat = _fake_env_ckpt(tmp_path, hierarchy=False)
    out = tmp_path / "r"
    args = ["eval", str(flat), "--env", "fake/reach-easy", "--out", str(out), *EVAL]
    assert main([*args, "--high-level-hz", "1"]) != 0
    err = capsys.readouterr().err
    assert "hierarchy=True" in err and "--high-level-hz" in err
    assert main([*args, "--high-level-async"]) != 0
    assert "--high-level-async goes with --high-level-hz" in capsys.readouterr().err
    hier = _fake_env_ckpt(tmp_path)
    args = ["eval", str(hier), "--env", "fake/reach-easy", "--out", str(out), *EVAL]
    assert main([*args, "--high-level-hz", "20"]) != 0
    assert "faster than fake/reach-easy's control rate (10 Hz" in capsys.readouterr().err


class VirtualClock:
    """Time moves only when the runner sleeps: every tick is exactly one period (1/16 s in the
    tests: a binary fraction, so the runner's "fell behind" check sees no rounding)."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, dt: float) -> None:
        self.t += max(0.0, dt)


class FastHierarchical(SlowHierarchical):
    metadata = {"action_horizon": 4}

    def __init__(self) -> None:
        super().__init__(high_s=0.0)
        self.tick = 0

    def infer_high_level(self, obs, session=None):
        return super().infer_high_level({**obs, "tick": self.tick})

    def infer(self, obs, session=None):
        self.tick += 1
        return {"actions": np.zeros((4, 3))}


def _robot_runner(policy, high_level, clock):
    from vlastack.robot.runner import RobotRunner
    from vlastack.robot.safety import SafetyFilter, limits_for

    robot = PointRobot(control_hz=16.0)
    limits = limits_for(robot.embodiment.action.names, 16.0, robot=robot.embodiment)
    return RobotRunner(
        robot,
        policy,
        SafetyFilter(limits),
        runtime_kwargs={"execute_horizon": 4},
        clock=clock,
        sleep=clock.sleep,
        high_level=high_level,
    )


@pytest.mark.parametrize("async_", [False, True])
def test_robot_runner_at_two_rates_on_its_clock(async_):
    clock = VirtualClock()
    policy = FastHierarchical()
    runner = _robot_runner(policy, {"high_level_hz": 2.0, "high_level_async": async_}, clock)
    res = runner.run_episode(max_ticks=40)
    runner.close()
    hl = res.summary()["high_level"]
    # 40 ticks of 1/16 s: System 2 every 8 ticks of the clock, at ticks 0, 8, 16, 24, 32
    assert hl["high_level_runs"] == len(policy.high_calls) == 5
    assert hl["high_level_hz"] == 2.0 and hl["control_hz"] == 16.0
    assert hl["high_level_async"] is async_ and hl["ticks"] == res.ticks == 40
    assert res.chunks == 10 and res.violations == 0
    assert not _system2_threads()


def test_robot_runner_and_cli_refuse_two_rates_where_they_cannot_run(capsys):
    class Flat(FastHierarchical):
        supports_hierarchy = False

    with pytest.raises(ConfigError, match="hierarchy=True"):
        _robot_runner(Flat(), {"high_level_hz": 1.0}, VirtualClock())
    argv = ["robot", "--server", "127.0.0.1:9", "--env", "metaworld/reach-v3"]
    assert main([*argv, "--high-level-hz", "1"]) != 0
    assert "vlastack serve CHECKPOINT --high-level-hz" in capsys.readouterr().err
