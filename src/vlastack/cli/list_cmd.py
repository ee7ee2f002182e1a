"""``vlastack list [FAMILY]``: every registered component with a one-line description.

Families: encoders (vision), backbones (language), projectors, heads (action heads), envs
(simulators), recipes, objectives (model-config switches such as the world-model loss), and
formats (the checkpoint formats besides vlastack's own: LeRobot and openpi folders, plugins'). A family whose module is not installed is skipped with a note.
"""

from __future__ import annotations

import argparse
import importlib
import json
from typing import Any

# family -> (module, registry attribute, title)
FAMILIES: dict[str, tuple[str, str, str]] = {
    "encoders": ("vlastack.models.vision", "VISION_ENCODERS", "vision encoders"),
    "backbones": ("vlastack.models.language", "LANGUAGE_BACKBONES", "language backbones"),
    "projectors": ("vlastack.models.projectors", "PROJECTORS", "projectors"),
    "heads": ("vlastack.models.action_heads", "ACTION_HEADS", "action heads"),
    "envs": ("vlastack.envs", "ENVS", "environments"),
    "recipes": ("vlastack.recipes", "RECIPES", "recipes"),
    "objectives": ("vlastack.models.foresight", "OBJECTIVES", "model-config objectives"),
    "formats": ("vlastack.policy_formats", "POLICY_FORMATS", "checkpoint formats"),
}


def collect(families: list[str]) -> dict[str, list[tuple[str, str]] | str]:
    """family -> [(name, description)], or a string saying why the family is unavailable."""
    out: dict[str, list[tuple[str, str]] | str] = {}
    for fam in families:
        module, attr, _ = FAMILIES[fam]
        try:
            registry = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            out[fam] = f"not available ({exc})"
            continue
        out[fam] = [(e.name, e.description) for e in registry.entries()]
    return out


def run(args: argparse.Namespace) -> int:
    from vlastack.errors import ConfigError

    families = list(FAMILIES) if not args.family else [args.family]
    if args.family and args.family not in FAMILIES:
        raise ConfigError(f"unknown family '{args.family}'; choose one of {', '.join(FAMILIES)}")
    found = collect(families)
    if args.json:
        print(
            json.dumps(
                {k: v if isinstance(v, str) else dict(v) for k, v in found.items()}, indent=1
            )
        )
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for fam, rows in found.items():
        title = FAMILIES[fam][2]
        if isinstance(rows, str):
            console.print(f"[bold]{title}[/bold]: {rows}")
            continue
        table = Table(title=f"{title} ({len(rows)})", title_justify="left", show_lines=False)
        table.add_column("name", style="bold cyan", no_wrap=True)
        table.add_column("description")
        for name, desc in rows:
            table.add_row(name, desc)
        console.print(table)
    return 0


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "list",
        help="list registered encoders, backbones, projectors, heads, environments and recipes",
        description=__doc__,
    )
    p.add_argument("family", nargs="?", help=f"one of: {', '.join(FAMILIES)} (default: all)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(func=run)
