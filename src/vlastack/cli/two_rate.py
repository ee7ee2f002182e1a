"""``--high-level-hz`` / ``--high-level-async`` for ``eval`` and ``robot``: a hierarchical
checkpoint at two rates through ``serving.hierarchy.HierarchicalRuntime``."""

from __future__ import annotations

import argparse
from typing import Any


def add_two_rate_args(p: argparse.ArgumentParser, control: str) -> None:
    p.add_argument(
        "--high-level-hz",
        type=float,
        default=None,
        metavar="HZ",
        help="hierarchical checkpoints (recipe 'hierarchy'): run the slow high level (System 2, "
        f"the subtask) at this rate and the low level (System 1) every tick of {control}, on the "
        "latest subtask. Default: both levels on every chunk",
    )
    p.add_argument(
        "--high-level-async",
        action="store_true",
        help="with --high-level-hz: run System 2 in a background thread (one run in flight); "
        "ticks go on with the current subtask until it finishes, so a slow System 2 never stalls "
        "System 1. Off by default: synchronous System 2 is deterministic (the same subtask at "
        "the same tick on every run) and acts on the subtask of the current observation",
    )


def two_rate_options(args: argparse.Namespace) -> dict[str, Any] | None:
    """The ``HierarchicalRuntime`` options the flags ask for; None without --high-level-hz."""
    from vlastack.errors import ConfigError
    from vlastack.serving.hierarchy import check_rates

    if args.high_level_hz is None:
        if args.high_level_async:
            raise ConfigError("--high-level-async goes with --high-level-hz; add it or drop this")
        return None
    check_rates(args.high_level_hz)
    return {
        "high_level_hz": float(args.high_level_hz),
        "high_level_async": bool(args.high_level_async),
    }
