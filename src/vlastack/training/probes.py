"""Validation probes: open-loop action error on held-out episodes and language sensitivity.

Open-loop: the policy predicts an action chunk at every held-out frame; the error against the
recorded chunk is reported per action dimension in the dataset's original units, and a plot of
predicted vs recorded actions is saved. Language sensitivity: the same batch is re-predicted
with the instruction blanked or swapped for another task's (same noise seed); a near-zero change
means the policy ignores language, the failure users report as "the robot does the same thing
whatever I ask".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlastack import atomic
from vlastack.batch import Batch, as_batch


def to_device(batch: Mapping[str, Any], device: torch.device) -> Batch:
    """The batch on ``device``, as a ``Batch`` (keys checked: one spelling each)."""
    return as_batch(batch).map(lambda v: v.to(device, non_blocking=True))


def normalize_batch(normalizer: Any, batch: Mapping[str, Any]) -> Batch:
    if normalizer is None:
        return as_batch(batch)
    out = normalizer.normalize(dict(batch))
    return as_batch(out if out is not None else batch)


SampleFn = Callable[[Batch], torch.Tensor]


def seeded_sample(
    sample_fn: SampleFn, batch: Batch, seed: int, autocast: Callable[[], AbstractContextManager]
) -> torch.Tensor:
    """``sample_fn(batch)`` (B, H, A) with a fixed noise seed, leaving the global RNG untouched."""
    devices = [batch_device(batch)] if batch_device(batch).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        with autocast():
            return sample_fn(batch).float()


def batch_device(batch: Batch) -> torch.device:
    for v in batch.values():
        if isinstance(v, torch.Tensor):
            return v.device
    return torch.device("cpu")


@dataclass
class OpenLoopResult:
    mse_per_dim: np.ndarray  # (A,) in original units squared
    l1_per_dim: np.ndarray  # (A,) in original units
    num_samples: int
    # episode -> (frame indices, predicted first action (N, A), recorded first action (N, A))
    traces: dict[int, tuple[list[int], list[np.ndarray], list[np.ndarray]]] = field(
        default_factory=dict
    )

    def metrics(self, prefix: str = "val/") -> dict[str, float]:
        out = {
            f"{prefix}action_mse": float(self.mse_per_dim.mean()),
            f"{prefix}action_l1": float(self.l1_per_dim.mean()),
        }
        for i, (m, a) in enumerate(zip(self.mse_per_dim, self.l1_per_dim)):
            out[f"{prefix}action_mse/dim{i}"] = float(m)
            out[f"{prefix}action_l1/dim{i}"] = float(a)
        return out


@torch.no_grad()
def open_loop_eval(
    sample_fn: SampleFn,
    normalizer: Any,
    batches: Iterable[Batch],
    device: torch.device,
    max_batches: int,
    seed: int = 0,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
    trace_episodes: int = 3,
) -> OpenLoopResult:
    """Per-dimension error of predicted chunks against recorded ones, padding excluded."""
    sq_sum: torch.Tensor | None = None
    abs_sum: torch.Tensor | None = None
    count: torch.Tensor | None = None
    n = 0
    traces: dict[int, tuple[list[int], list[np.ndarray], list[np.ndarray]]] = {}
    for bi, raw in enumerate(batches):
        if bi >= max_batches:
            break
        raw = to_device(raw, device)
        pred_n = seeded_sample(sample_fn, normalize_batch(normalizer, raw), seed + bi, autocast)
        pred = normalizer.unnormalize_actions(pred_n) if normalizer is not None else pred_n
        true = raw["action"].float()  # (B, H, A) original units
        h = min(pred.shape[1], true.shape[1])
        pred, true = pred[:, :h].float(), true[:, :h]
        valid = ~raw["action_is_pad"][:, :h] if "action_is_pad" in raw else None
        w = valid.float()[..., None].expand_as(true) if valid is not None else torch.ones_like(true)
        err = pred - true
        sq = (err.square() * w).sum(dim=(0, 1))
        ab = (err.abs() * w).sum(dim=(0, 1))
        cnt = w.sum(dim=(0, 1))
        sq_sum = sq if sq_sum is None else sq_sum + sq
        abs_sum = ab if abs_sum is None else abs_sum + ab
        count = cnt if count is None else count + cnt
        n += true.shape[0]
        eps = raw.get("episode_index")
        idx = raw.get("frame_index", raw.get("index"))
        if eps is not None:
            for j, e in enumerate(torch.as_tensor(eps).reshape(-1).tolist()):
                if e not in traces and len(traces) >= trace_episodes:
                    continue
                t = traces.setdefault(int(e), ([], [], []))
                t[0].append(int(torch.as_tensor(idx).reshape(-1)[j]) if idx is not None else j)
                t[1].append(pred[j, 0].cpu().numpy())
                t[2].append(true[j, 0].cpu().numpy())
    if sq_sum is None or abs_sum is None or count is None:
        return OpenLoopResult(np.zeros(0), np.zeros(0), 0, {})
    count = count.clamp_min(1.0)
    return OpenLoopResult(
        (sq_sum / count).cpu().numpy(), (abs_sum / count).cpu().numpy(), n, traces
    )


def plot_open_loop(
    result: OpenLoopResult, path: Path, action_names: list[str] | None = None, max_dims: int = 8
) -> Any:
    """Predicted vs recorded first action of each chunk over time; one column per episode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    eps = sorted(result.traces)
    if not eps:
        return None
    dims = min(max_dims, len(result.traces[eps[0]][1][0]))
    fig, axes = plt.subplots(
        dims, len(eps), figsize=(3.2 * len(eps), 1.6 * dims), squeeze=False, sharex="col"
    )
    for c, e in enumerate(eps):
        frames, pred, true = result.traces[e]
        order = np.argsort(frames)
        x = np.asarray(frames)[order]
        p = np.stack(pred)[order]
        t = np.stack(true)[order]
        for d in range(dims):
            ax = axes[d][c]
            ax.plot(x, t[:, d], color="black", lw=1.2, label="recorded")
            ax.plot(x, p[:, d], color="tab:orange", lw=1.0, ls="--", label="predicted")
            if c == 0:
                name = action_names[d] if action_names and d < len(action_names) else f"a{d}"
                ax.set_ylabel(name, fontsize=8)
            if d == 0:
                ax.set_title(f"episode {e}", fontsize=9)
            ax.tick_params(labelsize=7)
        axes[-1][c].set_xlabel("frame", fontsize=8)
    axes[0][0].legend(fontsize=7, loc="best")
    fig.tight_layout()
    with atomic.replacing(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    return fig


@dataclass
class LanguageProbe:
    blank_delta: float  # mean |Δa| (normalized units) with the instruction blanked
    swap_delta: float | None  # ... with another task's instruction; None if one task only
    scale: float  # mean |a| of the original predictions, for context

    @property
    def min_delta(self) -> float:
        vals = [self.blank_delta] + ([self.swap_delta] if self.swap_delta is not None else [])
        return min(vals)

    def metrics(self, prefix: str = "probe/") -> dict[str, float]:
        out = {f"{prefix}language_blank_delta": self.blank_delta}
        if self.swap_delta is not None:
            out[f"{prefix}language_swap_delta"] = self.swap_delta
        return out


@torch.no_grad()
def language_sensitivity(
    sample_fn: SampleFn,
    normalizer: Any,
    batch: Batch,
    device: torch.device,
    tasks: list[str],
    seed: int = 0,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
) -> LanguageProbe | None:
    """How much normalized predicted actions change when the instruction is blanked/swapped."""
    if "task" not in batch:
        return None
    nb = normalize_batch(normalizer, to_device(batch, device))
    base = seeded_sample(sample_fn, nb, seed, autocast)
    own = list(nb["task"])
    blank = seeded_sample(sample_fn, Batch({**nb, "task": [""] * len(own)}), seed, autocast)
    distinct = sorted(set(tasks) | set(own))
    swap_delta = None
    if len(distinct) > 1:
        # Each sample gets the next distinct task after its own (never its own).
        swapped = [distinct[(distinct.index(t) + 1) % len(distinct)] for t in own]
        sw = seeded_sample(sample_fn, Batch({**nb, "task": swapped}), seed, autocast)
        swap_delta = float((sw - base).abs().mean())
    return LanguageProbe(
        blank_delta=float((blank - base).abs().mean()),
        swap_delta=swap_delta,
        scale=float(base.abs().mean()),
    )


@dataclass
class MemoryEstimate:
    params_bytes: int
    grads_bytes: int
    optimizer_bytes: int
    activations_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.params_bytes + self.grads_bytes + self.optimizer_bytes + self.activations_bytes

    def table(self) -> str:
        rows = [
            ("parameters", self.params_bytes),
            ("gradients", self.grads_bytes),
            ("AdamW states", self.optimizer_bytes),
            ("activations (1 micro-batch)", self.activations_bytes),
            ("total", self.total_bytes),
        ]
        return "\n".join(f"  {name:<28} {_fmt_bytes(b):>10}" for name, b in rows)


def _fmt_bytes(b: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if b < 1024 or unit == "GiB":
            return f"{b:.1f} {unit}" if unit != "B" else f"{int(b)} B"
        b /= 1024
    return f"{b:.1f} GiB"


def estimate_memory(
    model: torch.nn.Module,
    loss_fn: Callable[[], torch.Tensor],
) -> MemoryEstimate:
    """Params + grads + AdamW moments, and activations measured in one probe forward.

    Activations are the bytes autograd saves for backward during ``loss_fn()`` (counted with
    ``saved_tensors_hooks``), which is what dominates training memory beyond the weights. The
    probe runs under ``fork_rng`` and restores buffers (e.g. BatchNorm statistics), so it does
    not change the training run.
    """
    seen: set[int] = set()
    params = grads = opt = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        nbytes = p.numel() * p.element_size()
        params += nbytes
        if p.requires_grad:
            grads += nbytes
            opt += 2 * p.numel() * 4  # exp_avg + exp_avg_sq in fp32
    saved = 0
    # Weights saved for backward (e.g. by matmul) are not activations: skip their storages.
    storages: set[int] = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        try:
            key = t.untyped_storage().data_ptr()
        except (RuntimeError, NotImplementedError):
            key = id(t)
        if key not in storages:
            storages.add(key)
            saved += t.numel() * t.element_size()
        return t

    buffers = {k: v.detach().clone() for k, v in model.state_dict().items() if "running" in k}
    was_training = model.training
    with torch.random.fork_rng(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = loss_fn()
        del loss
    if buffers:
        model.load_state_dict(buffers, strict=False)
    model.train(was_training)
    return MemoryEstimate(params, grads, opt, saved)


SUBGOAL_KEYS = (
    "subgoal_cos",
    "subgoal_cos_copy",
    "subgoal_nn_top1",
    "subgoal_nn_top1_copy",
    "subgoal_nn_chance",
)


def subgoal_eval(
    model: Any, normalizer: Any, batches: Iterable[Batch], device: torch.device, max_batches: int
) -> dict[str, float]:
    """CoT-VLA models: the generated subgoal against the real frame t+k on held-out batches
    (``models.foresight.subgoal_metrics``, averaged over batches); {} for other models."""
    from vlastack.models.foresight import subgoal_metrics

    fs = getattr(model, "foresight", None)
    if fs is None or fs.subgoal is None:
        return {}
    rows: list[dict[str, float]] = []
    for bi, raw in enumerate(batches):
        if bi >= max_batches:
            break
        rows.append(subgoal_metrics(model, normalize_batch(normalizer, to_device(raw, device))))
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} if rows else {}
