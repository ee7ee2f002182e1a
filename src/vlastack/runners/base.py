"""What a runner is: it takes a built module (an action head, the observation trunk, the
vision encoder) and returns a callable with the same outputs, faster on some device. The
modules stay plain ``nn.Module``s written once; every inference speed-up lives in a runner, chosen by the
``Policy`` (``Policy.use_runner``; ``--runner`` on ``serve``, ``bench latency`` and ``eval``).

A runner is built for frozen inference weights: whatever it derives from them (weight packs,
plans, captured graphs, exported ONNX files) is owned by the runner object, never stored on the
modules, and is not re-checked on each call. After the weights change (training, a reloaded
state dict, a dtype or device move), build the runner again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

HeadFn = Callable[..., torch.Tensor]  # (context, context_mask, generator=None) → (B, H, A)
TrunkFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x, mask) → x
# (batch, film_cond) → (B, cams, T, n, D); a module with ``MultiCameraEncoder``'s interface
VisionFn = nn.Module


class Runner:
    """Base class. ``tolerance`` is (atol, rtol) against the eager runner on the same weights
    in float32 (what tests/test_runner_parity.py holds each runner to)."""

    name = ""
    description = ""
    tolerance: tuple[float, float] = (0.0, 0.0)

    def not_applicable(self, head: nn.Module, device: torch.device) -> str | None:
        """None when this runner can run ``head`` on ``device``; else the reason it cannot."""
        return None

    def head(self, head: nn.Module) -> HeadFn:
        """``head.sample_actions`` as this runner runs it."""
        raise NotImplementedError

    def trunk(self, trunk: nn.Module) -> TrunkFn | None:
        """``encoder_forward(trunk, x, mask)`` as this runner runs it; None: the module."""
        return None

    def vision(self, vision: nn.Module) -> VisionFn | None:
        """The VLA's ``MultiCameraEncoder`` as this runner runs it (same ``forward`` and
        ``encode_frames``), used at inference only (autograd off, eval mode); None: the module."""
        return None


def no_grad(fn: HeadFn) -> HeadFn:
    """``fn`` under ``torch.no_grad`` (a head's ``sample_actions`` is decorated so too)."""

    def run(*args: Any, **kwargs: Any) -> torch.Tensor:
        with torch.no_grad():
            return fn(*args, **kwargs)

    return run
