"""Post-training quantization of a trained VLA: int8 linear layers and BitVLA ternary weights.

``quantize_checkpoint`` writes a new checkpoint folder whose ``config.json`` records the method
(``"quantization"`` section) and whose ``model.safetensors`` already holds the quantized weight
values (int8 per-channel grid, or {-1, 0, 1}·scale for BitNet b1.58, Ma et al. 2402.17764; BitVLA
2506.07530), so a plain ``Policy.from_checkpoint`` reproduces the quantized numerics and
``load_policy`` also rebuilds the int8 kernels. ``compare`` reports accuracy, latency and memory.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vlastack.errors import ConfigError, DataError
from vlastack.models.bitlinear import BitLinear, ternarize_, ternary_quantize

METHODS = ("int8", "ternary")
INT8_BACKENDS = ("auto", "dynamic", "weight_only")
# Model parts (attributes of VLA); "state" is the state projection, "head" also covers the RT-H
# motion classifier and the auxiliary bins layer, which live at the top level of the VLA.
PARTS = ("vision", "language", "projector", "trunk", "state", "head")
DEFAULT_PARTS: dict[str, tuple[str, ...]] = {
    "int8": PARTS,
    # BitVLA keeps the LM embeddings / output head in full precision; post-training ternarizing a
    # model trained in fp32 costs accuracy, so by default only the policy's own layers are swapped.
    "ternary": ("vision", "projector", "trunk", "head"),
}
# Child modules never swapped for int8: ``Block`` reads ``film.weight`` as a tensor, and an LM's
# output head stays in full precision (as BitNet/BitVLA keep it).
INT8_SKIP = ("film", "lm_head")
QUANT_FORMAT_VERSION = 1

_PART_ATTRS: dict[str, tuple[str, ...]] = {
    "vision": ("vision",),
    "language": ("language", "lang_proj"),
    "projector": ("projector",),
    "trunk": ("trunk",),
    "state": ("state_proj",),
    "head": ("head", "motion_classifier", "aux_bins"),
}


# ---- int8 --------------------------------------------------------------------------------------


def int8_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8: ``weight ≈ q * scale[:, None]``, q in [-127, 127].

    The grid is its own fixed point: quantizing ``q * scale`` again returns the same q and scale,
    so a checkpoint can store the dequantized values and be re-quantized exactly on load.
    """
    w = weight.detach().float()
    scale = w.abs().amax(dim=1).clamp_min(1e-12) / 127.0  # (out,)
    q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scale


