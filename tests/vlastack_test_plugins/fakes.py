"""A tiny point-reaching environment and a scripted chunking policy, for the tests.

They follow the env and Policy contracts (``make_env(name, camera=, image_size=, seed=)``;
``infer(obs) -> {"actions": (H, A)}``) without a simulator or a network, so the evaluation
harness, its worker processes, its crash handling and the report can be exercised anywhere.
``register()`` (run when the plugin package ``vlastack_test_plugins`` is imported, which
``tests/conftest.py`` arranges through ``VLASTACK_PLUGINS``) adds the envs ``fake/...``, the
suite ``fake/suite`` and the checkpoint format ``fake_scripted``: a folder holding
``fake_policy.json`` loads as a ``ScriptedReachPolicy``. ``VLASTACK_FAKE_CRASH`` (JSON) injects
failures, see ``_maybe_crash``.
"""

from __future__ import annotations

import functools
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from vlastack.embodiment import CameraSpec, EmbodimentSpec, VectorSpec
from vlastack.errors import ConfigError

# task -> (step gain: position change per unit action, max_steps, difficulty, instruction)
_TASKS: dict[str, tuple[float, int, str, str]] = {
    "fake/reach-easy": (0.1, 60, "easy", "move the blue dot onto the red target"),
    "fake/reach-far": (0.05, 80, "medium", "reach the far red target with the blue dot"),
    "fake/reach-stuck": (0.002, 30, "hard", "push the sticky blue dot onto the red target"),
}
SUITES = {"fake/suite": list(_TASKS)}
SUCCESS_RADIUS = 0.05
ROBOT_TYPE = "fake_point"


def embodiment(image_size: tuple[int, int] = (32, 32), action_dim: int = 2) -> EmbodimentSpec:
    return EmbodimentSpec(
        robot_type=ROBOT_TYPE,
        cameras=[CameraSpec("top", image_size[0], image_size[1])],
        state=VectorSpec(["x", "y", "target_x", "target_y"]),
        action=VectorSpec(
            [f"d{i}" for i in range(action_dim)],
            kind="delta",
            low=[-1.0] * action_dim,
            high=[1.0] * action_dim,
        ),
        control_hz=10.0,
    )


def _maybe_crash(seed: int, step: int) -> None:
    """Inject failures from ``VLASTACK_FAKE_CRASH`` = {"raise_seeds": [...], "exit_seeds": [...],
    "once_dir": DIR, "as_config_error": bool}: raise (or kill the process) at step 2 of those
    seeds; with ``once_dir`` only the first attempt fails (a marker file remembers it across
    processes)."""
    spec = os.environ.get("VLASTACK_FAKE_CRASH")
    if not spec or step != 2:
        return
    cfg = json.loads(spec)
    hit_raise = seed in cfg.get("raise_seeds", [])
    hit_exit = seed in cfg.get("exit_seeds", [])
    if not (hit_raise or hit_exit):
        return
    once_dir = cfg.get("once_dir")
    if once_dir:
        marker = Path(once_dir) / f"crashed_{seed}"
        if marker.exists():
            return
        marker.touch()
    if hit_exit:
        os._exit(3)  # simulate a segfaulting simulator: no exception, the process is gone
    if cfg.get("as_config_error"):  # e.g. an env's ActionError: a VlastackError mid-episode
        raise ConfigError(f"injected config error at seed {seed}")
    raise RuntimeError(f"injected failure at seed {seed}")


