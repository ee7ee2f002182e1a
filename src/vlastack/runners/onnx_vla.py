"""The ``onnxruntime`` runner of the imported flow VLAs (LeRobot SmolVLA, pi0, pi0.5):
``sample_actions`` with the prefix (VLM KV cache) and the expert's velocity run by ONNX Runtime.

The graphs are ``export.onnx_vla``'s ``<kind>_prefix`` and ``<kind>_step`` (the same graphs
``vlastack export onnx`` writes), exported on the first chunk into a temporary folder this object
owns, once per set of camera shapes (batch and token length are dynamic axes). The Euler loop
around the step is ``pretrained.lerobot.flow.euler_sample`` itself, with the velocity computed
by onnxruntime, so the loop's arithmetic is the eager one. Pre- and post-processing stay the
policy's (the runner replaces ``network.model.sample_actions`` only). Real-time chunking
(``infer_guided``) differentiates the expert and stays in PyTorch.

Built for frozen float32 weights on the CPU: call ``use_runner`` again after they change.
Tolerance against eager (measured on the fixtures, tests/test_export_onnx_vla.py): ~1e-6 absolute
on the normalized chunk.
"""

from __future__ import annotations

import tempfile
from typing import Any

import numpy as np
import torch

from vlastack.errors import ConfigError, MissingExtraError
from vlastack.profiling import stage


def not_applicable(model: torch.nn.Module) -> str | None:
    """Why the onnxruntime runner cannot run ``network.model``; None when it can."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return "onnxruntime is not installed (pip install 'vlastack[export]')"
    params = list(model.parameters())
    if any(p.device.type != "cpu" for p in params):
        return "it runs ONNX Runtime's CPU provider; this policy is not on the CPU"
    if any(p.dtype != torch.float32 for p in params):
        return "it runs float32 networks; this one holds other dtypes (config dtype bfloat16?)"
    if not params or any(type(m).__name__ in ("Int8Linear",) for m in model.modules()):
        return "an int8 policy runs its int8 kernels in PyTorch; export the float source instead"
    return None


class OrtFlowVLA:
    """``network.model.sample_actions(images, img_masks, tokens, lang_mask, state, noise)``
    through ONNX Runtime (module docstring)."""

    def __init__(self, fmt: str, model: Any, threads: int | None = None) -> None:
        why = not_applicable(model)
        if why is not None:
            if why.startswith("onnxruntime is not installed"):
                raise MissingExtraError("onnxruntime", "export", "the onnxruntime runner")
            raise ConfigError(f"--runner onnxruntime: {why}")
        self.fmt, self.model, self.threads = fmt, model, threads
        self._dir = tempfile.TemporaryDirectory(prefix="vlastack-ort-vla-")
        self._sessions: dict[tuple, tuple[Any, Any]] = {}

    def _pair(self, args: tuple, noise: torch.Tensor) -> tuple[Any, Any]:
        from vlastack.export.onnx import export_graph, ort_session
        from vlastack.export.onnx_vla import vla_graphs

        key = tuple(tuple(img.shape[1:]) for img in args[0])
        if key not in self._sessions:
            graphs = vla_graphs(self.fmt, self.model, args, noise, ["prefix", "step"])
            paths = [
                export_graph(g, f"{self._dir.name}/{g.name}_{len(self._sessions)}.onnx")
                for g in graphs
            ]
            prefix, step = (ort_session(p, self.threads) for p in paths)
            self._sessions[key] = (prefix, step)
        return self._sessions[key]

    def __call__(
        self,
        images: list[torch.Tensor],
        img_masks: list[torch.Tensor],
        tokens: torch.Tensor,
        lang_mask: torch.Tensor,
        state: torch.Tensor | None,
        noise: torch.Tensor,
    ) -> torch.Tensor:
        from vlastack.export.onnx_vla import num_steps, sample_inputs, state_role
        from vlastack.pretrained.lerobot.flow import euler_sample

        args = (images, img_masks, tokens, lang_mask, state)
        prefix, step = self._pair(args, noise)
        names, values = sample_inputs(self.fmt, *args, prefix_only=True)
        feed = {n: v.detach().cpu().numpy() for n, v in zip(names, values, strict=True)}
        with stage("backbone"):  # the stages eager marks (``bench latency`` per stage)
            pad, k, v = prefix.run(["prefix_pad", "prefix_k", "prefix_v"], feed)
        step_feed: dict[str, Any] = {"prefix_pad": pad, "prefix_k": k, "prefix_v": v}
        if state_role(self.fmt) == "suffix":
            assert state is not None
            step_feed["state"] = state.detach().cpu().numpy()

        def velocity(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            step_feed["x_t"] = np.ascontiguousarray(x_t.numpy())
            step_feed["t"] = np.ascontiguousarray(t.numpy())
            (out,) = step.run(["velocity"], step_feed)
            return torch.from_numpy(out)

        x = noise.detach().cpu().to(torch.float32)
        with stage("head"):
            return euler_sample(velocity, x, num_steps(self.model))


__all__ = ["OrtFlowVLA", "not_applicable"]
