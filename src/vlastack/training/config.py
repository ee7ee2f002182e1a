"""Training configuration: one typed dataclass plus ``--key=value`` overrides.

``TrainConfig`` holds every knob of ``training.loop.train``; ``apply_overrides`` parses
``--key=value`` strings onto it (and onto nested dataclasses such as ``lora.rank``) with type
conversion from the annotations and "did you mean" for unknown keys. No config framework: the
dataclass *is* the schema, and ``to_dict``/``from_dict`` make it JSON for checkpoints.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from vlastack.errors import ConfigError

Precision = Literal["fp32", "bf16"]
LogBackend = Literal["tensorboard", "wandb", "none"]
DistributedMode = Literal["auto", "none", "ddp", "fsdp", "hsdp"]
CheckpointFormat = Literal["auto", "full", "sharded"]
Schedule = Literal["cosine", "constant"]
StatsChoice = Literal["keep", "recompute"]
VideoBackend = Literal["pyav", "torchcodec"]


@dataclass
class LoraSettings:
    """LoRA adapters (Hu et al. 2021, via ``peft``) injected into modules matching ``target``.

    ``target`` is a regular expression matched against the full module name (peft semantics);
    the base weights of matched ``nn.Linear`` layers are frozen, everything else keeps its state.
    """

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target: str = r".*(q_proj|k_proj|v_proj|o_proj|query|key|value|dense|fc1|fc2)$"


@dataclass
class TrainConfig:
    """Everything ``train()`` needs. Defaults are CPU-friendly; recipes override the optimizer."""

    recipe: str = ""
    data: list[str] = field(default_factory=list)
    out_dir: str = "runs/default"
    # optimisation
    steps: int = 1000
    batch_size: int = 8
    lr: float = 1e-4
    warmup_steps: int = 100
    schedule: Schedule = "cosine"
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float | None = 1.0
    grad_accum: int = 1
    ema_decay: float | None = None
    precision: Precision = "fp32"
    seed: int = 0
    # data / CPU: -1 and 0 mean "auto" (training.threads.pick_workers / pick_threads): one decoding
    # worker per two cores when the dataset decodes video, and intra-op threads = idle cores left.
    num_workers: int = -1
    num_threads: int = 0
    # frame decoder for video cameras (LeRobot's option name): 'pyav' (default) or 'torchcodec'
    # (opt-in, `pip install 'vlastack[torchcodec]'`; same frames, about half the decoding CPU)
    video_backend: VideoBackend = "pyav"
    # CPU: keep freed memory in the process so a step's fresh tensors do not page-fault again
    # (training/host_memory.py; ~10-20% of an ACT step on the 2-core machine)
    retain_host_memory: bool = True
    # Encode every frame once with a frozen vision encoder instead of every step
    # (training/feature_cache.py); ignored when the encoder trains, uses FiLM, or LoRA is on.
    cache_vision_features: bool = True
    val_fraction: float = 0.1
    # validation / probes
    val_every: int = 0  # 0 = only at the end
    val_batches: int = 8  # cap on validation batches per evaluation
    val_episodes: int = 3  # episodes drawn in the open-loop plot
    language_probe_threshold: float = 0.02  # mean |Δaction| in normalized units
    # checkpoints
    save_every: int = 0  # 0 = only at the end
    keep_last: int = 3
    resume: bool = False
    # 'full': rank 0 writes the whole optimizer state (safetensors); 'sharded': every rank writes
    # its shard of the training state with torch.distributed.checkpoint (DCP), resumable on any
    # number of ranks; 'auto': sharded under fsdp, full otherwise. model.safetensors (the
    # deployable weights) is always written whole by rank 0 (training/sharded.py).
    checkpoint_format: CheckpointFormat = "auto"
    # parameters
    freeze: list[str] = field(default_factory=list)
    lora: LoraSettings | None = None
    # infrastructure
    log: LogBackend = "tensorboard"
    log_every: int = 10
    # train on a dataset whose decoded frames differ in shape from info.json (data doctor flags it)
    allow_image_shape_mismatch: bool = False
    progress: bool = True
    device: str = "auto"
    distributed: DistributedMode = "auto"
    max_minutes: float | None = None
    # fine-tuning an imported policy (training/init_from.py): its LeRobot pretrained_model
    # folder (or cached hub id); whose normalization stats to train with (the checkpoint's, or
    # recomputed from --data); checkpoint camera -> dataset camera entries "CKPT=DATA"
    init_from: str = ""
    stats: StatsChoice = "keep"
    camera_map: list[str] = field(default_factory=list)
    # model-config overrides forwarded to the recipe (e.g. --model.action_horizon=8)
    model: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        return _from_dict(cls, d, "train config")

    @classmethod
    def from_recipe(cls, recipe: str, overrides: list[str] | None = None) -> TrainConfig:
        """Defaults < the recipe's training hyperparameters < ``--key=value`` overrides."""
        cfg = cls(recipe=recipe, out_dir=f"runs/{recipe}")
        apply_overrides(cfg, [o for o in overrides or [] if o.lstrip("-").startswith("model.")])
        from vlastack.recipes import get_recipe

        r = get_recipe(recipe, **cfg.model)
        for k, v in r.train.items():
            if k in {f.name for f in dataclasses.fields(cls)}:
                setattr(cfg, k, tuple(v) if k == "betas" else v)
        apply_overrides(cfg, overrides or [])
        return cfg

    def validate(self) -> None:
        checks = [
            (self.steps > 0, "steps", "must be positive"),
            (self.batch_size > 0, "batch_size", "must be positive"),
            (self.grad_accum > 0, "grad_accum", "must be >= 1"),
            (self.lr > 0, "lr", "must be positive"),
            (self.warmup_steps >= 0, "warmup_steps", "must be >= 0"),
            (0.0 <= self.val_fraction < 1.0, "val_fraction", "must be in [0, 1)"),
            (self.keep_last >= 1, "keep_last", "must be >= 1"),
            (self.num_workers >= -1, "num_workers", "must be >= 0, or -1 for auto"),
            (self.num_threads >= 0, "num_threads", "must be >= 1, or 0 for auto"),
            (
                self.ema_decay is None or 0.0 < self.ema_decay < 1.0,
                "ema_decay",
                "must be in (0, 1) or None",
            ),
            (self.grad_clip is None or self.grad_clip > 0, "grad_clip", "must be > 0 or None"),
        ]
        for ok, name, why in checks:
            if not ok:
                raise ConfigError(f"train config: {name}={getattr(self, name)!r} {why}")
        if self.data:
            parse_data(self.data)
        if not self.init_from and (self.camera_map or self.stats != "keep"):
            raise ConfigError(
                "train config: camera_map / stats apply to --init-from only (a recipe maps "
                "the dataset's own cameras and uses its stats); drop them or pass --init-from"
            )


