"""The ``onnxruntime`` runner: the head's whole sampler exported to ONNX
(``vlastack.export.onnx``, the graph ``vlastack export --format onnx`` writes) and run by ONNX
Runtime on the CPU. Applies to heads whose ``export_kind`` has a whole-sampler graph: single
pass (ACT, L1), flow matching (Euler steps unrolled, without a head-side state token) and
diffusion with DDIM (steps unrolled); token heads decode autoregressively with data-dependent
stopping and DDPM draws noise every step, so they are not applicable and say why.

The graph is exported the first time a context length is seen (the ONNX graph fixes N; the
batch is dynamic) into a temporary folder the runner owns; the noise the sampler starts from
is drawn from the policy's generator exactly as the head draws it, so the chunk matches eager
for the same seed. Built for frozen weights: rebuild the runner after they change.
"""

from __future__ import annotations

import tempfile
from typing import Any

import torch
from torch import nn

from vlastack.errors import ConfigError
from vlastack.functional.noise import randn
from vlastack.runners.base import HeadFn, Runner


def _reason(head: nn.Module) -> str | None:
    kind = getattr(head, "export_kind", None)
    name = type(head).__name__
    if kind is None:
        return (
            f"{name} declares no export_kind (it decodes tokens autoregressively, stopping on data)"
        )
    if kind == "diffusion" and getattr(head, "sampler", "ddim") != "ddim":
        return f"{name} samples with {head.sampler!r}, which draws noise every step (use DDIM)"
    if kind == "flow" and getattr(head, "state_in", None) is not None:
        return f"{name} has its own state token (head_kwargs.state_dim > 0), not exportable yet"
    return None


class OrtHead:
    """``head.sample_actions(context, mask, generator)`` through ONNX Runtime."""

    def __init__(self, head: nn.Module, threads: int | None = None) -> None:
        why = _reason(head)
        if why is not None:
            raise ConfigError(f"onnxruntime runner: {why}")
        self.head: Any = head
        self.threads = threads
        self._dir = tempfile.TemporaryDirectory(prefix="vlastack-ort-")
        self._sessions: dict[tuple, tuple[Any, list[str]]] = {}

    def _session(self, context: torch.Tensor, mask: torch.Tensor) -> tuple[Any, list[str]]:
        from vlastack.export.onnx import export_graph, head_graphs, ort_session

        key = (tuple(context.shape[1:]), context.dtype)
        if key not in self._sessions:
            graphs = head_graphs(self.head, "head", context, mask, parts=["sampler"])
            (graph,) = [g for g in graphs if g.name == "head_sampler"]
            path = export_graph(graph, f"{self._dir.name}/sampler_{len(self._sessions)}.onnx")
            self._sessions[key] = (ort_session(path, self.threads), graph.input_names)
        return self._sessions[key]

    def __call__(
        self, context: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        self.head._check(context, mask)  # type: ignore[operator]
        session, names = self._session(context, mask)
        feed = {"context": context.detach().cpu().numpy(), "context_mask": mask.cpu().numpy()}
        if "noise" in names:
            B = context.shape[0]
            shape = (B, int(self.head.action_horizon), int(self.head.action_dim))
            feed["noise"] = randn(shape, generator, context.device).cpu().numpy()
        (out,) = session.run(["actions"], feed)
        return torch.from_numpy(out).to(context.device, context.dtype)


class OnnxRuntimeRunner(Runner):
    name = "onnxruntime"
    description = "the head's whole sampler as an ONNX graph run by ONNX Runtime (CPU)"
    # another engine's kernels and op fusions over the same float32 graph
    tolerance = (1e-4, 1e-4)

    def not_applicable(self, head: nn.Module, device: torch.device) -> str | None:
        if device.type != "cpu":
            return f"runs ONNX Runtime's CPU provider; this model is on {device}"
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return "onnxruntime is not installed (pip install 'vlastack[export]')"
        return _reason(head)

    def head(self, head: nn.Module) -> HeadFn:
        return OrtHead(head, threads=torch.get_num_threads())
