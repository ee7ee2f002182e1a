"""ONNX export of the continuous action heads: the per-step network and the whole sampling loop.

What is built follows the head's ``export_kind`` (``ActionHead``), never its registry name; graphs
are named ``<head>_<part>`` after the name the model config uses. Per kind: ``prefix`` (context → the per-layer K/V every step reuses, π0's prefix cache), ``step``
(one velocity / ε evaluation given that cache as inputs; the single decoder pass for l1 / ACT),
and ``sampler`` (context + fixed noise → action chunk, the Euler or DDIM steps unrolled). Exported
with the TorchScript exporter (``dynamo=False``: the dynamo one needs onnxscript) and checked with
onnxruntime against PyTorch. Batch size is dynamic; the context length N is fixed by the model.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vlastack import atomic
from vlastack.errors import ConfigError, MissingExtraError
from vlastack.export.onnx_ops import typed_full

# The built-in heads that export (each declares an ``export_kind``); a plugin's head exports
# through the same path by declaring one of ``GRAPH_FAMILIES``.
CONTINUOUS_HEADS = ("flow_matching", "diffusion", "l1", "mlp", "act")
EXPORT_PARTS = ("prefix", "step", "sampler")
DEFAULT_OPSET = 17


def _stack_kv(kvs: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-layer K/V list → two (L, B, heads, N, head_dim) tensors (one ONNX input each)."""
    return torch.stack([k for k, _ in kvs]), torch.stack([v for _, v in kvs])


def _unstack_kv(k: torch.Tensor, v: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(k[i], v[i]) for i in range(k.shape[0])]


# ---- flow matching (π0 action expert) ---------------------------------------------------------


class FlowPrefix(nn.Module):
    """context (B, N, D), context_mask (B, N) → prefix_k, prefix_v (L, B, h, N, hd), attn_mask."""

    def __init__(self, head: Any) -> None:
        super().__init__()
        self.head = head

    def forward(self, context: torch.Tensor, context_mask: torch.Tensor):
        cache = self.head.prefix_cache(context, context_mask.bool())
        k, v = _stack_kv(cache.kvs)
        return k, v, cache.mask


class FlowVelocity(nn.Module):
    """One velocity evaluation v(x_t, t) (B, H, A) with the prefix cache passed in as tensors."""

    def __init__(self, head: Any) -> None:
        super().__init__()
        self.head = head

    def forward(self, x_t, t, prefix_k, prefix_v, attn_mask):
        from vlastack.models.action_heads.flow_matching import FlowPrefixCache

        cache = FlowPrefixCache(_unstack_kv(prefix_k, prefix_v), attn_mask.bool(), None)
        return self.head.velocity(x_t, t, cache)


class FlowSampler(nn.Module):
    """context, context_mask, noise (B, H, A) → actions: prefix once, then the Euler steps unrolled."""

    def __init__(self, head: Any, num_steps: int | None = None) -> None:
        super().__init__()
        self.head = head
        self.num_steps = int(num_steps or head.num_steps)

    def forward(self, context, context_mask, noise):
        return self.head.sample_actions(
            context, context_mask.bool(), noise=noise, num_steps=self.num_steps
        )


# ---- diffusion (Diffusion Policy ε-net) --------------------------------------------------------


class DiffusionPrefix(nn.Module):
    """context, context_mask → ctx_k, ctx_v (L, B, h, N, hd) and pooled context (B, W)."""

    def __init__(self, head: Any) -> None:
        super().__init__()
        self.head = head

    def forward(self, context, context_mask):
        kvs, pooled = self.head._prefix(context, context_mask.bool())
        k, v = _stack_kv(kvs)
        return k, v, pooled


class DiffusionEps(nn.Module):
    """ε̂(x_t, t) (B, H, A); ``t`` (B,) int64 timesteps."""

    def __init__(self, head: Any) -> None:
        super().__init__()
        self.head = head

    def forward(self, x_t, t, ctx_k, ctx_v, pooled, context_mask):
        return self.head.predict_noise(
            x_t, t, _unstack_kv(ctx_k, ctx_v), pooled, context_mask.bool()
        )