# ---- datasets and mixture weights ---------------------------------------------------------------


@dataclass(frozen=True)
class DataSpec:
    """One ``--data`` entry: a dataset folder and its sampling weight (None = by size)."""

    path: str
    weight: float | None = None


def parse_data(entries: list[str]) -> list[DataSpec]:
    """``["A:0.7,B:0.3"]`` or ``["A", "B"]`` -> DataSpecs, with errors naming the entry and fix.

    Syntax: ``PATH[:WEIGHT]``, several joined by commas or given as repeated ``--data``. A path
    that exists is taken whole (so a folder name holding ':' still works). Weights are the share
    of samples drawn from each dataset (normalized to sum to 1); without weights every training
    window is equally likely, i.e. datasets are sampled in proportion to their size.
    """
    specs: list[DataSpec] = []
    for entry in entries:
        for item in (s.strip() for s in str(entry).split(",")):
            if not item:
                continue
            if ":" not in item or Path(item).exists():
                specs.append(DataSpec(item))
                continue
            path, raw = item.rsplit(":", 1)
            try:
                weight = float(raw)
            except ValueError:
                raise ConfigError(
                    f"--data {item!r}: {raw!r} after the last ':' is not a number and {item!r} "
                    "is not an existing folder; write PATH or PATH:WEIGHT (e.g. "
                    "--data data/pusht:0.7,data/aloha:0.3)"
                ) from None
            if not math.isfinite(weight) or weight <= 0:
                raise ConfigError(
                    f"--data {item!r}: weight {weight} must be a positive number; drop the "
                    "dataset instead of giving it weight 0"
                )
            specs.append(DataSpec(path, weight))
    if not specs:
        raise ConfigError("--data is empty; pass --data PATH (a vlastack / LeRobot v3 dataset)")
    weighted = [s.path for s in specs if s.weight is not None]
    if weighted and len(weighted) != len(specs):
        bare = [s.path for s in specs if s.weight is None]
        raise ConfigError(
            f"--data: weights given for {weighted} but not for {bare}; give every dataset a "
            "weight (PATH:WEIGHT) or none (then each is sampled in proportion to its size)"
        )
    seen: set[str] = set()
    for s in specs:
        key = str(Path(s.path).resolve())
        if key in seen:
            raise ConfigError(f"--data: {s.path!r} is given twice; list each dataset once")
        seen.add(key)
    return specs


# ---- overrides ------------------------------------------------------------------------------


