"""An SO-100 follower arm built by LeRobot, for ``vlastack robot --lerobot lerobot_arm:make_follower``.

Needs LeRobot (0.6.1 names below) in the same environment; vlastack itself never imports it and
drives the arm through its ``Robot`` API only (``vlastack.robot.adapters.LeRobotRobot``):

    PYTHONPATH=examples vlastack robot --server 127.0.0.1:8000 \\
        --lerobot lerobot_arm:make_follower --control-hz 30 \\
        --limits examples/so100_limits.yaml --record rollouts/so100

Set the port, the id (its calibration file) and the cameras to yours; the camera names must be
the ones the policy was trained with (``vlastack inspect CHECKPOINT`` lists them).
"""

from __future__ import annotations

import os


def make_follower():
    from lerobot.cameras.opencv import OpenCVCameraConfig
    from lerobot.robots.so_follower import SO100Follower, SO100FollowerConfig

    config = SO100FollowerConfig(
        port=os.environ.get("SO100_PORT", "/dev/ttyACM0"),
        id=os.environ.get("SO100_ID", "follower_so100"),
        cameras={"front": OpenCVCameraConfig(index_or_path=0, width=640, height=480, fps=30)},
    )
    return SO100Follower(config)