class UnetPrefix(nn.Module):
    """context, context_mask → pooled context (B, W) (the U-Net denoiser's only context input)."""

    def __init__(self, head: Any) -> None:
        super().__init__()
        self.head = head

    def forward(self, context, context_mask):
        return self.head._prefix(context, context_mask.bool())[1]


class UnetEps(nn.Module):
    """ε̂(x_t, t | pooled) (B, H, A) of the U-Net denoiser; ``t`` (B,) int64 timesteps."""

    def __init__(self, head: Any) -> None:
        super().__init__()
        self.head = head

    def forward(self, x_t, t, pooled):
        return self.head.predict_noise(x_t, t, None, pooled, None)


class DiffusionSampler(nn.Module):
    """context, context_mask, x_T (B, H, A) → x̂_0 with the DDIM steps unrolled (η = 0)."""

    def __init__(self, head: Any, num_inference_steps: int | None = None) -> None:
        super().__init__()
        if head.sampler != "ddim":
            raise ConfigError(
                f"the diffusion head samples with {head.sampler!r}; only the deterministic 'ddim' "
                "loop can be exported whole (DDPM draws fresh noise every step): export parts "
                "'prefix' and 'step' and run the loop outside, or set head_kwargs.sampler='ddim'"
            )
        self.head = head
        self.num_inference_steps = int(num_inference_steps or head.num_inference_steps)

    def forward(self, context, context_mask, noise):
        from vlastack.functional.diffusion_sampling import sample_loop

        head = self.head
        mask = context_mask.bool()
        kvs, pooled = head._prefix(context, mask)

        def eps_fn(x: torch.Tensor, t: int) -> torch.Tensor:
            tt = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
            return head.predict_noise(x, tt, kvs, pooled, mask)

        return sample_loop(
            eps_fn,
            noise,
            head.alphas_cumprod,
            self.num_inference_steps,
            "ddim",
            head.clip_sample,
            clip_range=head.clip_range,
        )


# ---- single-pass heads --------------------------------------------------------------------------


class DirectSampler(nn.Module):
    """context, context_mask → actions for heads decoded in one pass (l1: OFT; act: z = 0)."""

    def __init__(self, head: Any) -> None:
        super().__init__()
        self.head = head

    def forward(self, context, context_mask):
        return self.head.sample_actions(context, context_mask.bool())


# ---- export -------------------------------------------------------------------------------------


@dataclass
class ExportedGraph:
    """One ONNX file: its torch module, example inputs, names and dynamic axes."""

    name: str
    module: nn.Module
    inputs: tuple[torch.Tensor, ...]
    input_names: list[str]
    output_names: list[str]
    dynamic_axes: dict[str, dict[int, str]] = field(default_factory=dict)


def _batch_axes(names: Iterable[str], kv_names: Iterable[str] = ()) -> dict[str, dict[int, str]]:
    axes = {n: {0: "batch"} for n in names}
    for n in kv_names:
        axes[n] = {1: "batch"}  # (L, B, heads, N, head_dim)
    return axes


def export_kind(head: Any) -> str | None:
    """The graph family ``head`` declares (``ActionHead.export_kind``), None for none."""
    return getattr(head, "export_kind", None)


def head_graphs(
    head: nn.Module,
    head_name: str,
    context: torch.Tensor,
    context_mask: torch.Tensor,
    parts: Iterable[str] = EXPORT_PARTS,
    seed: int = 0,
) -> list[ExportedGraph]:
    """The exportable graphs of ``head`` (registered as ``head_name``, which names the graphs)
    with example inputs built from ``context`` (B, N, D); the family is the head's
    ``export_kind``."""
    parts = list(parts)
    bad = [p for p in parts if p not in EXPORT_PARTS]
    if bad:
        raise ConfigError(f"ONNX export parts {bad} unknown; choose from {list(EXPORT_PARTS)}")
    kind = export_kind(head)
    if kind not in GRAPH_FAMILIES:
        raise ConfigError(
            f"head {head_name!r} ({type(head).__name__}) is not a continuous head; ONNX export "
            f"covers heads that declare an export_kind in {sorted(GRAPH_FAMILIES)} (built in: "
            f"{CONTINUOUS_HEADS}; token heads decode autoregressively with data-dependent stopping)"
        )
    head.eval()
    g = torch.Generator().manual_seed(seed)
    return GRAPH_FAMILIES[kind](head, head_name, context, context_mask.bool(), parts, g)


