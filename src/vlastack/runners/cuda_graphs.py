"""The ``cuda_graphs`` runner: CUDA-graph replay of an action head's sampler
(``Policy.use_runner("cuda_graphs")``, ``--runner cuda_graphs`` / ``--cuda-graphs``).

At batch 1 a small head on a GPU is bound by kernel launches, not by the GPU: the flow sampler
(10 Euler steps × 4 blocks) launches ~600 kernels for 1.2 GFLOP and took 29.6 ms on an H100,
about what one CPU core needs (BENCHMARKS.md). A CUDA graph records those launches once per
context shape and replays them as one, which is what robot serving at batch 1 needs.

What a graph can hold: fixed shapes, no host synchronization, no host-side randomness. So
- the context, its mask and (for the stochastic heads) the initial noise are copied into static
  buffers before each replay; the noise is drawn from the policy's own seeded CPU generator, so
  graphed and eager sampling give the same chunk for the same seed;
- heads say whether they can be captured (``ActionHead.cuda_graph_support``): autoregressive
  decoders stop on data and DDPM draws fresh noise every step, so they run eagerly;
- the input checks that read data (every sample has a valid context token) run eagerly before
  each replay (``graph_capture`` tells ``ActionHead._check`` to stand aside while recording);
- a graph is keyed by context shape/dtype and by the storage of the head's parameters: moving or
  reloading the weights re-captures, in-place updates are seen by the replay.

Hand-written rather than ``torch.compile(mode="reduce-overhead")`` because the head's noise
comes from a CPU generator (``functional.noise``), which inductor's CUDA graphs skip, and because
capture must not depend on inductor being able to compile every head.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vlastack.errors import ConfigError
from vlastack.functional.noise import randn
from vlastack.models.layers.inference import graph_capture
from vlastack.runners.base import HeadFn, Runner


class GraphedHead:
    """Calls ``head.sample_actions(context, mask, generator)`` through captured CUDA graphs."""

    def __init__(self, head: Any, warmup: int = 3) -> None:
        ok, why = head.cuda_graph_support()
        if not ok:
            raise ConfigError(f"{type(head).__name__} cannot run as a CUDA graph: {why}")
        self.head = head
        self.warmup = int(warmup)
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, dict[str, torch.Tensor]]] = {}
        self.captures = 0  # how many graphs were recorded (tests, logs)
        self._any_device = False  # tests: record/replay emulated off the GPU

    def _param_key(self) -> tuple:
        return tuple(p.data_ptr() for p in self.head.parameters())

    def _run(self, bufs: dict[str, torch.Tensor]) -> torch.Tensor:
        if "noise" in bufs:
            return self.head.sample_actions(bufs["context"], bufs["mask"], noise=bufs["noise"])
        return self.head.sample_actions(bufs["context"], bufs["mask"])

    def _capture(self, context: torch.Tensor, mask: torch.Tensor) -> tuple:
        # ordinary tensors even under inference_mode, so later calls may copy into them from
        # plain no_grad code (Policy) as well as from inference_mode code (benchmarks)
        with torch.inference_mode(False):
            bufs = {"context": context.clone(), "mask": mask.clone()}
            if self.head.cuda_graph_noise:
                B = context.shape[0]
                shape = (B, self.head.action_horizon, self.head.action_dim)
                # the context's dtype, as the heads' own draws (ActionHead.initial_noise)
                dtype = context.dtype if context.is_floating_point() else None
                bufs["noise"] = torch.zeros(shape, device=context.device, dtype=dtype)
        with graph_capture():  # warm up on the same (capture-safe) path that is recorded
            graph, bufs["out"] = self._record(lambda: self._run(bufs), context.device)
        self.captures += 1
        return graph, bufs

    def _record(self, fn: Any, device: torch.device) -> tuple[Any, torch.Tensor]:
        """Warm ``fn`` up on a side stream, then record one call of it as a CUDA graph."""
        side = torch.cuda.Stream(device=device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):  # cuBLAS/cuDNN pick and allocate workspaces here
            for _ in range(self.warmup):
                fn()
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = fn()
        return graph, out

    def __call__(
        self,
        context: torch.Tensor,
        mask: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        if context.device.type != "cuda" and not self._any_device:
            raise ConfigError(
                f"CUDA graphs need the model on a CUDA device; the context is on {context.device}"
            )
        self.head._check(context, mask)  # the data-reading checks, eagerly (not capturable)
        key = (tuple(context.shape), context.dtype, tuple(mask.shape), self._param_key())
        if key not in self._graphs:
            self._graphs = {k: v for k, v in self._graphs.items() if k[3] == key[3]}
            self._graphs[key] = self._capture(context, mask)
        graph, bufs = self._graphs[key]
        bufs["context"].copy_(context)
        bufs["mask"].copy_(mask)
        if "noise" in bufs:
            n = bufs["noise"]
            # drawn in float32 and cast by the copy: the eager head's noise for the same seed
            bufs["noise"].copy_(randn(tuple(n.shape), generator, n.device))
        graph.replay()
        return bufs["out"].clone()


__all__ = ["CudaGraphsRunner", "GraphedHead"]


class CudaGraphsRunner(Runner):
    name = "cuda_graphs"
    description = "the head's sampler recorded once per shape as a CUDA graph and replayed"
    # the same kernels replayed: equal to eager on the GPU up to cuBLAS algorithm choice
    tolerance = (1e-5, 1e-5)

    def not_applicable(self, head: nn.Module, device: torch.device) -> str | None:
        if device.type != "cuda":
            return f"needs a CUDA GPU (this model is on {device})"
        ok, why = head.cuda_graph_support()  # type: ignore[operator]
        return None if ok else f"{type(head).__name__} cannot run as a CUDA graph: {why}"

    def head(self, head: nn.Module) -> HeadFn:
        return GraphedHead(head)
