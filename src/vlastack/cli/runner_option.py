"""The ``--runner`` option ``serve``, ``bench latency`` and ``eval`` share. The names are
spelled here (not imported from ``vlastack.runners``) so building the parser imports no torch;
tests/test_runner_parity.py checks they match ``vlastack.runners.RUNNER_CHOICES``."""

from __future__ import annotations

import argparse
from typing import Any

from vlastack.errors import ConfigError

RUNNER_NAMES = ("auto", "eager", "native", "cuda_graphs", "onnxruntime")


def add_runner_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--runner",
        default="auto",
        choices=RUNNER_NAMES,
        help="what runs the model's head, trunk and vision encoder (vlastack.runners): auto = the "
        "fastest that applies on the device (native on a CPU, eager elsewhere)",
    )


def apply_runner(policy: Any, name: str, checkpoint: Any, fmt_name: str) -> str:
    """``--runner`` on a policy of a registered format: its own ``use_runner`` where it has one
    (SmolVLA, pi0, pi0.5: eager or onnxruntime), else eager only."""
    if hasattr(policy, "use_runner"):
        return str(policy.use_runner(name))
    if name not in ("auto", "eager"):
        raise ConfigError(
            f"--runner {name} runs vlastack heads; {checkpoint} is a {fmt_name} "
            "checkpoint, which runs eagerly: drop --runner"
        )
    return "eager"