def apply_overrides(cfg: Any, overrides: list[str]) -> Any:
    """Apply ``["--lr=3e-4", "--lora.rank=4", "--freeze=vision,language"]`` to ``cfg`` in place.

    Keys walk nested dataclasses with dots; a ``None`` nested dataclass is created with its
    defaults first (so ``--lora.rank=4`` turns LoRA on). ``--lora=none`` turns it off. Keys under
    a ``dict`` field (``--model.x=1``) are stored with a JSON-ish value parse.
    """
    for raw in overrides:
        item = raw[2:] if raw.startswith("--") else raw
        if "=" not in item:
            raise ConfigError(f"override {raw!r} is not of the form --key=value")
        key, value = item.split("=", 1)
        set_by_path(cfg, key.replace("-", "_"), value)
    return cfg


def set_by_path(cfg: Any, key: str, value: str) -> None:
    parts = key.split(".")
    obj = cfg
    for depth, name in enumerate(parts):
        last = depth == len(parts) - 1
        if isinstance(obj, dict):
            if last:
                obj[name] = _parse_loose(value)
            else:
                obj = obj.setdefault(name, {})
            continue
        fields = {f.name: f for f in dataclasses.fields(obj)}
        if name not in fields:
            close = difflib.get_close_matches(name, list(fields), n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            prefix = ".".join(parts[:depth])
            where = f" in '{prefix}'" if prefix else ""
            raise ConfigError(
                f"unknown config key '{key}'{where}.{hint} Known: {', '.join(sorted(fields))}"
            )
        hint_t = _field_type(type(obj), name)
        if last:
            setattr(obj, name, convert(value, hint_t, key))
            continue
        child = getattr(obj, name)
        if child is None:
            cls = _dataclass_in(hint_t)
            if cls is None:
                raise ConfigError(f"config key '{key}': '{name}' has no sub-keys")
            child = cls()
            setattr(obj, name, child)
        obj = child


def _field_type(cls: type, name: str) -> Any:
    return typing.get_type_hints(cls)[name]


def _dataclass_in(tp: Any) -> type | None:
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return tp
    for a in get_args(tp):
        if dataclasses.is_dataclass(a) and isinstance(a, type):
            return a
    return None


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def convert(value: str, tp: Any, key: str = "") -> Any:
    """Convert the string ``value`` to the annotated type ``tp`` (with a clear error)."""
    if _is_union(tp):
        args = get_args(tp)
        if type(None) in args and value.strip().lower() in ("none", "null", ""):
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return convert(value, a, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError("; ".join(errors))
    origin = get_origin(tp)
    try:
        if tp is bool:
            low = value.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true/false")
        if tp is int:
            return int(value)
        if tp is float:
            return float(value)
        if tp is str or tp is Any:
            return value
        if origin is Literal:
            allowed = get_args(tp)
            if value not in allowed:
                close = difflib.get_close_matches(value, [str(a) for a in allowed], n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"expected one of {list(allowed)}.{hint}")
            return value
        if origin in (list, tuple):
            items = _split_list(value)
            args = get_args(tp)
            if origin is tuple and args and args[-1] is not Ellipsis:
                if len(items) != len(args):
                    raise ValueError(f"expected {len(args)} comma-separated values")
                return tuple(convert(v, a, key) for v, a in zip(items, args))
            elem = args[0] if args else str
            conv = [convert(v, elem, key) for v in items]
            return conv if origin is list else tuple(conv)
        if origin is dict or tp is dict:
            parsed = json.loads(value)
            if not isinstance(parsed, dict):
                raise ValueError("expected a JSON object")
            return parsed
        if dataclasses.is_dataclass(tp):
            if value.strip().lower() in ("on", "true", "default"):
                return tp()  # type: ignore[operator]
            raise ValueError(f"set its fields with --{key}.FIELD=VALUE")
    except ConfigError:
        raise
    except (ValueError, json.JSONDecodeError) as exc:
        raise ConfigError(f"config key '{key}': cannot use {value!r} ({exc})") from None
    raise ConfigError(f"config key '{key}': unsupported type {tp}")


def _split_list(value: str) -> list[str]:
    v = value.strip()
    if v.startswith("["):
        return [str(x) for x in json.loads(v)]
    if v.startswith("("):
        v = v[1:-1]
    return [s.strip() for s in v.split(",") if s.strip()] if v else []


def _parse_loose(value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        low = value.lower()
        if low in ("true", "false"):
            return low == "true"
        if low in ("none", "null"):
            return None
        return value


def _from_dict(cls: Any, d: dict[str, Any], source: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ConfigError(f"{source}: unknown keys {sorted(unknown)}")
    kwargs: dict[str, Any] = {}
    for k, v in d.items():
        sub = _dataclass_in(hints[k])
        if sub is not None and isinstance(v, dict):
            v = _from_dict(sub, v, f"{source}.{k}")
        elif get_origin(hints[k]) is tuple and isinstance(v, list):
            v = tuple(v)
        kwargs[k] = v
    return cls(**kwargs)
