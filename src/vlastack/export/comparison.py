"""A quantized checkpoint against its source: open-loop action error on the validation episodes,
latency, memory (parameter bytes, RSS of a fresh process) and, optionally, closed-loop success in a
simulator through ``evaluation.rollout`` (``vlastack export compare``).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vlastack.errors import ConfigError, DataError
from vlastack.export.quantize import load_policy, quantization_info
from vlastack.models.bitlinear import BitLinear

# ---- measurement -------------------------------------------------------------------------------


def parameter_bytes(model: nn.Module) -> int:
    """Bytes held by parameters and persistent buffers, counting packed int8 weights (+ scales)."""
    total = 0

    def add(v: Any) -> None:
        nonlocal total
        if isinstance(v, torch.Tensor):
            if v.is_quantized:
                total += v.numel() * v.element_size()
                if v.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
                    total += v.q_per_channel_scales().numel() * 4  # stored as fp32 per channel
                else:
                    total += 4
            else:
                total += v.numel() * v.element_size()
        elif isinstance(v, (tuple, list)):
            for x in v:
                add(x)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for v in model.state_dict(keep_vars=False).values():
            add(v)
    return total


def ternary_packed_bytes(model: nn.Module) -> int:
    """Storage if every BitLinear weight were packed at 2 bits (+ one fp32 scale); rest as is."""
    total = parameter_bytes(model)
    for mod in model.modules():
        if isinstance(mod, BitLinear):
            n = mod.weight.numel()
            total -= n * mod.weight.element_size()
            total += math.ceil(n / 4) + 4
    return total


def _percentiles(values_ms: Sequence[float]) -> dict[str, float]:
    a = np.asarray(values_ms, dtype=np.float64)
    return {
        "latency_ms_p50": float(np.percentile(a, 50)),
        "latency_ms_p95": float(np.percentile(a, 95)),
        "latency_ms_mean": float(a.mean()),
    }


def time_policy(policy: Any, obs: Mapping[str, Any], repeats: int = 20, warmup: int = 3) -> dict:
    """Latency of ``policy.infer(obs)`` (one chunk, batch 1): p50/p95/mean in ms."""
    for _ in range(warmup):
        policy.infer(obs)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        policy.infer(obs)
        times.append((time.perf_counter() - t0) * 1000.0)
    return _percentiles(times)


_RSS_CHILD = """
import json, resource, sys
import numpy as np
from vlastack.export.quantize import load_policy
spec = json.loads(sys.stdin.read())
obs = {k: (np.asarray(v, dtype=np.uint8) if k.startswith("observation.images.") else
           (np.asarray(v, dtype=np.float32) if k != "task" else v)) for k, v in spec["obs"].items()}
import torch
torch.set_num_threads(spec["threads"])
def rss_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0
base_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
base_rss = rss_kb()
policy = load_policy(spec["path"])
for _ in range(spec["repeats"]):
    policy.infer(obs)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("RSS_JSON" + json.dumps({"peak_rss_delta_mb": (peak - base_peak) / 1024.0,
                               "rss_delta_mb": (rss_kb() - base_rss) / 1024.0}))
