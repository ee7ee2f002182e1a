"""The environment contract every simulator adapter in vlastack follows.

A ``VlaEnv`` is a gymnasium.Env whose observations use vlastack's feature keys
(``observation.images.<camera>`` uint8 (H, W, 3) upright, ``observation.state`` float32 (S,),
``task`` str) and which carries the robot's ``EmbodimentSpec``, the language ``instruction``, the
episode limit ``max_steps`` and ``task_name``. Adapters check actions against the spec (shape,
finite, bounds) so that a policy/robot mismatch fails loudly instead of being clipped silently.
"""

from __future__ import annotations

import os
from typing import Any, Protocol

import gymnasium as gym
import numpy as np

from vlastack.embodiment import EmbodimentSpec
from vlastack.errors import ConfigError

# MuJoCo picks its GL backend when first imported; EGL works headless on CPUs (Mesa llvmpipe).
os.environ.setdefault("MUJOCO_GL", "egl")

ObsDict = dict[str, Any]


class ActionError(ConfigError, ValueError):
    """An action of the wrong shape, not finite, or outside the embodiment's bounds."""


class ScriptedExpert(Protocol):
    """A demonstrator: maps the simulator's raw (privileged) observation to one action."""

    def reset(self, seed: int | None = None) -> None: ...

    def act(self, raw_obs: Any) -> np.ndarray: ...


def check_action(
    action: Any, spec: EmbodimentSpec, *, clip: bool, where: str, atol: float = 1e-6
) -> np.ndarray:
    """Return ``action`` as float32 (A,), raising ActionError on a wrong size or out of bounds.

    With ``clip=True`` out-of-bounds values are clipped instead (NaN/inf still raise).
    """
    a = np.asarray(action, dtype=np.float32)
    expected = spec.action.dim
    if a.ndim == 2 and a.shape[0] == 1:
        a = a[0]  # a batch of one, as policies often return
    if a.shape != (expected,):
        raise ActionError(
            f"{where}: action has shape {tuple(np.shape(action))}, expected ({expected},) "
            f"= {spec.action.names}"
        )
    if not np.all(np.isfinite(a)):
        raise ActionError(f"{where}: action contains NaN or inf: {a.tolist()}")
    if spec.action.low is not None and spec.action.high is not None:
        low = np.asarray(spec.action.low, dtype=np.float32)
        high = np.asarray(spec.action.high, dtype=np.float32)
        if clip:
            a = np.clip(a, low, high)
        elif np.any(a < low - atol) or np.any(a > high + atol):
            raise ActionError(
                f"{where}: action {np.round(a, 4).tolist()} is outside the bounds "
                f"low={spec.action.low} high={spec.action.high}; rescale it or create the env "
                "with clip_actions=True"
            )
    return a


def orient_upright(img: np.ndarray, orientation: str) -> np.ndarray:
    """Undo a simulator's camera orientation so that the returned image is upright (copy)."""
    if orientation == "rot180":
        return np.ascontiguousarray(img[::-1, ::-1])
    if orientation == "flip_vertical":
        return np.ascontiguousarray(img[::-1])
    if orientation == "flip_horizontal":
        return np.ascontiguousarray(img[:, ::-1])
    return np.ascontiguousarray(img)


class VlaEnv(gym.Env):
    """Base class of vlastack environments (see module docstring for the observation contract).

    Subclasses set ``embodiment``, ``instruction``, ``max_steps``, ``task_name``, ``camera`` and
    implement ``_reset(seed)`` / ``_step(action)`` returning already-converted observations.
    ``info["success"]`` is always present; ``info["seed"]`` holds the episode seed after reset.
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"]}
    embodiment: EmbodimentSpec
    instruction: str
    max_steps: int
    task_name: str
    camera: str
    clip_actions: bool = False

    @property
    def image_key(self) -> str:
        return f"observation.images.{self.camera}"

    def render(self) -> np.ndarray:  # type: ignore[override]
        """The last upright camera image (uint8 H, W, 3)."""
        return self._last_image

    _last_image: np.ndarray


def make_context_current(raw: Any) -> Any:
    """Make a gymnasium MuJoCo env's offscreen GL context current and return its viewer.

    gymnasium's viewer makes its context current only when created; with several MuJoCo envs in
    one process (suites cache one per condition), freeing one leaves no current context and the
    next render of another comes out black, so every render is preceded by this.
    """
    viewer = raw.mujoco_renderer._get_viewer("rgb_array")
    viewer.make_context_current()
    return viewer
