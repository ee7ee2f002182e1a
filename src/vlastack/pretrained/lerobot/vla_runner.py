"""The runner slot of the imported flow VLAs (SmolVLA, pi0, pi0.5): what runs
``network.model.sample_actions`` for ``infer`` / ``infer_batch``. ``eager`` (``auto`` too) is
the modules themselves; ``onnxruntime`` is ``runners.onnx_vla.OrtFlowVLA`` (the prefix and
velocity graphs of ``export.onnx_vla`` in ONNX Runtime). Other runners (``native``,
``cuda_graphs``) accelerate vlastack's own heads and say they do not apply here.

The runner module is imported by name on first use (as ``runners.RUNNERS`` does for its
onnxruntime runner): it exports through ``vlastack.export``, which sits above the policies.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import torch

from vlastack.errors import ConfigError

VLA_RUNNERS = ("auto", "eager", "onnxruntime")


class RunnerSlot:
    """Mixed into the SmolVLA / pi0 policies: ``use_runner(name)`` and ``sample_fn``."""

    network: Any
    runner: str = "eager"
    _runner_fn: Callable[..., torch.Tensor] | None = None

    def runner_format(self) -> str:
        """The graph family of ``export.onnx_vla`` (``lerobot_smolvla``, ``lerobot_pi0``...)."""
        raise NotImplementedError

    def use_runner(self, name: str = "auto") -> str:
        """Run the sampler with runner ``name`` from now on (module docstring); returns the
        runner's name. Built for the weights as they are now: call again after changing them."""
        if name in ("auto", "eager"):
            self.runner, self._runner_fn = "eager", None
            return self.runner
        if name != "onnxruntime":
            raise ConfigError(
                f"--runner {name} accelerates vlastack's own heads; an imported "
                f"{type(self).__name__} runs with one of {', '.join(VLA_RUNNERS)}"
            )
        module = importlib.import_module("vlastack.runners.onnx_vla")
        self._runner_fn = module.OrtFlowVLA(
            self.runner_format(), self.network.model, threads=torch.get_num_threads()
        )
        self.runner = name
        return name

    @property
    def sample_fn(self) -> Callable[..., torch.Tensor]:
        """``sample_actions(images, img_masks, tokens, lang_mask, state, noise)`` as the
        chosen runner runs it."""
        return self._runner_fn or self.network.model.sample_actions


__all__ = ["RunnerSlot", "VLA_RUNNERS"]
