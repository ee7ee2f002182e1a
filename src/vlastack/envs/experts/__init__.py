"""Scripted demonstrators: ``act(raw_obs) -> action`` from the simulator's privileged state.

``make_expert(env)`` returns the expert for a vlastack env (Meta-World: the ``metaworld.policies``
scripted policies; PushT: a geometric push planner written for vlastack).
"""

from __future__ import annotations

from typing import Any

from vlastack.envs.base import ScriptedExpert
from vlastack.errors import ConfigError


def make_expert(env: Any, *, noise: float = 0.0, seed: int | None = None) -> ScriptedExpert:
    """The scripted expert for ``env`` with Gaussian action noise of std ``noise`` (action units)."""
    build = getattr(env, "make_expert", None)
    if build is None:
        raise ConfigError(
            f"no scripted expert for {type(env).__name__}; experts exist for Meta-World and PushT"
        )
    return build(noise=noise, seed=seed)


__all__ = ["ScriptedExpert", "make_expert"]
