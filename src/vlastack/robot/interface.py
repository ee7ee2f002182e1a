"""The one small interface the robot-side runner drives (``vlastack.robot.runner``).

A ``Robot`` speaks vlastack's feature keys: ``get_observation()`` returns
``observation.images.<camera>`` uint8 (H, W, C) upright, ``observation.state`` float (S,) and
optionally ``task`` (str); ``send_action(a)`` takes float (A,) in the units of
``embodiment.action``. ``hold_action()`` is the command that keeps the robot where it is now
(absolute joint targets: the measured joints; None when the robot cannot tell, and the safety
layer then uses the action kind's generic hold). Simulators also implement ``start_episode(seed)``
and report ``episode_done``/``success``; a physical robot keeps the defaults of ``RobotBase``.
Adapters: ``adapters.GymRobot`` (any vlastack ``VlaEnv``), ``adapters.LeRobotRobot`` (an object
with LeRobot's ``Robot`` API; LeRobot itself is not imported).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from vlastack.embodiment import EmbodimentSpec
from vlastack.errors import VlastackError


class RobotError(VlastackError):
    """The robot could not be reached or refused a command."""


@runtime_checkable
class Robot(Protocol):
    """What the runner needs from a robot (see the module docstring for the conventions)."""

    embodiment: EmbodimentSpec

    def connect(self) -> None: ...

    def disconnect(self) -> None: ...

    def start_episode(self, seed: int | None = None) -> None: ...

    def get_observation(self) -> dict[str, Any]: ...

    def send_action(self, action: np.ndarray) -> None: ...

    def hold_action(self) -> np.ndarray | None: ...

    @property
    def episode_done(self) -> bool: ...

    @property
    def success(self) -> bool | None: ...


class RobotBase:
    """Defaults for a physical robot: episodes are started by a person, never end by themselves,
    and have no success signal. Subclasses set ``embodiment`` and implement the I/O methods."""

    embodiment: EmbodimentSpec

    def connect(self) -> None:
        """Open the connection (no-op by default)."""

    def disconnect(self) -> None:
        """Close the connection (no-op by default)."""

    def start_episode(self, seed: int | None = None) -> None:
        """Prepare an episode (no-op on a physical robot: a person resets the scene)."""

    def hold_action(self) -> np.ndarray | None:
        return None

    @property
    def episode_done(self) -> bool:
        return False

    @property
    def success(self) -> bool | None:
        return None

    def __enter__(self) -> RobotBase:
        self.connect()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.disconnect()
