"""Fakes for the robot-runner tests: a point robot, a scripted chunk policy, a jumping clock,
and a fake arm with LeRobot 0.6.1's ``Robot`` API (``src/lerobot/robots/robot.py``)."""

from __future__ import annotations

import enum
import threading
import time

import numpy as np

from vlastack.embodiment import CameraSpec, EmbodimentSpec, VectorSpec
from vlastack.robot.interface import RobotBase

LOW, HIGH, MAX_DELTA = -1.0, 1.0, 0.1


class PointRobot(RobotBase):
    """``dim`` absolute joints in [-1, 1] that reach each command at once; records every command.
    ``on_command(n)`` is called after the n-th command (fault injection hooks)."""

    def __init__(self, dim: int = 3, control_hz: float = 100.0, camera: bool = True):
        self.dim = dim
        cams = [CameraSpec("top", 8, 8)] if camera else []
        self.embodiment = EmbodimentSpec(
            robot_type="point",
            cameras=cams,
            state=VectorSpec([f"j{i}" for i in range(dim)], units=["rad"] * dim),
            action=VectorSpec(
                [f"j{i}" for i in range(dim)],
                units=["rad"] * dim,
                low=[LOW] * dim,
                high=[HIGH] * dim,
            ),
            control_hz=control_hz,
        )
        self.pos = np.zeros(dim)
        self.commands: list[np.ndarray] = []
        self.on_command = None

    def start_episode(self, seed=None):
        self.pos = np.zeros(self.dim)

    def get_observation(self):
        obs = {"observation.state": self.pos.astype(np.float32), "task": "reach"}
        if self.embodiment.cameras:
            obs["observation.images.top"] = np.full((8, 8, 3), len(self.commands) % 255, np.uint8)
        return obs

    def send_action(self, action):
        a = np.array(action, dtype=np.float64)
        self.commands.append(a)
        self.pos = a
        if self.on_command is not None:
            self.on_command(len(self.commands))

    def hold_action(self):
        return self.pos.copy()


def smooth_chunk(n: int, horizon: int, dim: int) -> np.ndarray:
    """Chunk n of a slow sine in [-0.8, 0.8] (changes < 0.05 per tick: never rate-limited)."""
    t = n * horizon + np.arange(horizon)
    return (
        np.stack([0.8 * np.sin(0.05 * t + k) for k in range(dim)], axis=1)
        * np.minimum(1.0, t / 20)[:, None]
    )


class ScriptedPolicy:
    """``infer`` returns chunk n = ``smooth_chunk(n)`` unless ``faults[n]`` says otherwise:
    "nan" / "inf" (every action non-finite), "range" (every value 3.0), ("slow", s) (sleep s,
    then every value ``SLOW_VALUE``), "raise" (RuntimeError)."""

    SLOW_VALUE = 0.777

    def __init__(self, dim: int = 3, horizon: int = 5, faults: dict | None = None):
        self.dim, self.horizon = dim, horizon
        self.faults = dict(faults or {})
        self.calls = 0
        self.returned: list[np.ndarray] = []
        self.lock = threading.Lock()
        self.metadata = {"action_horizon": horizon, "execute_horizon": horizon}

    def reset(self):
        pass

    def infer(self, obs):
        with self.lock:
            n = self.calls
            self.calls += 1
        fault = self.faults.get(n)
        chunk = smooth_chunk(n, self.horizon, self.dim)
        if fault == "nan":
            chunk[:] = np.nan
        elif fault == "inf":
            chunk[:] = np.inf
        elif fault == "range":
            chunk[:] = 3.0
        elif isinstance(fault, tuple) and fault[0] == "slow":
            time.sleep(fault[1])
            chunk[:] = self.SLOW_VALUE
        elif fault == "raise":
            raise RuntimeError("scripted policy failure")
        self.returned.append(chunk)
        return {"actions": chunk.astype(np.float32)}


class JumpClock:
    """``time.monotonic`` plus an offset that tests move (``jump(seconds)``)."""

    def __init__(self):
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset

    def jump(self, seconds: float) -> None:
        self.offset += seconds


def outside_limits(commands, low=LOW, high=HIGH, max_delta=MAX_DELTA, start=None) -> int:
    """Commands that are non-finite, outside [low, high] or move more than max_delta from the
    previous one (from ``start`` for the first): computed here, independently of the library."""
    bad = 0
    prev = start
    for c in commands:
        c = np.asarray(c, dtype=np.float64)
        if (
            not np.all(np.isfinite(c))
            or np.any(c < low - 1e-9)
            or np.any(c > high + 1e-9)
            or prev is not None
            and np.any(np.abs(c - prev) > max_delta + 1e-9)
        ):
            bad += 1
        prev = c
    return bad


