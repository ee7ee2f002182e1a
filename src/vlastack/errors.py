"""User-facing errors.

A ``VlastackError`` is a mistake the user can fix (bad input, a missing extra, an unknown name).
The CLI prints its message in plain words without a traceback; everything else is a bug and keeps
its traceback. Messages should name the file, the field and the fix.
"""

from __future__ import annotations


class VlastackError(Exception):
    """An error caused by user input or environment, printed without a traceback by the CLI."""


class DataError(VlastackError):
    """A dataset on disk is malformed, inconsistent, or does not match what was asked of it."""


class ConfigError(VlastackError):
    """A configuration names an unknown component or holds an invalid value."""


class NonFiniteActionError(VlastackError):
    """A policy produced a NaN or Inf action: it is an error, never an action sent to a robot."""


class MissingExtraError(VlastackError):
    """An optional dependency is not installed."""

    def __init__(self, package: str, extra: str, purpose: str = "", install: str = "") -> None:
        what = f" (needed for {purpose})" if purpose else ""
        how = install or f"pip install 'vlastack[{extra}]'"
        super().__init__(
            f"the optional package '{package}' is not installed{what}. Install it with: {how}"
        )
        self.package = package
        self.extra = extra


def require(module: str, extra: str, purpose: str = ""):
    """Import ``module`` or raise MissingExtraError naming the extra that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised when extras are absent
        raise MissingExtraError(module.split(".")[0], extra, purpose) from exc