def _single_pass_graphs(
    head: Any,
    name: str,
    context: torch.Tensor,
    mask: torch.Tensor,
    parts: list[str],
    g: torch.Generator,
) -> list[ExportedGraph]:
    """One decoder pass is both the per-step network and the whole sampler (l1 / ACT)."""
    if "step" not in parts and "sampler" not in parts:
        return []
    return [
        ExportedGraph(
            f"{name}_sampler",
            DirectSampler(head),
            (context, mask),
            ["context", "context_mask"],
            ["actions"],
            _batch_axes(["context", "context_mask", "actions"]),
        )
    ]


def _noise(head: Any, context: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return torch.randn(
        context.shape[0], int(head.action_horizon), int(head.action_dim), generator=g
    )


def _flow_graphs(
    head: Any,
    name: str,
    context: torch.Tensor,
    mask: torch.Tensor,
    parts: list[str],
    g: torch.Generator,
) -> list[ExportedGraph]:
    """π0's action expert: prefix K/V once, one velocity step, the Euler loop unrolled."""
    B = context.shape[0]
    noise = _noise(head, context, g)
    if getattr(head, "state_in", None) is not None:
        raise ConfigError(
            f"{name} head with its own state token (head_kwargs.state_dim > 0) is not "
            "exportable yet; the VLA passes state as a prefix token instead (state_dim)"
        )
    out: list[ExportedGraph] = []
    k, v, attn_mask = FlowPrefix(head)(context, mask)
    if "prefix" in parts:
        out.append(
            ExportedGraph(
                f"{name}_prefix",
                FlowPrefix(head),
                (context, mask),
                ["context", "context_mask"],
                ["prefix_k", "prefix_v", "attn_mask"],
                _batch_axes(["context", "context_mask", "attn_mask"], ["prefix_k", "prefix_v"]),
            )
        )
    if "step" in parts:
        t = torch.rand(B, generator=g)
        out.append(
            ExportedGraph(
                f"{name}_step",
                FlowVelocity(head),
                (noise, t, k, v, attn_mask),
                ["x_t", "t", "prefix_k", "prefix_v", "attn_mask"],
                ["velocity"],
                _batch_axes(["x_t", "t", "attn_mask", "velocity"], ["prefix_k", "prefix_v"]),
            )
        )
    if "sampler" in parts:
        out.append(
            ExportedGraph(
                f"{name}_sampler",
                FlowSampler(head),
                (context, mask, noise),
                ["context", "context_mask", "noise"],
                ["actions"],
                _batch_axes(["context", "context_mask", "noise", "actions"]),
            )
        )
    return out


def _diffusion_graphs(
    head: Any,
    name: str,
    context: torch.Tensor,
    mask: torch.Tensor,
    parts: list[str],
    g: torch.Generator,
) -> list[ExportedGraph]:
    """Diffusion Policy's ε-net: context K/V + pooled once, one ε step, the DDIM loop unrolled."""
    B = context.shape[0]
    noise = _noise(head, context, g)
    if getattr(head, "denoiser", "transformer") == "unet":
        return _unet_graphs(head, name, context, mask, noise, parts, g)
    out: list[ExportedGraph] = []
    k, v, pooled = DiffusionPrefix(head)(context, mask)
    if "prefix" in parts:
        out.append(
            ExportedGraph(
                f"{name}_prefix",
                DiffusionPrefix(head),
                (context, mask),
                ["context", "context_mask"],
                ["ctx_k", "ctx_v", "pooled"],
                _batch_axes(["context", "context_mask", "pooled"], ["ctx_k", "ctx_v"]),
            )
        )
    if "step" in parts:
        t = torch.randint(0, int(head.num_train_timesteps), (B,), generator=g)
        out.append(
            ExportedGraph(
                f"{name}_step",
                DiffusionEps(head),
                (noise, t, k, v, pooled, mask),
                ["x_t", "t", "ctx_k", "ctx_v", "pooled", "context_mask"],
                ["eps"],
                _batch_axes(["x_t", "t", "pooled", "context_mask", "eps"], ["ctx_k", "ctx_v"]),
            )
        )
    if "sampler" in parts and getattr(head, "sampler", "ddim") == "ddim":
        out.append(_diffusion_sampler_graph(head, name, context, mask, noise))
    return out


def _skipped(head: Any, name: str, parts: list[str]) -> dict[str, str]:
    """Graphs a head of this family cannot export whole, and why (the manifest's ``skipped``)."""
    if "sampler" in parts and export_kind(head) == "diffusion" and head.sampler != "ddim":
        return {
            f"{name}_sampler": f"sampler {head.sampler!r} draws noise every step; run the "
            "'step' graph in a loop (only DDIM is exported whole)"
        }
    return {}


def _diffusion_sampler_graph(
    head: Any, name: str, context: torch.Tensor, mask: torch.Tensor, noise: torch.Tensor
) -> ExportedGraph:
    """The whole DDIM loop as one graph (either denoiser)."""
    return ExportedGraph(
        f"{name}_sampler",
        DiffusionSampler(head),
        (context, mask, noise),
        ["context", "context_mask", "noise"],
        ["actions"],
        _batch_axes(["context", "context_mask", "noise", "actions"]),
    )


def _unet_graphs(
    head: Any,
    name: str,
    context: torch.Tensor,
    mask: torch.Tensor,
    noise: torch.Tensor,
    parts: list[str],
    g: torch.Generator,
) -> list[ExportedGraph]:
    """The diffusion head with DP-C's U-Net: the context reaches the denoiser only through its
    pooled projection, so the prefix graph outputs ``pooled`` alone and the step takes it."""
    B = context.shape[0]
    out: list[ExportedGraph] = []
    if "prefix" in parts:
        out.append(
            ExportedGraph(
                f"{name}_prefix",
                UnetPrefix(head),
                (context, mask),
                ["context", "context_mask"],
                ["pooled"],
                _batch_axes(["context", "context_mask", "pooled"]),
            )
        )
    if "step" in parts:
        t = torch.randint(0, int(head.num_train_timesteps), (B,), generator=g)
        pooled = UnetPrefix(head)(context, mask)
        out.append(
            ExportedGraph(
                f"{name}_step",
                UnetEps(head),
                (noise, t, pooled),
                ["x_t", "t", "pooled"],
                ["eps"],
                _batch_axes(["x_t", "t", "pooled", "eps"]),
            )
        )
    if "sampler" in parts and head.sampler == "ddim":
        out.append(_diffusion_sampler_graph(head, name, context, mask, noise))
    return out


GraphFamily = Callable[
    [Any, str, torch.Tensor, torch.Tensor, list[str], torch.Generator], list[ExportedGraph]
]
# ``ActionHead.export_kind`` → the graphs of that family: ``(head, name, context, context_mask,
# parts, generator) -> [ExportedGraph]``.
GRAPH_FAMILIES: dict[str, GraphFamily] = {
    "single_pass": _single_pass_graphs,
    "flow": _flow_graphs,
    "diffusion": _diffusion_graphs,
}


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        # Tracer warnings about Python-side shape checks (constant N, the head's input checks)
        # and the exporter's deprecation notice; the parity check below is the real test.
        warnings.simplefilter("ignore")
        yield


def export_graph(graph: ExportedGraph, path: str | Path, opset: int = DEFAULT_OPSET) -> Path:
    """Trace ``graph`` to ``path`` (written under a temporary name, then renamed)."""
    path = Path(path)
    with atomic.replacing(path) as tmp, _quiet(), torch.no_grad(), typed_full(opset):
        torch.onnx.export(
            graph.module,
            graph.inputs,
            str(tmp),
            input_names=graph.input_names,
            output_names=graph.output_names,
            dynamic_axes=graph.dynamic_axes,  # type: ignore[arg-type]
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    return path


def _ort() -> Any:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise MissingExtraError("onnxruntime", "export", "running exported ONNX graphs") from exc
    return ort


def ort_session(path: str | Path, threads: int | None = None) -> Any:
    ort = _ort()
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _feed(graph: ExportedGraph, inputs: tuple[torch.Tensor, ...] | None = None) -> dict:
    vals = inputs if inputs is not None else graph.inputs
    return {n: x.detach().cpu().numpy() for n, x in zip(graph.input_names, vals)}


def parity(graph: ExportedGraph, session: Any, inputs: tuple[torch.Tensor, ...] | None = None):
    """Max |onnxruntime − PyTorch| over every output for ``inputs`` (default: the example ones)."""
    vals = inputs if inputs is not None else graph.inputs
    with torch.no_grad():
        ref = graph.module(*vals)
    refs = ref if isinstance(ref, tuple) else (ref,)
    got = session.run(graph.output_names, _feed(graph, vals))
    err = 0.0
    for r, o in zip(refs, got):
        r_np = r.detach().cpu().numpy()
        if r_np.shape != o.shape:
            raise AssertionError(f"{graph.name}: ONNX output shape {o.shape} vs torch {r_np.shape}")
        if r_np.dtype == np.bool_:
            err = max(err, float((r_np != o).sum()))
        else:
            err = max(err, float(np.abs(r_np.astype(np.float64) - o).max()))
    return err


def example_context(model: Any, batch_size: int = 1, seed: int = 0):
    """Real tokens the head of ``model`` reads for a random observation: context (B, N, D),
    mask (B, N) (``head_context``: RT-H's motion or a hierarchy's subtask token included)."""
    cfg = model.config
    g = torch.Generator().manual_seed(seed)
    H, W = cfg.image_size
    batch: dict[str, Any] = {
        f"observation.images.{c}": torch.rand(batch_size, cfg.obs_horizon, 3, H, W, generator=g)
        for c in cfg.cameras
    }
    if cfg.state_dim:
        batch["observation.state"] = torch.randn(
            batch_size, cfg.obs_horizon, cfg.state_dim, generator=g
        )
    batch["task"] = ["pick up the object"] * batch_size
    with torch.no_grad():
        context, mask = model.head_context(batch)
    return context, mask


def export_model_heads(
    model: Any,
    out_dir: str | Path,
    parts: Iterable[str] = EXPORT_PARTS,
    *,
    opset: int = DEFAULT_OPSET,
    check: bool = True,
    atol: float = 1e-4,
) -> dict[str, Any]:
    """Export ``model.head``'s graphs to ``out_dir``; with ``check``, verify each with onnxruntime
    on the example inputs and on a batch of 3 (dynamic batch) and record the max error."""
    cfg = model.config
    if cfg.action_tokens_in_lm or model.head is None:
        raise ConfigError("the model decodes action tokens with its LM; there is no head to export")
    if cfg.motion_hierarchy:
        raise ConfigError(
            "RT-H models append a predicted motion token to the context; export the head after "
            "that step is implemented in ONNX (not yet)"
        )
    fs = getattr(model, "foresight", None)  # models/foresight.py: steps beyond the head
    if fs is not None and (fs.subgoal is not None or fs.rank_samples > 1):
        what = "generate CoT-VLA subgoal tokens" if fs.subgoal else "rank sampled chunks"
        raise ConfigError(
            f"this model's policy steps {what} with modules the ONNX head graphs do not hold "
            "(not exported yet); serve the checkpoint with `vlastack serve` (PyTorch) instead"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    context, mask = example_context(model, 1)
    context3, mask3 = example_context(model, 3, seed=1)
    parts = list(parts)
    graphs = head_graphs(model.head, cfg.head, context, mask, parts)
    graphs3 = {g.name: g for g in head_graphs(model.head, cfg.head, context3, mask3, parts, seed=1)}
    manifest: dict[str, Any] = {
        "head": cfg.head,
        "context_len": int(context.shape[1]),
        "context_dim": int(context.shape[2]),
        "action_horizon": int(cfg.action_horizon),
        "action_dim": int(cfg.action_dim),
        "opset": opset,
        "torch": torch.__version__,
        "graphs": {},
    }
    skipped = _skipped(model.head, cfg.head, parts)
    if skipped:
        manifest["skipped"] = skipped
    return write_graphs(graphs, graphs3, out, manifest, opset=opset, check=check, atol=atol)


def write_graphs(
    graphs: list[ExportedGraph],
    graphs3: dict[str, ExportedGraph],
    out: Path,
    manifest: dict[str, Any],
    *,
    opset: int,
    check: bool,
    atol: float,
) -> dict[str, Any]:
    """Export each graph to ``out/<name>.onnx``, record it in ``manifest["graphs"]`` and, with
    ``check``, its max |onnxruntime - PyTorch| at batch 1 and at batch 3 (``graphs3``: the same
    graphs on batch-3 inputs; above ``atol`` is a ConfigError); write ``manifest.json``."""
    for graph in graphs:
        path = export_graph(graph, out / f"{graph.name}.onnx", opset)
        entry: dict[str, Any] = {
            "file": path.name,
            "inputs": {
                n: [int(d) for d in x.shape] for n, x in zip(graph.input_names, graph.inputs)
            },
            "outputs": graph.output_names,
            "dynamic_axes": {k: dict(v) for k, v in graph.dynamic_axes.items()},
        }
        if check:
            sess = ort_session(path)
            err = max(parity(graph, sess), parity(graph, sess, graphs3[graph.name].inputs))
            entry["max_abs_error"] = err
            if err > atol:
                raise ConfigError(
                    f"{path}: onnxruntime differs from PyTorch by {err:.3g} (> atol {atol}); "
                    "the export is not faithful for this model"
                )
        manifest["graphs"][graph.name] = entry
    atomic.write_text(out / "manifest.json", json.dumps(manifest, indent=2))
    return manifest


def export_onnx(
    checkpoint: str | Path,
    out_dir: str | Path,
    parts: Iterable[str] = EXPORT_PARTS,
    *,
    opset: int = DEFAULT_OPSET,
    check: bool = True,
    atol: float = 1e-4,
) -> dict[str, Any]:
    """Export the action head of a checkpoint to ``out_dir`` (``<head>_<part>.onnx`` +
    ``manifest.json``); copies ``normalization.json`` so actions can be un-normalized outside.
    A folder a registered checkpoint format claims (an imported LeRobot policy) is a ConfigError:
    ``export.onnx_lerobot.export_any_onnx`` (the CLI's entry) exports both kinds."""
    from vlastack.export.quantize import quantization_info
    from vlastack.policy import load_vla
    from vlastack.policy_formats import detect_policy_format

    fmt = detect_policy_format(checkpoint)
    if fmt is not None:
        raise ConfigError(
            f"{checkpoint} is an imported {fmt.name!r} checkpoint; export it with "
            "vlastack.export.onnx_lerobot.export_any_onnx (what `vlastack export onnx` calls)"
        )
    # An int8 checkpoint exports as float weights that lie on the int8 grid (same accuracy);
    # a ternary one exports its BitLinear layers (weights and activations fake-quantized).
    info = quantization_info(checkpoint)
    ckpt, model = load_vla(checkpoint)
    manifest = export_model_heads(model, out_dir, parts, opset=opset, check=check, atol=atol)
    manifest["checkpoint"] = str(ckpt.path)
    manifest["quantization"] = info
    out = Path(out_dir)
    atomic.write_text(out / "normalization.json", json.dumps(ckpt.normalization, indent=2))
    atomic.write_text(out / "manifest.json", json.dumps(manifest, indent=2))
    return manifest


def load_manifest(out_dir: str | Path) -> Mapping[str, Any]:
    return json.loads((Path(out_dir) / "manifest.json").read_text())


__all__ = [
    "CONTINUOUS_HEADS",
    "EXPORT_PARTS",
    "DiffusionEps",
    "DiffusionPrefix",
    "DiffusionSampler",
    "DirectSampler",
    "GRAPH_FAMILIES",
    "FlowPrefix",
    "FlowSampler",
    "FlowVelocity",
    "example_context",
    "export_graph",
    "export_kind",
    "export_model_heads",
    "export_onnx",
    "head_graphs",
    "ort_session",
    "parity",
]