class FakeSO100:
    """The members of LeRobot 0.6.1's ``Robot`` that vlastack uses, shaped like its SO-100
    follower (``<motor>.pos`` floats, camera (H, W, 3)); no hardware, no lerobot import."""

    name = "so100_follower"
    MOTORS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]

    def __init__(self):
        self.robot_type = self.name
        self._connected = False
        self.present = {m: 0.0 for m in self.MOTORS}
        self.sent: list[dict] = []
        self.calibrate_arg = None

    @property
    def observation_features(self) -> dict:
        return {**{f"{m}.pos": float for m in self.MOTORS}, "front": (24, 32, 3)}

    @property
    def action_features(self) -> dict:
        return {f"{m}.pos": float for m in self.MOTORS}

    @property
    def is_connected(self) -> bool:
        return self._connected

    def connect(self, calibrate: bool = True) -> None:
        self.calibrate_arg = calibrate
        self._connected = True

    def get_observation(self) -> dict:
        assert self._connected, "get_observation on a disconnected robot"
        obs = {f"{m}.pos": v for m, v in self.present.items()}
        obs["front"] = np.full((24, 32, 3), 7 * len(self.sent) % 255, np.uint8)
        return obs

    def send_action(self, action: dict) -> dict:
        assert self._connected, "send_action on a disconnected robot"
        assert set(action) == set(self.action_features), action
        self.sent.append(dict(action))
        for k, v in action.items():
            self.present[k.removesuffix(".pos")] = float(v)
        return action

    def disconnect(self) -> None:
        self._connected = False


MADE: list[FakeSO100] = []


def make_so100() -> FakeSO100:
    """``--lerobot _robot_fakes:make_so100``: a fake arm the test can inspect afterwards."""
    arm = FakeSO100()
    MADE.append(arm)
    return arm


class GuidedScriptedPolicy(ScriptedPolicy):
    """``ScriptedPolicy`` with RTC's ``infer_guided`` (guidance ignored: same chunks)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.guided_calls = 0

    def infer_guided(self, obs, prev_actions, inference_delay):
        self.guided_calls += 1
        return self.infer(obs)


class FakeSO100TwoCams(FakeSO100):
    """The SO-100 fake with the cameras of the LeRobot ACT fixture (top, wrist: 48x64), its
    joints starting at the fixture's state mean (degrees)."""

    START = [2.1, -95.3, 88.7, 65.2, -1.4, 12.8]

    def __init__(self):
        super().__init__()
        self.present = dict(zip(self.MOTORS, self.START))

    @property
    def observation_features(self) -> dict:
        motors = {f"{m}.pos": float for m in self.MOTORS}
        return {**motors, "top": (48, 64, 3), "wrist": (48, 64, 3)}

    def get_observation(self) -> dict:
        obs = super().get_observation()
        del obs["front"]
        obs["top"] = np.full((48, 64, 3), 100, np.uint8)
        obs["wrist"] = np.full((48, 64, 3), 60, np.uint8)
        return obs


def make_so100_two_cams() -> FakeSO100TwoCams:
    arm = FakeSO100TwoCams()
    MADE.append(arm)
    return arm


class IsIntervention(enum.Enum):
    """Shaped like LeRobot 0.6.1's ``TeleopEvents`` (``teleoperators/utils.py``)."""

    IS_INTERVENTION = "is_intervention"
    SUCCESS = "success"


class FakeLeader:
    """The members of LeRobot 0.6.1's ``Teleoperator`` (``teleoperators/teleoperator.py``)
    that vlastack uses, shaped like a leader arm for ``FakeSO100`` (or ``PointRobot``: pass its
    action names), plus the ``get_teleop_events()`` of LeRobot's gamepad/keyboard teleops.
    ``value`` is what the person commands; ``intervene(n)`` says whether they intervene at the
    n-th events query (0-based; one query per control tick)."""

    def __init__(self, names=None, value=30.0, intervene=lambda n: False):
        self.names = list(names or [f"{m}.pos" for m in FakeSO100.MOTORS])
        self.value = value
        self.intervene = intervene
        self.queries = 0
        self.actions_read = 0
        self._connected = False
        self.calibrate_arg = None

    @property
    def action_features(self) -> dict:
        return {n: float for n in self.names}

    @property
    def feedback_features(self) -> dict:
        return {}

    @property
    def is_connected(self) -> bool:
        return self._connected

    def connect(self, calibrate: bool = True) -> None:
        self.calibrate_arg = calibrate
        self._connected = True

    def get_action(self) -> dict:
        self.actions_read += 1
        v = self.value(self.actions_read) if callable(self.value) else self.value
        return {n: float(v) for n in self.names}

    def get_teleop_events(self) -> dict:
        on = bool(self.intervene(self.queries))
        self.queries += 1
        return {IsIntervention.IS_INTERVENTION: on, IsIntervention.SUCCESS: False}

    def send_feedback(self, feedback: dict) -> None:
        pass

    def disconnect(self) -> None:
        self._connected = False


LEADERS: list[FakeLeader] = []


def make_leader_always() -> FakeLeader:
    """``--teleop _robot_fakes:make_leader_always``: a leader for ``FakeSO100`` whose person
    intervenes on every tick, commanding 30 degrees on every joint."""
    leader = FakeLeader(intervene=lambda n: True)
    LEADERS.append(leader)
    return leader


def make_leader_plain() -> FakeLeader:
    """``--teleop _robot_fakes:make_leader_plain``: a leader arm that cannot say when a person
    intervenes (no ``get_teleop_events``, like LeRobot's SO-100 leader): a switch must."""
    leader = FakeLeader()
    leader.get_teleop_events = None  # type: ignore[assignment,method-assign]
    LEADERS.append(leader)
    return leader
