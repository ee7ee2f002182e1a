"""Plugins: modules outside vlastack that register their own components.

A plugin is an importable module that, when imported, adds entries to vlastack's registries:
environments (``vlastack.envs.register_env`` / ``register_suite``, or ``ENVS.add``), checkpoint
formats (``vlastack.policy_formats.register_policy_format``), heads, encoders, recipes. Two ways
name one:

- the environment variable ``VLASTACK_PLUGINS``: comma-separated module names, e.g.
  ``VLASTACK_PLUGINS=my_robot.envs,my_lab.formats`` (the modules must be importable: installed,
  or their folder on ``PYTHONPATH``);
- an installed package's entry point in the group ``vlastack.plugins``, e.g. in its
  ``pyproject.toml``: ``[project.entry-points."vlastack.plugins"] my_robot = "my_robot.envs"``.

``load_plugins()`` imports them once per process. Every registry calls it before it answers a
lookup (``get``, ``in``, iteration, ``entries``), so plugin entries are visible everywhere,
including in worker processes: spawned children inherit the variable and ``sys.path``. A
plugin may read registries while it is being imported (it then sees what is registered so far).
"""

from __future__ import annotations

import importlib
import os
import threading
from types import ModuleType
from typing import Any

from vlastack.errors import ConfigError

ENV_VAR = "VLASTACK_PLUGINS"
ENTRY_POINT_GROUP = "vlastack.plugins"

_lock = threading.RLock()
_loading = False  # a plugin being imported reads a registry: answer with what is there
_env_done: str | None = None  # the value of ENV_VAR whose modules are all imported
_entry_points_done = False
_loaded: dict[str, ModuleType] = {}  # plugin label -> module
_failed: dict[str, ConfigError] = {}  # a module that failed once is not imported again


def plugin_names(value: str | None = None) -> list[str]:
    """The module names in ``value`` (default: ``$VLASTACK_PLUGINS``), in order, no blanks."""
    if value is None:
        value = os.environ.get(ENV_VAR, "")
    return [n.strip() for n in value.split(",") if n.strip()]


def loaded_plugins() -> list[str]:
    """Plugins imported so far in this process (module names; ``entry point NAME`` labels)."""
    return list(_loaded)


def _entry_points() -> list[Any]:
    from importlib import metadata

    return list(metadata.entry_points(group=ENTRY_POINT_GROUP))


def _import_module(name: str, value: str) -> None:
    if name in _loaded:
        return
    if name in _failed:
        raise _failed[name]
    try:
        _loaded[name] = importlib.import_module(name)
    except Exception as exc:
        missing = isinstance(exc, ModuleNotFoundError) and (
            exc.name is None or name == exc.name or name.startswith(exc.name + ".")
        )
        fix = (
            "Make it importable (install its package, or add the folder that holds it to "
            "PYTHONPATH)"
            if missing
            else "Fix that module"
        )
        err = ConfigError(
            f"cannot import the vlastack plugin module {name!r} named in {ENV_VAR}={value!r} "
            f"({type(exc).__name__}: {exc}). {fix} or remove it from {ENV_VAR}."
        )
        _failed[name] = err
        raise err from exc


def _load_entry_point(ep: Any) -> None:
    label = f"entry point {ep.name}"
    if label in _loaded:
        return
    if label in _failed:
        raise _failed[label]
    try:
        ep.load()  # imports the module (and reads the attribute, if one is named)
    except Exception as exc:
        dist = getattr(getattr(ep, "dist", None), "name", None)
        owner = f" of the installed package {dist!r}" if dist else ""
        err = ConfigError(
            f"cannot load the vlastack plugin entry point {ep.name!r} = {ep.value!r}{owner} "
            f"(group {ENTRY_POINT_GROUP!r}): {type(exc).__name__}: {exc}. Fix or reinstall that "
            "package, or uninstall it."
        )
        _failed[label] = err
        raise err from exc
    _loaded[label] = importlib.import_module(ep.module)


def load_plugins() -> None:
    """Import every plugin named by ``$VLASTACK_PLUGINS`` and the ``vlastack.plugins`` entry
    points, once per process (a changed variable imports the modules it adds). Raises a
    ConfigError naming the module and the fix when one cannot be imported."""
    global _loading, _env_done, _entry_points_done
    value = os.environ.get(ENV_VAR, "")
    if _entry_points_done and value == _env_done:
        return
    with _lock:
        if _loading:
            return
        _loading = True
        try:
            if not _entry_points_done:
                for ep in _entry_points():
                    _load_entry_point(ep)
                _entry_points_done = True
            for name in plugin_names(value):
                _import_module(name, value)
            _env_done = value
        finally:
            _loading = False


__all__ = ["ENTRY_POINT_GROUP", "ENV_VAR", "load_plugins", "loaded_plugins", "plugin_names"]
