"""``vlastack`` entry point: dispatches to one module per subcommand.

Each module in ``SUBCOMMANDS`` exposes ``add_parser(subparsers)`` which registers its parser and
sets ``func`` (called with the parsed namespace). Modules import heavy libraries inside ``func`` so
that ``vlastack --help`` stays fast. A ``VlastackError`` is a user mistake: printed in plain words,
exit code 2, no traceback (``VLASTACK_DEBUG=1`` shows it).
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading

from vlastack import __version__
from vlastack.errors import VlastackError

# Order is the order shown in --help.
SUBCOMMANDS = [
    "data",
    "collect",
    "train",
    "eval",
    "bench",
    "report",
    "serve",
    "robot",
    "export",
    "inspect_cmd",
    "fast",
    "list_cmd",
    "demo",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vlastack",
        description="Build, train, evaluate and serve Vision-Language-Action robot policies.",
    )
    parser.add_argument("--version", action="version", version=f"vlastack {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            mod = importlib.import_module(f"vlastack.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"vlastack.cli.{name}":
                continue  # subcommand not implemented yet
            raise
        mod.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if argv[:1] == ["train"] and argv[1:2] and argv[1].startswith("--") and argv[1] != "--help":
        # `vlastack train --init-from CKPT ...`: no recipe first, so argparse's REMAINDER would
        # refuse the options; the train command parses its own arguments
        from vlastack.cli.train import main as train_main

        def func(_: argparse.Namespace) -> int:
            return train_main(argv[1:])

        args = argparse.Namespace(func=func)
    else:
        args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from vlastack.lifeline import TerminatedError, raise_on_sigterm

    previous = signal.getsignal(signal.SIGTERM)
    raise_on_sigterm()  # SIGTERM unwinds the command: its pools and workers shut down
    try:
        rc = args.func(args)
    except TerminatedError:
        print(
            f"terminated (SIGTERM): vlastack {args.command} stopped and shut its worker "
            "processes down",
            file=sys.stderr,
        )
        return 128 + signal.SIGTERM
    except VlastackError as exc:
        if os.environ.get("VLASTACK_DEBUG"):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
