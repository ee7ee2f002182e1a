"""A small generic registry with "did you mean" suggestions.

One registry per swappable family (vision encoders, language backbones, projectors, action heads,
environments, recipes, checkpoint formats). Entries carry a one-line description for ``vlastack
list``. Lookups first import the plugins (``vlastack.plugins``), so entries a plugin registers are
visible wherever a registry is read.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from vlastack.errors import ConfigError
from vlastack.plugins import load_plugins

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    obj: T
    description: str


class Registry(Generic[T]):
    """Maps names to builders (or classes) of one component family."""

    def __init__(self, family: str) -> None:
        self.family = family
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, description: str = "") -> Callable[[T], T]:
        def deco(obj: T) -> T:
            self.add(name, obj, description)
            return obj

        return deco

    def add(self, name: str, obj: T, description: str = "") -> None:
        if name in self._entries:
            raise ValueError(f"{self.family} '{name}' is already registered")
        if not description:
            doc = getattr(obj, "__doc__", None) or ""
            description = doc.strip().splitlines()[0] if doc.strip() else ""
        self._entries[name] = Entry(name, obj, description)

    def get(self, name: str) -> T:
        load_plugins()
        try:
            return self._entries[name].obj
        except KeyError:
            raise ConfigError(self.unknown_message(name)) from None

    def unknown_message(self, name: object) -> str:
        load_plugins()
        close = difflib.get_close_matches(str(name), list(self._entries), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        known = ", ".join(sorted(self._entries))
        return f"unknown {self.family} '{name}'.{hint} Known: {known}"

    def __contains__(self, name: object) -> bool:
        load_plugins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        load_plugins()
        return iter(sorted(self._entries))

    def entries(self) -> list[Entry[T]]:
        load_plugins()
        return [self._entries[k] for k in sorted(self._entries)]

    def __len__(self) -> int:
        load_plugins()
        return len(self._entries)