"""


def memory_delta_mb(path: str | Path, obs: Mapping[str, Any], repeats: int = 3) -> dict:
    """RSS growth (MB) of a fresh process loading ``path`` and inferring ``repeats`` chunks:
    ``peak_rss_delta_mb`` (ru_maxrss) and ``rss_delta_mb`` (VmRSS after the last chunk).

    A subprocess, because ru_maxrss only grows: in-process it would hide the second model's peak.
    The baseline is taken after importing vlastack and torch (whose import peak can hide a small
    model's peak entirely; then only ``rss_delta_mb`` moves).
    """
    spec = {
        "path": str(path),
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "obs": {k: (v if isinstance(v, str) else np.asarray(v).tolist()) for k, v in obs.items()},
    }
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    res = subprocess.run(
        [sys.executable, "-c", _RSS_CHILD],
        input=json.dumps(spec),  # images are too large for argv
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    for line in res.stdout.splitlines():
        if line.startswith("RSS_JSON"):
            return {k: float(v) for k, v in json.loads(line[len("RSS_JSON") :]).items()}
    raise DataError(f"memory measurement of {path} failed: {res.stderr.strip()[-500:]}")


def _validation_dataset(ckpt_config: Mapping[str, Any], dataset_path: str | Path, cfg: Any) -> Any:
    from vlastack.data.dataset import WindowedDataset, split_episodes
    from vlastack.data.format import DatasetReader

    reader = DatasetReader(dataset_path)
    train = ckpt_config.get("train") or {}
    _, val = split_episodes(
        reader.num_episodes, float(train.get("val_fraction", 0.1)), int(train.get("seed", 0))
    )
    episodes = val or list(range(reader.num_episodes))
    return WindowedDataset(
        reader,
        obs_horizon=cfg.obs_horizon,
        action_horizon=cfg.action_horizon,
        episodes=episodes,
        image_keys=[f"observation.images.{c}" for c in cfg.cameras],
        image_size=tuple(cfg.image_size),
    ), episodes


def open_loop_actions(
    policy: Any, dataset: Any, max_windows: int = 64, batch_size: int = 16, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Predicted and true action chunks (W, H, A) in original units + valid mask (W, H).

    Windows are evenly spaced over the dataset; sampling noise is seeded so two policies with the
    same architecture see the same noise.
    """
    from vlastack.data.dataset import collate

    n = len(dataset)
    if n == 0:
        raise DataError("open-loop comparison: the validation episodes have no frames")
    idx = np.unique(np.linspace(0, n - 1, min(n, max_windows)).round().astype(int))
    gen = torch.Generator().manual_seed(seed)
    preds, trues, valid = [], [], []
    for s in range(0, len(idx), batch_size):
        batch = collate([dataset[int(i)] for i in idx[s : s + batch_size]])
        trues.append(batch["action"].numpy())
        valid.append((~batch["action_is_pad"]).numpy())
        inputs = {k: v for k, v in batch.items() if k != "action"}
        preds.append(policy.predict(inputs, generator=gen))
    return np.concatenate(preds), np.concatenate(trues), np.concatenate(valid)


def _first_observation(dataset: Any) -> dict[str, Any]:
    """One raw observation (uint8 HWC images, float state, task) from a dataset window."""
    s = dataset[0]
    obs: dict[str, Any] = {}
    for k, v in s.items():
        if k.startswith("observation.images."):
            obs[k] = (v[-1].permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
        elif k == "observation.state":
            obs[k] = v[-1].numpy()
    obs["task"] = s["task"]
    return obs


def compare(
    src_ckpt: str | Path,
    quant_ckpt: str | Path,
    dataset_path: str | Path,
    *,
    max_windows: int = 64,
    latency_repeats: int = 20,
    measure_rss: bool = True,
    sim_env: str | None = None,
    sim_episodes: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    """Accuracy, latency and memory of a quantized checkpoint against its source.

    Open-loop error is measured on the dataset's validation episodes (the split recorded in the
    source's train config) in original action units, with the same sampling noise for both.
    ``sim_env`` (e.g. a Meta-World task) adds closed-loop success via ``evaluation.rollout``.
    """
    ref = load_policy(src_ckpt, seed=seed)
    qnt = load_policy(quant_ckpt, seed=seed)
    ckpt_config = json.loads((Path(ref.source) / "config.json").read_text())
    from vlastack.models.vla import VLAConfig

    cfg = VLAConfig.from_dict(ckpt_config["model"])
    dataset, episodes = _validation_dataset(ckpt_config, dataset_path, cfg)
    pr, true, valid = open_loop_actions(ref, dataset, max_windows, seed=seed)
    pq, _, _ = open_loop_actions(qnt, dataset, max_windows, seed=seed)
    w = valid[..., None].astype(np.float64) * np.ones_like(true)

    def mae(a: np.ndarray, b: np.ndarray) -> float:
        return float((np.abs(a - b) * w).sum() / max(w.sum(), 1.0))

    def rmse(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.sqrt(((a - b) ** 2 * w).sum() / max(w.sum(), 1.0)))

    obs = _first_observation(dataset)
    out: dict[str, Any] = {
        "dataset": str(dataset_path),
        "val_episodes": episodes,
        "num_windows": int(len(true)),
        "quantization": quantization_info(quant_ckpt),
        "threads": torch.get_num_threads(),
    }
    for name, pol, pred, path in (
        ("reference", ref, pr, src_ckpt),
        ("quantized", qnt, pq, quant_ckpt),
    ):
        m: dict[str, Any] = {
            "action_mae": mae(pred, true),
            "action_rmse": rmse(pred, true),
            "param_bytes": parameter_bytes(pol.model),
        }
        if name == "quantized" and (out["quantization"] or {}).get("method") == "ternary":
            m["ternary_packed_bytes"] = ternary_packed_bytes(pol.model)
        m.update(time_policy(pol, obs, latency_repeats))
        pol.reset()
        if measure_rss:
            m.update(memory_delta_mb(path, obs))
        if sim_env:
            m["success_rate"] = _sim_success(path, sim_env, sim_episodes, seed)
        out[name] = m
    out["quantized_vs_reference_mae"] = mae(pq, pr)
    r, q = out["reference"], out["quantized"]
    out["delta"] = {
        "action_mae": q["action_mae"] - r["action_mae"],
        "latency_ms_p50_ratio": q["latency_ms_p50"] / max(r["latency_ms_p50"], 1e-9),
        "param_bytes_ratio": q["param_bytes"] / max(r["param_bytes"], 1),
    }
    if sim_env:
        out["delta"]["success_rate"] = (q["success_rate"] or 0.0) - (r["success_rate"] or 0.0)
    return out


class _PolicyFactory:
    """Picklable zero-argument factory for ``evaluation.rollout.evaluate`` worker processes."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __call__(self) -> Any:
        return load_policy(self.path)


def _sim_success(path: str | Path, env: str, episodes: int, seed: int) -> float | None:
    try:
        from vlastack.evaluation.rollout import evaluate
    except ImportError as exc:  # evaluation is optional for export
        raise ConfigError(f"simulator comparison needs vlastack.evaluation ({exc})") from exc
    res = evaluate(
        _PolicyFactory(str(path)),
        env,
        episodes_per_task=episodes,
        seed=seed,
        workers=0,
        progress=False,
    )
    rate = res.success_rate
    return None if rate is None else float(rate)


__all__ = [
    "compare",
    "memory_delta_mb",
    "open_loop_actions",
    "parameter_bytes",
    "ternary_packed_bytes",
    "time_policy",
]
