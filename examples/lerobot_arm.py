"""An SO-100 follower arm built by LeRobot, for ``vlastack robot --lerobot lerobot_arm:make_follower``.

Needs LeRobot (0.6.1 names below) in the same environment; vlastack itself never imports it and
drives the arm through its ``Robot`` API only (``vlastack.robot.adapters.LeRobotRobot``):

    PYTHONPATH=examples vlastack robot --server 127.0.0.1:8000 \\
        --lerobot lerobot_arm:make_follower --control-hz 30 \\
        --limits examples/so100_limits.yaml --record rollouts/so100

Set the port, the id (its calibration file) and the cameras to yours; the camera names must be
the ones the policy was trained with (``vlastack inspect CHECKPOINT`` lists them).

Human corrections with an SO-100 leader arm (``--teleop lerobot_arm:make_leader
--intervene-key SPACE``): press SPACE in the terminal to take over (the follower then follows
the leader, through the safety layer) and SPACE again to hand back; with ``--record`` those
frames get ``intervention`` = True. A USB foot pedal instead: ``--intervene-pedal
/dev/input/by-id/usb-...-event-kbd`` (a person drives while it is held down; ``--pedal-mode
toggle`` for press-to-toggle). A leader arm cannot tell when a person takes over, so one of the
two is needed.
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


def make_leader():
    from lerobot.teleoperators.so_leader import SO100Leader, SO100LeaderConfig

    return SO100Leader(
        SO100LeaderConfig(
            port=os.environ.get("SO100_LEADER_PORT", "/dev/ttyACM1"),
            id=os.environ.get("SO100_LEADER_ID", "leader_so100"),
        )
    )
