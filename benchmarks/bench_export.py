"""fp32 vs int8 vs ternary vs onnxruntime for one recipe-sized policy (issue 7, export).

Model: recipe ``cpu_default`` (small CNN on one 96×96 camera, frozen MiniLM, 2-d state, width 64)
with its flow-matching head (5 Euler steps) and with an l1 head of the same size; random weights
(no trained checkpoint is needed for speed and memory; for accuracy on data use
``vlastack export compare``). Per variant: latency per chunk of ``Policy.infer`` at batch 1
(p50/p95), head-only latency for a fixed context, parameter bytes (MiniLM is held outside the
module tree, so neither counted nor quantized; ONNX: torch parts + the .onnx file), peak RSS growth of a fresh process, and the max |Δaction| against fp32 for the same
observation and noise (original units, mean/std stats of a unit normal). The onnxruntime variant
runs the head's whole sampler graph; vision + MiniLM stay in PyTorch.

    .venv/bin/python benchmarks/bench_export.py [--iters 30] [--no-rss]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

warnings.simplefilter("ignore")


def _pct(ms: list[float]) -> tuple[float, float]:
    a = np.asarray(ms)
    return float(np.percentile(a, 50)), float(np.percentile(a, 95))


def _time(fn, iters: int, warmup: int = 3) -> tuple[float, float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e3)
    return _pct(out)


class OrtHead(nn.Module):
    """Stands in for ``model.head``: same ``sample_actions`` contract, runs the ONNX sampler."""

    def __init__(self, head: Any, path: Path, threads: int, needs_noise: bool) -> None:
        super().__init__()
        from vlastack.export.onnx import ort_session

        self.action_horizon, self.action_dim = head.action_horizon, head.action_dim
        self.sess = ort_session(path, threads)
        self.needs_noise = needs_noise

    def sample_actions(self, context, context_mask, generator=None):
        feeds = {"context": context.numpy(), "context_mask": context_mask.numpy()}
        if self.needs_noise:
            shape = (context.shape[0], self.action_horizon, self.action_dim)
            feeds["noise"] = torch.randn(shape, generator=generator).numpy()
        return torch.from_numpy(self.sess.run(None, feeds)[0])


def bench_head(head: str, tmp: Path, iters: int, rss: bool) -> list[dict[str, Any]]:
    from vlastack.data.normalization import Normalizer
    from vlastack.export.comparison import memory_delta_mb, parameter_bytes, ternary_packed_bytes
    from vlastack.export.onnx import example_context, export_model_heads
    from vlastack.export.quantize import load_policy, quantize_checkpoint
    from vlastack.models.vla import build_vla
    from vlastack.recipes import get_recipe
    from vlastack.training.checkpoint import save_checkpoint

    cfg = get_recipe("cpu_default").model
    if head != cfg.head:
        small = {k: v for k, v in cfg.head_kwargs.items() if k in ("width", "depth", "num_heads")}
        cfg = dataclasses.replace(cfg, head=head, head_kwargs=small)
    torch.manual_seed(0)
    model = build_vla(cfg)
    stats = {
        k: {"mean": [0.0] * d, "std": [1.0] * d}
        for k, d in (("observation.state", cfg.state_dim), ("action", cfg.action_dim))
    }
    norm = Normalizer(stats, {"observation.state": "mean_std", "action": "mean_std"})
    src = save_checkpoint(
        tmp / head,
        0,
        weights=model.state_dict(),
        config={"model": cfg.to_dict()},
        normalization=norm.to_dict(),
        embodiment=None,
    )
    rng = np.random.default_rng(0)
    H, W = cfg.image_size
    obs: dict[str, Any] = {
        f"observation.images.{c}": rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        for c in cfg.cameras
    }
    obs["observation.state"] = rng.normal(0, 1, cfg.state_dim).astype(np.float32)
    obs["task"] = "push the puck to the goal"

    variants: dict[str, Path] = {"fp32": src}
    variants["int8 dynamic"] = quantize_checkpoint(
        src, tmp / f"{head}_i8d", "int8", backend="dynamic"
    )
    variants["int8 weight-only"] = quantize_checkpoint(
        src, tmp / f"{head}_i8w", "int8", backend="weight_only"
    )
    variants["ternary"] = quantize_checkpoint(src, tmp / f"{head}_tern", "ternary")

    threads = torch.get_num_threads()
    rows: list[dict[str, Any]] = []
    ref_actions = None
    for name in [*variants, "onnxruntime"]:
        path = variants.get(name, src)
        pol = load_policy(path)
        if name == "onnxruntime":
            out_dir = tmp / f"{head}_onnx"
            manifest = export_model_heads(pol.model, out_dir, ["sampler"])
            graph = next(iter(manifest["graphs"].values()))
            pol.model.head = OrtHead(
                pol.model.head,
                out_dir / graph["file"],
                threads,
                "noise" in graph["inputs"],  # stochastic samplers take their noise
            )
        pol.reset()
        actions = pol.infer(obs)["actions"]
        if ref_actions is None:
            ref_actions = actions
        p50, p95 = _time(lambda pol=pol: pol.infer(obs), iters)
        ctx, mask = example_context(pol.model, 1)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            h50, h95 = _time(
                lambda h=pol.model.head, c=ctx, m=mask, g=g: h.sample_actions(c, m, generator=g),
                iters,
            )
        row: dict[str, Any] = {
            "head": head,
            "variant": name,
            "latency_ms_p50": p50,
            "latency_ms_p95": p95,
            "head_ms_p50": h50,
            "head_ms_p95": h95,
            "param_mb": parameter_bytes(pol.model) / 1e6,
            "max_abs_diff_vs_fp32": float(np.abs(actions - ref_actions).max()),
        }
        if name == "ternary":
            row["ternary_packed_mb"] = ternary_packed_bytes(pol.model) / 1e6
        if name == "onnxruntime":  # the head's weights now live in the ONNX file
            row["onnx_file_mb"] = (out_dir / graph["file"]).stat().st_size / 1e6
            row["param_mb"] += row["onnx_file_mb"]
        if rss and name != "onnxruntime":
            row.update(memory_delta_mb(path, obs))
        rows.append(row)
    return rows


def accuracy_rows(
    dataset: Path, head: str, train_steps: int, tmp: Path, seed: int = 0
) -> list[dict[str, Any]]:
    """Train a small policy on ``dataset`` for ``train_steps``, then ``compare`` each quantized
    copy with it on the held-out episodes (open-loop action error in original units)."""
    from vlastack.data.dataset import WindowedDataset, make_dataloader, split_episodes
    from vlastack.data.format import DatasetReader
    from vlastack.data.normalization import Normalizer
    from vlastack.export.comparison import compare
    from vlastack.export.quantize import quantize_checkpoint
    from vlastack.models.vla import build_vla
    from vlastack.recipes import get_recipe
    from vlastack.training.checkpoint import save_checkpoint

    reader = DatasetReader(dataset)
    cams = [k.removeprefix("observation.images.") for k in reader.camera_keys]
    state_dim = int(np.prod(reader.features["observation.state"].shape))
    action_dim = int(np.prod(reader.features["action"].shape))
    cfg = get_recipe("cpu_default").model
    small = {k: v for k, v in cfg.head_kwargs.items() if k in ("width", "depth", "num_heads")}
    cfg = dataclasses.replace(
        cfg,
        cameras=cams,
        image_size=(32, 32),
        state_dim=state_dim,
        action_dim=action_dim,
        head=head,
        head_kwargs=cfg.head_kwargs if head == cfg.head else small,
    )
    train_eps, _ = split_episodes(reader.num_episodes, 0.34, seed)
    ds = WindowedDataset(
        reader,
        obs_horizon=cfg.obs_horizon,
        action_horizon=cfg.action_horizon,
        episodes=train_eps,
        image_size=cfg.image_size,
    )
    modes = {"observation.state": "mean_std", "action": "mean_std"}
    norm = Normalizer(reader.stats, modes)
    torch.manual_seed(seed)
    model = build_vla(cfg).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    step = 0
    while step < train_steps:
        for batch in make_dataloader(ds, batch_size=16, seed=seed + step):
            loss = model.loss(norm.normalize(batch)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step >= train_steps:
                break
    src = save_checkpoint(
        tmp / f"acc_{head}",
        train_steps,
        weights=model.state_dict(),
        config={"model": cfg.to_dict(), "train": {"val_fraction": 0.34, "seed": seed}},
        normalization=norm.to_dict(),
        embodiment=None,
    )
    rows = []
    for name, method, backend in (
        ("int8 dynamic", "int8", "dynamic"),
        ("int8 weight-only", "int8", "weight_only"),
        ("ternary", "ternary", "auto"),
    ):
        q = quantize_checkpoint(
            src, tmp / f"acc_{head}_{method}_{backend}", method, backend=backend
        )
        res = compare(src, q, dataset, max_windows=64, latency_repeats=5, measure_rss=False)
        rows.append(
            {
                "head": head,
                "variant": name,
                "train_steps": train_steps,
                "final_train_loss": float(loss),
                "val_windows": res["num_windows"],
                "fp32_action_mae": res["reference"]["action_mae"],
                "quant_action_mae": res["quantized"]["action_mae"],
                "quant_vs_fp32_mae": res["quantized_vs_reference_mae"],
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--heads", nargs="+", default=["flow_matching", "l1"])
    ap.add_argument("--no-rss", action="store_true")
    ap.add_argument("--threads", type=int, default=1, help="torch and onnxruntime intra-op threads")
    ap.add_argument(
        "--accuracy-dataset",
        default=None,
        help="LeRobot v3 dataset: also train briefly and report the open-loop error change",
    )
    ap.add_argument("--train-steps", type=int, default=300)
    ap.add_argument("--skip-speed", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows: list[dict[str, Any]] = []
    acc: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as d:
        for head in args.heads:
            if not args.skip_speed:
                rows += bench_head(head, Path(d), args.iters, not args.no_rss)
            if args.accuracy_dataset:
                acc += accuracy_rows(Path(args.accuracy_dataset), head, args.train_steps, Path(d))
    hdr = (
        f"{'head':14s}{'variant':18s}{'chunk p50':>10s}{'p95':>8s}{'head p50':>10s}{'p95':>8s}"
        f"{'params MB':>11s}{'RSS Δ MB':>9s}{'max|Δa|':>10s}"
    )
    if rows:
        print(hdr)
        print("-" * len(hdr))
    for r in rows:
        rss = r.get("rss_delta_mb")
        print(
            f"{r['head']:14s}{r['variant']:18s}{r['latency_ms_p50']:10.2f}{r['latency_ms_p95']:8.2f}"
            f"{r['head_ms_p50']:10.2f}{r['head_ms_p95']:8.2f}{r['param_mb']:11.3f}"
            f"{'-' if rss is None else f'{rss:.1f}':>9s}"
            f"{r['max_abs_diff_vs_fp32']:10.2e}"
        )
    if acc:
        print()
        print(f"{'head':14s}{'variant':18s}{'fp32 MAE':>10s}{'quant MAE':>11s}{'quant-fp32':>12s}")
        for r in acc:
            print(
                f"{r['head']:14s}{r['variant']:18s}{r['fp32_action_mae']:10.4f}"
                f"{r['quant_action_mae']:11.4f}{r['quant_vs_fp32_mae']:12.4f}"
            )
    info = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
        "torch": torch.__version__,
        "iters": args.iters,
    }
    print(json.dumps({"bench": "export", **info, "rows": rows, "accuracy": acc}))


if __name__ == "__main__":
    main()
