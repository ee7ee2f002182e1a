"""Human corrections: a teleoperator that takes over from the policy while a person intervenes.

As in HIL-SERL and LeRobot's human-in-the-loop (DAgger) rollouts, a person watches the policy
and takes over with a teleoperator (leader arm, gamepad, keyboard) when it goes wrong; the frames
recorded while they do are tagged ``intervention`` (LeRobot 0.6.1's feature name: bool, shape
(1,), see ``lerobot/rollout/strategies/dagger.py``), so a later training run can weight or pick
the corrections.

``TeleopIntervention`` wraps any object with the members of LeRobot 0.6.1's ``Teleoperator``
that it uses (``action_features``, ``get_action()`` -> {name: value}, ``connect(calibrate=)``,
``disconnect()``, ``is_connected``; LeRobot is not imported). Whether the person is intervening
now comes from, in this order: the ``intervening`` callable given (a key, a foot pedal:
``InterventionSwitch`` is a thread-safe one a key or pedal handler flips), the teleop's
``get_teleop_events()`` (LeRobot's gamepad and keyboard teleops report ``is_intervention``
there), or a boolean ``intervening`` attribute of the teleop. While it is on, the runner sends
the teleop's action instead of the policy's, through the same safety layer (clamped,
rate-limited, a non-finite command held), and the policy's chunks are dropped when the person
hands back, so the policy restarts from what the robot sees then.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from vlastack.errors import ConfigError
from vlastack.robot.interface import RobotError

TELEOP_API = ("action_features", "get_action")
INTERVENTION_EVENT = "is_intervention"  # LeRobot's TeleopEvents.IS_INTERVENTION value


class InterventionSwitch:
    """An on/off flag a key or foot-pedal handler sets from its own thread (``set``,
    ``toggle``); calling it reads the flag (pass it as ``intervening``)."""

    def __init__(self, on: bool = False) -> None:
        self._on = bool(on)
        self._lock = threading.Lock()

    def set(self, on: bool) -> None:
        with self._lock:
            self._on = bool(on)

    def toggle(self) -> bool:
        with self._lock:
            self._on = not self._on
            return self._on

    def __call__(self) -> bool:
        with self._lock:
            return self._on


def _event_flag(events: Any) -> bool | None:
    """``is_intervention`` from a teleop's events: keys may be LeRobot's ``TeleopEvents`` enum
    members (``.value == "is_intervention"``) or plain strings; None when it is not there."""
    if not isinstance(events, Mapping):
        return None
    for key, value in events.items():
        name = getattr(key, "value", key)
        if name == INTERVENTION_EVENT:
            return bool(value)
    return None


class TeleopIntervention:
    """A teleoperator as an intervention source for ``RobotRunner`` (``intervention=``).

    ``action_names`` are the robot's action names (``robot.embodiment.action.names``); the
    teleop's action dict is read in that order (a teleop whose action keys differ, such as a
    leader arm with ``<motor>.pos`` keys for a follower with the same keys, must match them).
    ``poll()`` once per tick returns the human's command, or None when nobody intervenes.
    """

    def __init__(
        self,
        teleop: Any,
        action_names: Sequence[str],
        *,
        intervening: Callable[[], bool] | None = None,
        calibrate: bool = True,
    ) -> None:
        missing = [m for m in TELEOP_API if not hasattr(teleop, m)]
        if missing:
            raise ConfigError(
                f"{type(teleop).__name__} lacks {missing} of LeRobot's Teleoperator API "
                f"({', '.join(TELEOP_API)}); pass a lerobot.teleoperators.Teleoperator (e.g. an "
                "SO-100 leader) or an object with those members"
            )
        self.teleop = teleop
        self.action_names = list(action_names)
        self.calibrate = calibrate
        keys = list(getattr(teleop, "action_features", None) or [])
        unknown = [n for n in self.action_names if keys and n not in keys]
        if unknown:
            raise ConfigError(
                f"{type(teleop).__name__}.action_features {keys} lacks the robot's actions "
                f"{unknown}; use a teleoperator for this robot"
            )
        if intervening is not None:
            self._flag: Callable[[], bool] = intervening
        elif callable(getattr(teleop, "get_teleop_events", None)):
            self._flag = self._from_events
        elif isinstance(getattr(teleop, "intervening", None), bool):
            self._flag = lambda: bool(teleop.intervening)
        else:
            raise ConfigError(
                f"cannot tell when a person intervenes with {type(teleop).__name__}: it has no "
                "get_teleop_events() (is_intervention) and no boolean 'intervening'; give "
                "`vlastack robot` --intervene-key SPACE or --intervene-pedal /dev/input/eventN, "
                "or pass intervening= (an InterventionSwitch: robot.switches has a terminal "
                "key and a foot pedal one)"
            )

    def _from_events(self) -> bool:
        return bool(_event_flag(self.teleop.get_teleop_events()))

    def connect(self) -> None:
        connected = getattr(self.teleop, "is_connected", False)
        if not connected and callable(getattr(self.teleop, "connect", None)):
            self.teleop.connect(calibrate=self.calibrate)

    def disconnect(self) -> None:
        if getattr(self.teleop, "is_connected", False):
            self.teleop.disconnect()

    def active(self) -> bool:
        return bool(self._flag())

    def action(self) -> np.ndarray:
        """The teleop's action now, float64 (A,) in the robot's action order (may be non-finite:
        the safety layer then holds)."""
        raw = self.teleop.get_action()
        if isinstance(raw, Mapping):
            missing = [n for n in self.action_names if n not in raw]
            if missing:
                raise RobotError(
                    f"{type(self.teleop).__name__}.get_action() lacks {missing}; the robot "
                    f"takes {self.action_names}"
                )
            return np.array([float(raw[n]) for n in self.action_names], dtype=np.float64)
        a = np.asarray(raw, dtype=np.float64).reshape(-1)
        if a.shape != (len(self.action_names),):
            raise RobotError(
                f"{type(self.teleop).__name__}.get_action() gave {a.size} values; the robot "
                f"takes {len(self.action_names)}: {self.action_names}"
            )
        return a

    def poll(self) -> np.ndarray | None:
        """The human's command this tick, or None when nobody intervenes."""
        return self.action() if self.active() else None


__all__ = ["INTERVENTION_EVENT", "InterventionSwitch", "TeleopIntervention"]