class Int8Linear(nn.Module):
    """Weight-only int8 linear (per-channel scale), activations stay float.

    Written by hand as the fallback when ``torch.ao`` dynamic quantization is unavailable (it is
    deprecated in torch 2.x); uses ATen's ``_weight_int8pack_mm`` CPU kernel where it exists.
    """

    weight_int8: torch.Tensor
    weight_scale: torch.Tensor

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.register_buffer(
            "weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8)
        )
        self.register_buffer("weight_scale", torch.ones(out_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    @classmethod
    def from_linear(cls, layer: nn.Linear) -> Int8Linear:
        new = cls(layer.in_features, layer.out_features, bias=layer.bias is not None)
        q, scale = int8_per_channel(layer.weight)
        new.weight_int8.copy_(q)
        new.weight_scale.copy_(scale)
        if layer.bias is not None and new.bias is not None:
            new.bias.data.copy_(layer.bias.detach().float())
        return new.to(layer.weight.device)

    @property
    def weight(self) -> torch.Tensor:
        """Dequantized (out, in) weight, for code that reads ``.weight`` of a linear layer."""
        return self.weight_int8.float() * self.weight_scale[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        if x2.device.type == "cpu" and x2.dtype == torch.float32 and _HAS_INT8PACK:
            y = torch._weight_int8pack_mm(x2.contiguous(), self.weight_int8, self.weight_scale)
        else:
            y = x2 @ self.weight.to(x2.dtype).t()
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per-channel"


_HAS_INT8PACK = hasattr(torch, "_weight_int8pack_mm")


def _ao_dynamic_linear() -> Any:
    """``torch.ao.nn.quantized.dynamic.Linear`` (fbgemm int8 GEMM) or None when unavailable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torch.ao.nn.quantized.dynamic import Linear as DynLinear
    except ImportError:
        return None
    if "fbgemm" not in torch.backends.quantized.supported_engines and (
        "x86" not in torch.backends.quantized.supported_engines
    ):
        return None
    return DynLinear


def _dynamic_from_linear(layer: nn.Linear, dyn_cls: Any) -> nn.Module:
    """An ao dynamic int8 Linear whose int8 weight is exactly ``int8_per_channel(layer.weight)``."""
    q, scale = int8_per_channel(layer.weight)
    with warnings.catch_warnings():
        # torch marks quantized tensors deprecated in 2.x; the kernels still ship in 2.13.
        warnings.simplefilter("ignore")
        qweight = torch._make_per_channel_quantized_tensor(
            q, scale.double(), torch.zeros_like(scale, dtype=torch.long), 0
        )
        new = dyn_cls(layer.in_features, layer.out_features, dtype=torch.qint8)
        bias = layer.bias.detach().float() if layer.bias is not None else None
        new.set_weight_bias(qweight, bias)
    return new


def is_int8_linear(module: nn.Module) -> bool:
    """True for the int8 linears ``quantize_dynamic_int8`` installs (either backend)."""
    dyn = _ao_dynamic_linear()
    return isinstance(module, Int8Linear) or (dyn is not None and isinstance(module, dyn))


def resolve_int8_backend(backend: str = "auto") -> str:
    """``auto`` → ``dynamic`` (torch.ao, int8 activations too) if it works here, else ``weight_only``."""
    if backend not in INT8_BACKENDS:
        raise ConfigError(f"int8 backend {backend!r} unknown; choose one of {INT8_BACKENDS}")
    if backend == "auto":
        return "dynamic" if _ao_dynamic_linear() is not None else "weight_only"
    if backend == "dynamic" and _ao_dynamic_linear() is None:
        raise ConfigError(
            "int8 backend 'dynamic' needs torch.ao.nn.quantized.dynamic with the fbgemm/x86 "
            "engine, which this torch build lacks; use --backend weight_only"
        )
    return backend


def _swap_linears(
    module: nn.Module, make: Callable[[nn.Linear], nn.Module], skip: Sequence[str]
) -> int:
    count = 0
    for name, child in list(module.named_children()):
        if any(s in name for s in skip):
            continue
        # torch's own Transformer layers read their linears' raw .weight tensors (fast-path
        # checks, fused kernels), so their linears stay float.
        if isinstance(child, (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)):
            continue
        # Exact type: BitLinear is already quantized, and MultiheadAttention's out_proj
        # (NonDynamicallyQuantizableLinear) is read as a raw weight by F.multi_head_attention_forward.
        if type(child) is nn.Linear:
            setattr(module, name, make(child))
            count += 1
        else:
            count += _swap_linears(child, make, skip)
    return count


def _part_modules(model: nn.Module, parts: Iterable[str]) -> list[tuple[nn.Module, str]]:
    """(parent, attribute) pairs for the chosen parts; a bare module is its own single part."""
    parts = list(parts)
    bad = [p for p in parts if p not in PARTS]
    if bad:
        raise ConfigError(f"quantization parts {bad} unknown; choose from {list(PARTS)}")
    out = []
    for p in parts:
        for attr in _PART_ATTRS[p]:
            if isinstance(getattr(model, attr, None), nn.Module):
                out.append((model, attr))
    return out


def quantize_dynamic_int8(
    model: nn.Module,
    *,
    parts: Iterable[str] | None = None,
    backend: str = "auto",
    skip: Sequence[str] = INT8_SKIP,
) -> nn.Module:
    """Swap ``nn.Linear`` layers for int8 ones, in place; returns ``model`` (eval mode).

    ``backend="dynamic"``: ``torch.ao`` dynamic quantization (int8 weights per channel, activations
    quantized per batch at run time, fbgemm GEMM). ``"weight_only"``: ``Int8Linear``. For a VLA,
    ``parts`` picks sub-modules (default all); for any other module the whole module is swapped.
    """
    kind = resolve_int8_backend(backend)
    dyn = _ao_dynamic_linear() if kind == "dynamic" else None

    def make(layer: nn.Linear) -> nn.Module:
        if layer.weight.device.type != "cpu" and dyn is not None:
            raise ConfigError("int8 'dynamic' quantization runs on CPU only; move the model first")
        return (
            _dynamic_from_linear(layer, dyn) if dyn is not None else Int8Linear.from_linear(layer)
        )

    model.eval()
    targets = _part_modules(model, parts if parts is not None else PARTS)
    if not targets and parts is None:
        if type(model) is nn.Linear:
            raise ConfigError("quantize_dynamic_int8 needs a module containing linear layers")
        _swap_linears(model, make, skip)
        return model
    for parent, attr in targets:
        mod = getattr(parent, attr)
        if type(mod) is nn.Linear:
            setattr(parent, attr, make(mod))
        else:
            _swap_linears(mod, make, skip)
    return model


def fake_quantize_int8_(
    model: nn.Module, parts: Iterable[str] | None = None, skip=INT8_SKIP
) -> int:
    """Round every selected ``nn.Linear`` weight onto its int8 per-channel grid, in place (float)."""
    count = 0

    def visit(mod: nn.Module) -> None:
        nonlocal count
        if type(mod) is nn.Linear:
            q, scale = int8_per_channel(mod.weight)
            with torch.no_grad():
                mod.weight.copy_((q.float() * scale[:, None]).to(mod.weight.dtype))
            count += 1
            return
        for name, child in mod.named_children():
            if not any(s in name for s in skip):
                visit(child)

    for parent, attr in _part_modules(model, parts if parts is not None else PARTS):
        visit(getattr(parent, attr))
    return count


# ---- ternary -----------------------------------------------------------------------------------


def ternary_storage_weight(weight: torch.Tensor) -> torch.Tensor:
    """Weights to store so that a ``BitLinear`` built from them computes ``q * s`` exactly.

    ``q, s = ternary_quantize(W)``. Storing ``q * s`` is not a fixed point (its absmean is s·p,
    p = fraction of non-zeros); storing ``q * s / p`` is: absmean = s and round(q / p) clips to q.
    The stored tensor still takes only the values {-1, 0, 1}·(s / p).
    """
    q, s = ternary_quantize(weight.detach())
    p = (q != 0).float().mean()
    if p == 0:
        return torch.zeros_like(weight)
    return (q.to(weight.dtype) * (s / p)).to(weight.dtype)


def ternarize_model(model: nn.Module, parts: Iterable[str] | None = None) -> nn.Module:
    """Swap the selected parts' linears for ``BitLinear`` (W1.58-A8), in place; returns ``model``."""
    for parent, attr in _part_modules(
        model, parts if parts is not None else DEFAULT_PARTS["ternary"]
    ):
        mod = getattr(parent, attr)
        if type(mod) is nn.Linear:
            setattr(parent, attr, BitLinear.from_linear(mod))
        else:
            ternarize_(mod)
    return model.eval()


def _bitlinear_storage_(model: nn.Module) -> int:
    count = 0
    for mod in model.modules():
        if isinstance(mod, BitLinear):
            with torch.no_grad():
                mod.weight.copy_(ternary_storage_weight(mod.weight))
            count += 1
    return count


# ---- checkpoints -------------------------------------------------------------------------------


def _load_vla(path: str | Path) -> tuple[Any, nn.Module]:
    """(Checkpoint, VLA with its weights) — the same strict check as ``Policy.from_checkpoint``."""
    from vlastack.models.vla import VLAConfig, build_vla
    from vlastack.training.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    model_d = ckpt.config.get("model")
    if not isinstance(model_d, Mapping):
        raise DataError(f"{ckpt.path}/config.json has no 'model' section; not a VLA checkpoint")
    model = build_vla(VLAConfig.from_dict(model_d))
    missing, unexpected = model.load_state_dict(ckpt.weights, strict=False)
    missing = [k for k in missing if not k.startswith(getattr(model, "external_prefixes", ()))]
    if missing or unexpected:
        raise DataError(
            f"{ckpt.path}/model.safetensors does not fit the model in config.json: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    return ckpt, model.eval()


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2))


def quantize_checkpoint(
    src: str | Path,
    dst: str | Path,
    method: str = "int8",
    parts: Iterable[str] | None = None,
    *,
    backend: str = "auto",
    overwrite: bool = False,
) -> Path:
    """Write a quantized copy of checkpoint ``src`` to the folder ``dst`` (atomically).

    ``int8``: selected linear weights are rounded to their int8 per-channel grid; ``load_policy``
    swaps in int8 kernels (``backend``). ``ternary``: the parts are added to the model config's
    ``ternary`` list (so ``build_vla`` makes them ``BitLinear``) and weights are stored as
    {-1, 0, 1}·scale. ``config.json["quantization"]`` records method, parts and backend.
    """
    from vlastack.training.checkpoint import FORMAT_VERSION, save_weights

    if method not in METHODS:
        raise ConfigError(f"quantization method {method!r} unknown; choose one of {METHODS}")
    chosen = list(parts) if parts is not None else list(DEFAULT_PARTS[method])
    _part_modules(nn.Module(), chosen)  # validates names
    dst = Path(dst)
    if dst.exists() and not overwrite:
        raise ConfigError(f"{dst} already exists; pass another --out folder or overwrite=True")
    ckpt, model = _load_vla(src)
    if ckpt.config.get("quantization"):
        raise ConfigError(
            f"{ckpt.path} is already quantized ({ckpt.config['quantization'].get('method')}); "
            "quantize the original full-precision checkpoint instead"
        )
    config = json.loads(json.dumps(ckpt.config))
    info: dict[str, Any] = {
        "method": method,
        "parts": chosen,
        "format_version": QUANT_FORMAT_VERSION,
        "source": str(ckpt.path),
    }
    if method == "int8":
        info["backend"] = resolve_int8_backend(backend)
        info["num_layers"] = fake_quantize_int8_(model, chosen)
        weights = model.state_dict()
    else:
        from vlastack.models.vla import TERNARY_PARTS

        bad = [p for p in chosen if p not in TERNARY_PARTS]
        if bad:
            raise ConfigError(
                f"ternary parts {bad} are not supported by the model config; choose from "
                f"{list(TERNARY_PARTS)}"
            )
        cfg_model = dict(config["model"])
        cfg_model["ternary"] = sorted(set(cfg_model.get("ternary") or []) | set(chosen))
        config["model"] = cfg_model
        ternarize_model(model, chosen)
        info["num_layers"] = _bitlinear_storage_(model)
        weights = model.state_dict()
    # Keep the same key set as the source (frozen external weights such as MiniLM stay out).
    weights = {k: v for k, v in weights.items() if k in ckpt.weights}
    config["quantization"] = info

    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.parent / f".tmp-{dst.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        save_weights(tmp / "model.safetensors", weights)
        _write_json(tmp / "config.json", config)
        _write_json(tmp / "normalization.json", ckpt.normalization)
        if ckpt.embodiment is not None:
            _write_json(tmp / "embodiment.json", ckpt.embodiment.to_dict())
        (tmp / "format_version").write_text(f"{FORMAT_VERSION}\n")
        if dst.exists():
            old = dst.parent / f".old-{dst.name}-{os.getpid()}"
            dst.rename(old)
            tmp.rename(dst)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(dst)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dst


def ternarize_checkpoint(
    src: str | Path, dst: str | Path, parts: Iterable[str] | None = None, **kw: Any
) -> Path:
    """BitVLA 1.58-bit weights applied post-training to ``parts`` of checkpoint ``src``."""
    return quantize_checkpoint(src, dst, "ternary", parts, **kw)


def quantization_info(path: str | Path) -> dict[str, Any] | None:
    """The ``quantization`` section of a checkpoint's config.json (None for full precision)."""
    from vlastack.training.checkpoint import resolve_checkpoint

    p = resolve_checkpoint(path) / "config.json"
    try:
        info = json.loads(p.read_text()).get("quantization")
    except json.JSONDecodeError as exc:
        raise DataError(f"{p}: not valid JSON ({exc})") from None
    return dict(info) if info else None


def apply_quantization(model: nn.Module, info: Mapping[str, Any] | None) -> nn.Module:
    """Rebuild the runtime structure recorded in ``info`` on a model with loaded weights.

    Ternary needs nothing (the model config already lists the BitLinear parts); int8 swaps the
    linears for int8 kernels (their weights are on the int8 grid already, so this is exact).
    """
    if not info:
        return model
    method = info.get("method")
    if method == "ternary":
        return model
    if method == "int8":
        backend = str(info.get("backend", "auto"))
        try:
            backend = resolve_int8_backend(backend)
        except ConfigError:
            backend = "weight_only"  # a checkpoint made where torch.ao exists, loaded where not
        return quantize_dynamic_int8(model, parts=info.get("parts"), backend=backend)
    raise ConfigError(
        f"checkpoint quantization method {method!r} unknown; this vlastack reads {METHODS}"
    )


def load_policy(path: str | Path, **kwargs: Any) -> Any:
    """``Policy.from_checkpoint`` plus the int8 kernels a quantized checkpoint asks for."""
    from vlastack.policy import Policy

    policy = Policy.from_checkpoint(path, **kwargs)
    info = quantization_info(path)
    if info:
        policy.model = apply_quantization(policy.model, info).eval()
    return policy


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
    model, norm = policy.model, policy.normalizer
    with torch.no_grad():
        for s in range(0, len(idx), batch_size):
            batch = collate([dataset[int(i)] for i in idx[s : s + batch_size]])
            trues.append(batch["action"].numpy())
            valid.append((~batch["action_is_pad"]).numpy())
            nb = norm.normalize({k: v for k, v in batch.items() if k != "action"})
            a = norm.unnormalize_actions(model.sample_actions(nb, generator=gen))
            preds.append(a.float().cpu().numpy())
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
    "DEFAULT_PARTS",
    "METHODS",
    "PARTS",
    "Int8Linear",
    "apply_quantization",
    "compare",
    "fake_quantize_int8_",
    "int8_per_channel",
    "is_int8_linear",
    "load_policy",
    "open_loop_actions",
    "memory_delta_mb",
    "parameter_bytes",
    "quantization_info",
    "quantize_checkpoint",
    "quantize_dynamic_int8",
    "ternarize_checkpoint",
    "ternarize_model",
    "ternary_packed_bytes",
    "ternary_storage_weight",
    "time_policy",
]