class FakeReachEnv:
    """A point in [-1, 1]² moved by delta actions towards a seeded target; success within 0.05."""

    def __init__(
        self,
        name: str,
        camera: str | None = None,
        image_size: tuple[int, int] = (32, 32),
        seed: int | None = None,
    ) -> None:
        if name not in _TASKS:
            raise ConfigError(f"unknown fake task {name!r}; known: {sorted(_TASKS)}")
        self.task_name = name
        self.gain, self.max_steps, _, self.instruction = _TASKS[name]
        self.camera = camera or "top"
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.embodiment = embodiment(self.image_size)
        self.embodiment.cameras[0].name = self.camera
        self._rng = np.random.default_rng(seed)
        self._seed = seed if seed is not None else 0
        self.pos = np.zeros(2)
        self.target = np.zeros(2)
        self.t = 0

    def _obs(self) -> dict[str, Any]:
        h, w = self.image_size
        img = np.full((h, w, 3), 235, dtype=np.uint8)
        for p, colour in ((self.target, (220, 40, 40)), (self.pos, (40, 80, 220))):
            r = int(round((p[1] + 1) / 2 * (h - 1)))
            c = int(round((p[0] + 1) / 2 * (w - 1)))
            img[max(0, r - 1) : r + 2, max(0, c - 1) : c + 2] = colour
        state = np.concatenate([self.pos, self.target]).astype(np.float32)
        return {
            f"observation.images.{self.camera}": img,
            "observation.state": state,
            "task": self.instruction,
        }

    def reset(self, seed: int | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
            self._seed = seed
        self.pos = self._rng.uniform(-0.8, 0.8, size=2)
        self.target = self._rng.uniform(-0.8, 0.8, size=2)
        self.t = 0
        return self._obs(), {"success": False, "seed": self._seed}

    def step(self, action: np.ndarray) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (2,):
            raise ValueError(f"fake env action has shape {a.shape}, expected (2,)")
        self.t += 1
        _maybe_crash(self._seed, self.t)
        self.pos = np.clip(self.pos + self.gain * np.clip(a, -1, 1), -1, 1)
        dist = float(np.linalg.norm(self.pos - self.target))
        success = dist < SUCCESS_RADIUS
        trunc = self.t >= self.max_steps
        return self._obs(), -dist, success, trunc, {"success": success}

    def close(self) -> None:
        pass


def make_env(
    name: str,
    camera: str | None = None,
    image_size: tuple[int, int] = (32, 32),
    seed: int | None = None,
) -> FakeReachEnv:
    return FakeReachEnv(name, camera=camera, image_size=image_size, seed=seed)


class ScriptedReachPolicy:
    """Plans a chunk of H proportional-control actions from the state, with seeded noise.

    ``latency_s`` sleeps in ``infer`` to imitate a network; the plan assumes a step gain of 0.1,
    so on slower tasks it undershoots and re-plans, like a learned policy would.
    """

    def __init__(
        self,
        action_horizon: int = 8,
        noise: float = 0.0,
        latency_s: float = 0.0,
        execute_horizon: int | None = None,
        seed: int = 0,
    ) -> None:
        self.action_horizon = action_horizon
        self.noise = noise
        self.latency_s = latency_s
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self.metadata: dict[str, Any] = {
            "embodiment": embodiment().to_dict(),
            "action_horizon": action_horizon,
            "execute_horizon": execute_horizon or action_horizon,
        }

    def reset(self) -> None:
        self._rng = np.random.default_rng(self.seed)

    def infer(self, obs: dict[str, Any]) -> dict[str, np.ndarray]:
        if self.latency_s:
            time.sleep(self.latency_s)
        state = np.asarray(obs["observation.state"], dtype=np.float64)
        pos, target = state[:2].copy(), state[2:4]
        chunk = np.empty((self.action_horizon, 2), dtype=np.float32)  # (H, A)
        for i in range(self.action_horizon):
            a = np.clip((target - pos) / 0.1, -1, 1)
            pos = pos + 0.1 * a
            chunk[i] = a
        if self.noise:
            chunk += self.noise * self._rng.standard_normal(chunk.shape).astype(np.float32)
        return {"actions": np.clip(chunk, -1, 1)}

    @classmethod
    def from_dir(cls, path: str | Path) -> ScriptedReachPolicy:
        cfg = json.loads((Path(path) / "fake_policy.json").read_text())
        return cls(**cfg)


def is_fake_checkpoint(path: Path) -> bool:
    return (Path(path) / "fake_policy.json").exists()


def load_fake_checkpoint(
    path: Path,
    *,
    expect_embodiment: EmbodimentSpec | None = None,
    embodiment: str | None = None,
) -> ScriptedReachPolicy:
    """The ``fake_scripted`` checkpoint format's loader (``rollout.load_policy`` calls it)."""
    if embodiment is not None and embodiment != ROBOT_TYPE:
        raise ConfigError(
            f"{path} holds the scripted fake policy (robot {ROBOT_TYPE!r}), not {embodiment!r}; "
            "drop --embodiment"
        )
    return ScriptedReachPolicy.from_dir(path)


def write_fake_checkpoint(path: str | Path, **policy_kwargs: Any) -> Path:
    """A checkpoint folder that ``rollout.load_policy`` loads as a ``ScriptedReachPolicy``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "fake_policy.json").write_text(json.dumps(policy_kwargs))
    embodiment().save(path / "embodiment.json")
    (path / "model.safetensors").write_bytes(json.dumps(policy_kwargs).encode())
    return path


def register() -> None:
    """Add the fake envs, their suite and the scripted checkpoint format to vlastack."""
    from vlastack.envs import register_env, register_suite
    from vlastack.policy_formats import register_policy_format

    for name, (_, steps, difficulty, _) in _TASKS.items():
        register_env(
            name,
            functools.partial(make_env, name),
            f"test fake: point reaching, {steps} steps",
            difficulty=difficulty,
        )
    for name, tasks in SUITES.items():
        register_suite(name, tasks, f"test fake suite: {len(tasks)} point-reaching tasks")
    register_policy_format(
        "fake_scripted",
        is_fake_checkpoint,
        load_fake_checkpoint,
        "test fake: a folder with fake_policy.json (ScriptedReachPolicy)",
    )
