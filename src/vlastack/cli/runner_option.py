"""The ``--runner`` option ``serve``, ``bench latency`` and ``eval`` share. The names are
spelled here (not imported from ``vlastack.runners``) so building the parser imports no torch;
tests/test_runner_parity.py checks they match ``vlastack.runners.RUNNER_CHOICES``."""

from __future__ import annotations

import argparse

RUNNER_NAMES = ("auto", "eager", "native", "cuda_graphs", "onnxruntime")


def add_runner_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--runner",
        default="auto",
        choices=RUNNER_NAMES,
        help="what runs the model's head, trunk and vision encoder (vlastack.runners): auto = the "
        "fastest that applies on the device (native on a CPU, eager elsewhere)",
    )
