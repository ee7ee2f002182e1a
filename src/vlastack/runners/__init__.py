"""Runners: the one seam inference speed lives behind (see ``base``).

A runner takes a built module (an action head, the trunk, the vision encoder) and returns a
callable with the same outputs: ``eager`` (the modules themselves), ``native`` (the CPU fast path: native kernels and
prepacked plans per block type), ``cuda_graphs`` (recorded CUDA graphs of the head's sampler)
and ``onnxruntime`` (the exported ONNX sampler). ``Policy.use_runner`` plugs one into the
model's ``head_runner`` / ``trunk_runner`` / ``vision_runner`` slots; ``auto`` picks the fastest applicable on the
device (``default_runner``). This package sits above ``models``; models never import it.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch

from vlastack.errors import ConfigError
from vlastack.runners.base import Runner
from vlastack.runners.cuda_graphs import CudaGraphsRunner
from vlastack.runners.eager import EagerRunner
from vlastack.runners.native import NativeRunner

# name → the runner class, or "module:Class" imported on first use: the onnxruntime runner
# exports through vlastack.export, which sits above the policy that imports this package
RUNNERS: dict[str, type[Runner] | str] = {
    "eager": EagerRunner,
    "native": NativeRunner,
    "cuda_graphs": CudaGraphsRunner,
    "onnxruntime": "vlastack.runners.onnxruntime:OnnxRuntimeRunner",
}
RUNNER_CHOICES = ("auto", *RUNNERS)


def get_runner(name: str) -> Runner:
    if name not in RUNNERS:
        raise ConfigError(f"runner: unknown value {name!r}; choose one of {list(RUNNER_CHOICES)}")
    cls = RUNNERS[name]
    if isinstance(cls, str):
        module, attr = cls.split(":")
        cls = RUNNERS[name] = getattr(importlib.import_module(module), attr)
    return cls()


def default_runner(device: torch.device | str) -> str:
    """The fastest runner that applies everywhere on ``device``: ``native`` on a CPU (its
    plans fall back to the module for any block they do not cover), ``eager`` elsewhere
    (``cuda_graphs`` is opt-in: it refuses some heads and captures per shape)."""
    return "native" if torch.device(device).type == "cpu" else "eager"


def structure_key(model: Any) -> tuple:
    """What a runner built for ``model`` depends on: the identity of every module and parameter
    under its head, trunk and vision encoder, and each one's train/eval mode, and each parameter's in-place version counter. A swapped layer
    (int8 / ternary quantization of a loaded policy), an assigned parameter, a new head or an
    in-place update of a weight's values (``copy_`` under ``no_grad``, an optimizer step)
    changes it, so a runner never serves stale packed weights. Cheap (~tens of µs), so the
    ``Policy`` compares it before each chunk. (Writes through ``.data`` bypass the counter:
    call ``use_runner`` again after those.)"""
    names = ("head", "trunk", "vision")
    parts = [m for m in (getattr(model, n, None) for n in names) if m is not None]
    return tuple(
        (
            tuple(map(id, m.modules())),
            tuple(map(id, m.parameters())),
            tuple(-1 if p.is_inference() else p._version for p in m.parameters()),
            # BatchNorm's running statistics change inside its kernel (no version bump); the
            # counter it bumps from Python on each training step does
            tuple(-1 if b.is_inference() else b._version for b in m.buffers()),
            tuple(x.training for x in m.modules()),
        )
        for m in parts
    )


def clear_runners(model: Any) -> None:
    """Empty ``model``'s runner slots: it runs its own modules again (training goes on)."""
    model.head_runner = model.trunk_runner = model.vision_runner = None


def use_runner(model: Any, name: str = "auto") -> str:
    """Plug runner ``name`` into ``model``'s (a VLA's) ``head_runner`` / ``trunk_runner`` /
    ``vision_runner`` slots; returns the runner's name. ``auto`` picks ``default_runner``; a
    named runner that cannot run this head raises a ``ConfigError`` with its reason."""
    device = next(model.parameters()).device
    resolved = default_runner(device) if name == "auto" else name
    runner = get_runner(resolved)
    if model.config.action_tokens_in_lm or model.head is None:
        if resolved in ("eager", "native") or name == "auto":
            model.head_runner = None
            model.trunk_runner = runner.trunk(model.trunk) if model.trunk is not None else None
            model.vision_runner = _vision(runner, model)
            return resolved
        raise ConfigError(
            f"runner {resolved!r}: this model decodes actions as language-model tokens, which "
            "stops on the tokens it reads; use --runner eager or native"
        )
    why = runner.not_applicable(model.head, device)
    if why is not None:
        raise ConfigError(f"runner {resolved!r} cannot run head '{model.config.head}': {why}")
    model.head_runner = None if resolved == "eager" else runner.head(model.head)
    model.trunk_runner = runner.trunk(model.trunk) if model.trunk is not None else None
    model.vision_runner = _vision(runner, model)
    return resolved


def _vision(runner: Runner, model: Any) -> Any:
    """The slot holds the runner's encoder as a bound ``__call__``: a module assigned to a
    module attribute would become a submodule (its folded weights in the state dict)."""
    vision = getattr(model, "vision", None)
    fast = runner.vision(vision) if vision is not None else None
    return None if fast is None else fast.__call__


def vision_for_inference(vision: Any, device: torch.device | str) -> Any:
    """``vision`` (a ``MultiCameraEncoder`` in eval mode) as the device's default runner runs
    it, for callers that encode frames outside a ``Policy`` (the feature cache)."""
    return get_runner(default_runner(device)).vision(vision) or vision


__all__ = [
    "RUNNERS",
    "RUNNER_CHOICES",
    "Runner",
    "clear_runners",
    "default_runner",
    "get_runner",
    "structure_key",
    "use_runner",
    "vision_for_inference",
]
