"""Robots the runner can drive: vlastack's simulators and anything with LeRobot's ``Robot`` API.

``GymRobot`` wraps a ``VlaEnv`` (``vlastack.envs.make_env``: Meta-World, PushT, plugins...): one
control tick is one ``env.step``. ``LeRobotRobot`` wraps an object with the methods and
properties of LeRobot's ``Robot`` (0.6.1, ``src/lerobot/robots/robot.py``): ``connect``,
``disconnect``, ``is_connected``, ``get_observation``, ``send_action``, ``observation_features``
and ``action_features``; LeRobot itself is never imported, so SO-100/101, Koch or ALOHA arms built
by LeRobot (or any object shaped like them) plug in without vlastack depending on it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vlastack.embodiment import CameraSpec, EmbodimentSpec, VectorSpec
from vlastack.errors import ConfigError
from vlastack.robot.interface import RobotBase, RobotError


class GymRobot(RobotBase):
    """A vlastack simulator as a robot. Its hold: absolute targets whose state has the same
    size and units hold the measured state (PushT: the agent's position); delta or velocity
    actions hold zero motion with the gripper (``gripper_index``) kept at its last command, so a
    grasped object is not dropped; otherwise None (the safety layer's generic hold)."""

    def __init__(self, env: Any) -> None:
        spec = getattr(env, "embodiment", None)
        if not isinstance(spec, EmbodimentSpec):
            raise ConfigError(
                f"{type(env).__name__} has no EmbodimentSpec (.embodiment); the runner drives "
                "vlastack environments (vlastack.envs.make_env) or robots with one"
            )
        self.env = env
        self.embodiment = spec
        self._obs: dict[str, Any] | None = None
        self._last: np.ndarray | None = None
        self._done = False
        self._success = False

    def start_episode(self, seed: int | None = None) -> None:
        obs, _info = self.env.reset(seed=seed)
        self._obs = dict(obs)
        self._last = None
        self._done = False
        self._success = False

    def get_observation(self) -> dict[str, Any]:
        if self._obs is None:
            raise RobotError("GymRobot: call start_episode() before get_observation()")
        obs = dict(self._obs)
        obs.setdefault("task", getattr(self.env, "instruction", ""))
        return obs

    def send_action(self, action: np.ndarray) -> None:
        if self._done:
            raise RobotError("GymRobot: the episode is over; call start_episode()")
        a = np.asarray(action, dtype=np.float64)
        obs, _r, terminated, truncated, info = self.env.step(a.astype(np.float32))
        self._obs = dict(obs)
        self._last = a
        self._success = self._success or bool(info.get("success"))
        self._done = self._success or bool(terminated) or bool(truncated)

    def hold_action(self) -> np.ndarray | None:
        act, state = self.embodiment.action, self.embodiment.state
        if act.kind == "absolute":
            same = state.dim == act.dim and state.units is not None and state.units == act.units
            if same and self._obs is not None and "observation.state" in self._obs:
                return np.asarray(self._obs["observation.state"], dtype=np.float64).copy()
            return None
        hold = np.zeros(act.dim)
        if act.gripper_index is not None and self._last is not None:
            hold[act.gripper_index] = self._last[act.gripper_index]
        return hold

    @property
    def episode_done(self) -> bool:
        return self._done

    @property
    def success(self) -> bool | None:
        return self._success

    def disconnect(self) -> None:
        self.env.close()


LEROBOT_API = (
    "connect",
    "disconnect",
    "get_observation",
    "send_action",
    "observation_features",
    "action_features",
    "is_connected",
)


class LeRobotRobot(RobotBase):
    """An object with LeRobot's ``Robot`` API as a vlastack robot.

    Observation features whose value is a type (``float``: a motor reading such as
    ``"shoulder_pan.pos"``) become ``observation.state`` in their declared order; tuples
    (H, W, C) become ``observation.images.<name>``. Actions are the ``action_features`` in their
    declared order, absolute. Hold: the measured value of every action key (LeRobot's position
    arms read back ``<motor>.pos`` for each ``<motor>.pos`` action), else None.
    """

    def __init__(
        self,
        robot: Any,
        *,
        control_hz: float,
        robot_type: str | None = None,
        calibrate: bool = True,
    ) -> None:
        missing = [m for m in LEROBOT_API if not hasattr(robot, m)]
        if missing:
            raise ConfigError(
                f"{type(robot).__name__} lacks {missing} of LeRobot's Robot API "
                f"({', '.join(LEROBOT_API)}); pass a lerobot.robots.Robot (e.g. an SO-100 "
                "follower) or an object with those members"
            )
        self.robot = robot
        self.calibrate = calibrate
        obs_ft = dict(robot.observation_features)
        self.state_keys = [k for k, v in obs_ft.items() if isinstance(v, type)]
        self.camera_keys = [k for k, v in obs_ft.items() if isinstance(v, tuple) and len(v) == 3]
        self.action_keys = list(robot.action_features)
        if not self.action_keys:
            raise ConfigError(f"{type(robot).__name__}.action_features is empty")
        cameras = [
            CameraSpec(
                name=k,
                height=int(obs_ft[k][0]),
                width=int(obs_ft[k][1]),
                channels=int(obs_ft[k][2]),
            )
            for k in self.camera_keys
        ]
        name = robot_type or getattr(robot, "robot_type", None) or getattr(robot, "name", None)
        self.embodiment = EmbodimentSpec(
            robot_type=str(name or type(robot).__name__),
            cameras=cameras,
            state=VectorSpec(names=self.state_keys or ["none"]),
            action=VectorSpec(names=self.action_keys, kind="absolute"),
            control_hz=float(control_hz),
            description=f"LeRobot-API robot {type(robot).__name__}",
        )
        self._raw: dict[str, Any] | None = None

    def connect(self) -> None:
        if not self.robot.is_connected:
            self.robot.connect(calibrate=self.calibrate)

    def disconnect(self) -> None:
        if self.robot.is_connected:
            self.robot.disconnect()

    def get_observation(self) -> dict[str, Any]:
        raw = self.robot.get_observation()
        missing = [k for k in (*self.state_keys, *self.camera_keys) if k not in raw]
        if missing:
            raise RobotError(
                f"{type(self.robot).__name__}.get_observation() lacks {missing}, which its "
                "observation_features declare"
            )
        self._raw = raw
        obs: dict[str, Any] = {}
        if self.state_keys:
            obs["observation.state"] = np.array([raw[k] for k in self.state_keys], np.float32)
        for k in self.camera_keys:
            obs[f"observation.images.{k}"] = np.asarray(raw[k], dtype=np.uint8)
        return obs

    def send_action(self, action: np.ndarray) -> None:
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (len(self.action_keys),):
            raise RobotError(
                f"action has {a.size} values; {type(self.robot).__name__} takes "
                f"{len(self.action_keys)}: {self.action_keys}"
            )
        self.robot.send_action({k: float(v) for k, v in zip(self.action_keys, a)})

    def hold_action(self) -> np.ndarray | None:
        if self._raw is None or any(k not in self._raw for k in self.action_keys):
            return None
        return np.array([float(self._raw[k]) for k in self.action_keys])


ALOHA_JOINTS = [
    "waist",
    "shoulder",
    "elbow",
    "forearm_roll",
    "wrist_angle",
    "wrist_rotate",
    "gripper",
]


def openpi_to_vlastack(obs: dict[str, Any]) -> dict[str, Any]:
    """openpi-style observations (``state``, ``images: {name: CHW}``, ``prompt``; or LIBERO's
    ``observation/state`` and ``observation/<camera>`` HWC) in vlastack's feature keys."""
    out: dict[str, Any] = {}
    for key, value in obs.items():
        if key == "images" and isinstance(value, dict):
            for name, img in value.items():
                a = np.asarray(img)
                out[f"observation.images.{name}"] = (
                    a.transpose(1, 2, 0) if a.shape[0] in (1, 3) else a
                )
        elif key in ("state", "observation/state"):
            out["observation.state"] = np.asarray(value, dtype=np.float32)
        elif key == "prompt":
            out["task"] = str(value)
        elif key.startswith("observation/") and np.asarray(value).ndim == 3:
            out[f"observation.images.{key.split('/', 1)[1]}"] = np.asarray(value)
    return out


class SimClientRobot(RobotBase):
    """A simulator that lives in its own virtual environment (``envs.remote``: ALOHA), driven
    in that environment's process: ``jobs/reset/step/close`` of ``envs.remote.common.RemoteSim``,
    observations converted from openpi's spelling. Hold: the measured joints (ALOHA's action is
    the 14 joint targets, in the state's units)."""

    def __init__(self, sim: Any, embodiment: EmbodimentSpec, max_steps: int) -> None:
        self.sim = sim
        self.embodiment = embodiment
        self.max_steps = max_steps
        self._obs: dict[str, Any] | None = None
        self._steps = 0
        self._done = False
        self._success = False

    def start_episode(self, seed: int | None = None) -> None:
        job = self.sim.jobs(1, int(seed or 0))[0]
        obs, _info = self.sim.reset(job)
        self._obs = openpi_to_vlastack(obs)
        self._steps, self._done, self._success = 0, False, False

    def get_observation(self) -> dict[str, Any]:
        if self._obs is None:
            raise RobotError("SimClientRobot: call start_episode() before get_observation()")
        return dict(self._obs)

    def send_action(self, action: np.ndarray) -> None:
        obs, success, truncated, _info = self.sim.step(np.asarray(action, dtype=np.float64))
        self._obs = openpi_to_vlastack(obs)
        self._steps += 1
        self._success = self._success or bool(success)
        self._done = self._success or bool(truncated) or self._steps >= self.max_steps

    def hold_action(self) -> np.ndarray | None:
        if self._obs is None or "observation.state" not in self._obs:
            return None
        state = np.asarray(self._obs["observation.state"], dtype=np.float64)
        return state.copy() if state.shape == (self.embodiment.action.dim,) else None

    @property
    def episode_done(self) -> bool:
        return self._done

    @property
    def success(self) -> bool | None:
        return self._success

    def disconnect(self) -> None:
        self.sim.close()


def aloha_robot(task: str, cameras: list[str], image_size: int) -> SimClientRobot:
    """ALOHA sim (gym-aloha) as a robot; only importable in ``.venv-aloha`` (it pins its own
    MuJoCo): run ``vlastack robot`` with that environment's python."""
    try:
        from vlastack.envs.remote.aloha_client import CAMERAS, MAX_STEPS, AlohaSim
    except ImportError as exc:
        raise ConfigError(f"aloha: cannot import the ALOHA client ({exc})") from None
    try:
        import gym_aloha  # noqa: F401
    except ImportError:
        raise ConfigError(
            "ALOHA sim needs gym-aloha, which lives in its own virtual environment (it pins "
            "another MuJoCo): make it with `python -m vlastack.envs.remote.runner --make-venv "
            "aloha`, then run this command with that python: `PYTHONPATH=src .venv-aloha/bin/"
            "python -m vlastack robot ... --env aloha/transfer_cube`"
        ) from None
    cams = tuple(c for c in cameras if c in CAMERAS) or ("cam_high",)
    sim = AlohaSim(task, cameras=cams, image_size=image_size)
    names = [f"{side}_{j}" for side in ("left", "right") for j in ALOHA_JOINTS]
    units = ["normalized" if n.endswith("gripper") else "rad" for n in names]
    spec = EmbodimentSpec(
        robot_type="aloha",
        cameras=[CameraSpec(c, image_size, image_size) for c in cams],
        state=VectorSpec(names=names, units=units),
        action=VectorSpec(names=names, units=units, kind="absolute", gripper_index=None),
        control_hz=float(sim.control_hz),
        description=f"ALOHA sim {task} (gym-aloha), 14 joint-position targets",
    )
    return SimClientRobot(sim, spec, MAX_STEPS)
