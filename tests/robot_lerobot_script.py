"""Run under LeRobot 0.6.1's interpreter (``_lerobot_python``) with vlastack's ``src`` on the path:
a software arm that subclasses LeRobot's own ``lerobot.robots.Robot`` ABC (every abstract member
implemented, no hardware) driven by ``vlastack.robot`` for 40 ticks with NaN and out-of-range
chunks. Prints one JSON line: what the arm received and what the safety layer counted."""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from lerobot.robots import Robot, RobotConfig

from vlastack.robot.adapters import LeRobotRobot
from vlastack.robot.runner import RobotRunner
from vlastack.robot.safety import SafetyFilter, limits_for

MOTORS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]


@RobotConfig.register_subclass("vlastack_soft_arm")
@dataclass
class SoftArmConfig(RobotConfig):
    pass


class SoftArm(Robot):
    config_class = SoftArmConfig
    name = "vlastack_soft_arm"

    def __init__(self, config: SoftArmConfig):
        super().__init__(config)
        self._connected = False
        self.present = dict.fromkeys(MOTORS, 0.0)
        self.sent: list[dict] = []

    @property
    def observation_features(self) -> dict:
        return {**{f"{m}.pos": float for m in MOTORS}, "front": (12, 16, 3)}

    @property
    def action_features(self) -> dict:
        return {f"{m}.pos": float for m in MOTORS}

    @property
    def is_connected(self) -> bool:
        return self._connected

    def connect(self, calibrate: bool = True) -> None:
        self._connected = True

    @property
    def is_calibrated(self) -> bool:
        return True

    def calibrate(self) -> None:
        pass

    def configure(self) -> None:
        pass

    def get_observation(self):
        obs = {f"{m}.pos": v for m, v in self.present.items()}
        obs["front"] = np.zeros((12, 16, 3), np.uint8)
        return obs

    def send_action(self, action):
        self.sent.append(dict(action))
        for k, v in action.items():
            self.present[k.removesuffix(".pos")] = float(v)
        return action

    def disconnect(self) -> None:
        self._connected = False


class Policy:
    def __init__(self):
        self.calls = 0

    def reset(self):
        pass

    def infer(self, obs):
        n, self.calls = self.calls, self.calls + 1
        chunk = np.full((5, 6), 10.0 + n)
        if n == 1:
            chunk[:] = np.nan
        if n == 3:
            chunk[:] = 500.0
        return {"actions": chunk}


def main() -> None:
    arm = SoftArm(SoftArmConfig(id="t", calibration_dir=Path(tempfile.mkdtemp())))
    robot = LeRobotRobot(arm, control_hz=100)
    limits = limits_for(
        robot.embodiment.action.names,
        100,
        robot=robot.embodiment,
        overrides={"low": -90, "high": 90, "max_delta": 20},
    )
    runner = RobotRunner(
        robot, Policy(), SafetyFilter(limits), runtime_kwargs={"execute_horizon": 5}
    )
    robot.connect()
    res = runner.run_episode(max_ticks=60)
    robot.disconnect()
    sent = [[a[f"{m}.pos"] for m in MOTORS] for a in arm.sent]
    print(
        json.dumps(
            {
                "robot_type": robot.embodiment.robot_type,
                "sent": sent,
                "counts": res.counts,
                "connected": arm.is_connected,
                "python": sys.version.split()[0],
            }
        )
    )


if __name__ == "__main__":
    main()
