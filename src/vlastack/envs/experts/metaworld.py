"""Meta-World scripted experts (``metaworld.policies``) with optional Gaussian action noise.

The policies read the full 39-d observation (hand, objects, goal), i.e. privileged state that
``MetaWorldEnv`` keeps in ``info["raw_obs"]`` / ``env.raw_obs``. Noise adds state diversity to
demonstrations (a common trick since DART, Laskey et al. 2017); actions are clipped to [-1, 1].
"""

from __future__ import annotations

import warnings

import numpy as np

from vlastack.errors import ConfigError, require


class MetaWorldExpert:
    """``act(raw_obs (39,)) -> action (4,)`` float32 in [-1, 1]."""

    def __init__(self, task: str, *, noise: float = 0.0, seed: int | None = None) -> None:
        policies = require("metaworld.policies", "sim", "Meta-World scripted experts")
        if task not in policies.ENV_POLICY_MAP:
            raise ConfigError(f"Meta-World has no scripted policy for '{task}'")
        if noise < 0:
            raise ConfigError(f"noise={noise} must be >= 0 (std of the action noise)")
        self.task = task
        self.noise = float(noise)
        self._policy = policies.ENV_POLICY_MAP[task]()
        self._rng = np.random.default_rng(seed)

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self._rng = np.random.default_rng(seed)

    def act(self, raw_obs: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():
            # the policies warn whenever their P-gain saturates; the env clips anyway
            warnings.simplefilter("ignore")
            a = np.asarray(self._policy.get_action(np.asarray(raw_obs)), dtype=np.float32)
        if self.noise > 0:
            a = a + self._rng.normal(0.0, self.noise, size=a.shape).astype(np.float32)
        return np.clip(a, -1.0, 1.0)
