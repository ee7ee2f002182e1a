"""Layer and head configs given as a dataclass or a dict."""

from __future__ import annotations

import dataclasses
from typing import Any

from vlastack.errors import ConfigError


def config_from(cls: type, cfg: Any) -> Any:
    """Accept a config dataclass instance or a dict; unknown keys are an error naming them."""
    if cfg is None:
        return cls()
    if isinstance(cfg, cls):
        return cfg
    if not isinstance(cfg, dict):
        raise ConfigError(
            f"{cls.__name__}: expected a dict or {cls.__name__}, got {type(cfg).__name__}"
        )
    names = {f.name for f in dataclasses.fields(cls)}
    extra = sorted(set(cfg) - names - {"name", "type"})
    if extra:
        raise ConfigError(
            f"{cls.__name__}: unknown field(s) {extra}; known fields: {sorted(names)}"
        )
    return cls(**{k: v for k, v in cfg.items() if k in names})
