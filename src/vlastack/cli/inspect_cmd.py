"""``vlastack inspect CHECKPOINT``: explain a checkpoint's inputs, outputs and normalization.

Reads only the folder's JSON files and the safetensors header (no model is built, no weights are
loaded), and says what a robot client must send and what it gets back: cameras, image sizes and
orientation, state and action names/units/semantics, chunk lengths, stats, and the openpi
observation dict for ``vlastack serve``. Silent I/O and normalization mismatches are the most
reported VLA deployment failure (USERS.md #2); ``vlastack data info`` is the dataset side.
A folder of another registered checkpoint format (a LeRobot ``pretrained_model`` folder) is
explained by its format's ``describe`` (``vlastack.pretrained.lerobot.describe``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vlastack.errors import ConfigError, DataError

# What a checkpoint folder holds (training/checkpoint.py writes it, checkpoints.py reads it), for
# error messages.
CHECKPOINT_FILES = (
    "model.safetensors (weights), config.json (recipe, model, train), normalization.json "
    "(stats), embodiment.json (robot), format_version"
)
REQUIRED_FILES = ("config.json", "normalization.json", "model.safetensors")
# Stats each normalization mode reads (data/normalization.py REQUIRED_STATS), shown per dim.
MODE_COLUMNS = {
    "mean_std": ("mean", "std"),
    "min_max": ("min", "max"),
    "quantile": ("q01", "q99"),
    "identity": (),
}
STATE_KEY, ACTION_KEY = "observation.state", "action"


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "inspect",
        help="explain a checkpoint's inputs, outputs, units and normalization",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "checkpoint",
        help="checkpoint folder (or a run folder: uses checkpoints/last), or a LeRobot "
        "pretrained_model folder",
    )
    p.add_argument(
        "--embodiment",
        default=None,
        metavar="NAME",
        help="mixture checkpoints: show only this member (name or robot_type)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vlastack.policy_formats import resolve_checkpoint_arg

    args.checkpoint = str(resolve_checkpoint_arg(args.checkpoint))  # a hub id: its cached copy
    imported = describe_registered(args.checkpoint, args.embodiment)
    if imported is not None:
        facts, text = imported
        print(json.dumps(facts, indent=2) if args.json else text)
        return 0
    info = describe_checkpoint(args.checkpoint, embodiment=args.embodiment)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(format_text(info))
    return 0


# ---- reading ----------------------------------------------------------------------------


def describe_registered(
    path: str | Path, embodiment: str | None = None
) -> tuple[dict[str, Any], str] | None:
    """(facts, text) for a folder a registered checkpoint format claims (a LeRobot
    ``pretrained_model`` folder); None for a native checkpoint."""
    from vlastack.policy_formats import detect_policy_format

    fmt = detect_policy_format(path)
    if fmt is None:
        return None
    if embodiment is not None:
        raise ConfigError(
            f"{path} is a single-robot {fmt.name} checkpoint; --embodiment selects a mixture "
            "member, which it has none of: drop --embodiment"
        )
    if fmt.obj.describe is None:
        raise ConfigError(
            f"{path} is a {fmt.name} checkpoint, whose plugin cannot describe it; load it with "
            "`vlastack bench latency` or `vlastack serve` to see its metadata"
        )
    return fmt.obj.describe(Path(path))


def _resolve(path: str | Path) -> Path:
    """The checkpoint folder, or a ConfigError saying what is missing and what belongs there."""
    from vlastack.checkpoints import resolve_checkpoint

    p = Path(path)
    if not p.exists():
        raise ConfigError(
            f"{p}: no such folder. Pass a checkpoint folder written by `vlastack train`, "
            f"e.g. runs/NAME/checkpoints/step_001000 (it holds {CHECKPOINT_FILES})"
        )
    try:
        ckpt = resolve_checkpoint(p)
    except DataError:
        found = sorted(x.name for x in p.iterdir())[:8] if p.is_dir() else [p.name]
        raise ConfigError(
            f"{p}: not a checkpoint folder: no format_version file (also looked in "
            f"checkpoints/last and last); found {found}. A checkpoint folder holds "
            f"{CHECKPOINT_FILES}; pass e.g. runs/NAME/checkpoints/step_001000"
        ) from None
    for name in REQUIRED_FILES:
        if not (ckpt / name).is_file():
            raise ConfigError(
                f"{ckpt}: missing {name}, so this checkpoint is incomplete. A checkpoint folder "
                f"holds {CHECKPOINT_FILES}; re-save it or pick another step folder"
            )
    return ckpt


def _read_json(path: Path) -> Any:
    from vlastack.errors import DataError

    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); the checkpoint is damaged") from None


def weight_summary(path: Path) -> dict[str, Any]:
    """Parameter counts per top-level module from the safetensors header (no tensor is read)."""
    from vlastack.checkpoints import weight_summary as summary

    return {
        **summary(path),
        "source": "model.safetensors header (weights and buffers; frozen MiniLM is not stored)",
    }


def _registry_description(family: str, name: str) -> str:
    """One-line description of a registered component ('' if the registry cannot say)."""
    reg: Any
    try:
        if family == "vision":
            from vlastack.models.vision import VISION_ENCODERS as reg
        elif family == "language":
            from vlastack.models.language import LANGUAGE_BACKBONES as reg
        else:
            from vlastack.models.action_heads import ACTION_HEADS as reg
    except ImportError:
        return ""
    return next((e.description for e in reg.entries() if e.name == name), "")


def _flat(values: Any, where: str = "normalization.json") -> list[float]:
    import numpy as np

    try:
        return [float(x) for x in np.asarray(values, dtype=np.float64).reshape(-1)]
    except (TypeError, ValueError):
        raise DataError(
            f"{where}: holds a value that is not a number ({str(values)[:80]}); stats must be "
            "lists of numbers: restore the file from the checkpoint's source or recompute it"
        ) from None


def _vector(
    key: str,
    dim: int,
    spec: Any,
    norm: Mapping[str, Any],
    problems: list[str],
    label: str,
) -> dict[str, Any]:
    """Per-dimension rows (name, unit, range, stats of the key's mode) for state or action."""
    modes = norm.get("modes", {}) or {}
    stats = (norm.get("stats", {}) or {}).get(key, {}) or {}
    mode = modes.get(key)
    names: list[str] | None = None
    units: list[str] | None = None
    if spec is not None:
        if spec.dim == dim:
            names, units = list(spec.names), list(spec.units) if spec.units else None
        else:
            problems.append(
                f"{label}: embodiment lists {spec.dim} {key} names but the policy reads/writes "
                f"{dim} values; names and units not shown"
            )
    if dim and mode is None:
        problems.append(
            f"{label}: normalization.json has no mode for {key!r}; the policy would use raw values"
        )
    cols = MODE_COLUMNS.get(str(mode), ())
    col_values: dict[str, list[float]] = {}
    for c in cols:
        if c not in stats:
            problems.append(f"{label}: normalization.json stats[{key!r}] lacks {c!r} ({mode})")
            continue
        v = _flat(stats[c], f"{label}: normalization.json stats[{key!r}][{c!r}]")
        if len(v) != dim and dim:
            problems.append(
                f"{label}: stats[{key!r}][{c!r}] has {len(v)} values, the policy uses {dim}"
            )
        col_values[c] = v
    rows = []
    for i in range(dim):
        row: dict[str, Any] = {
            "index": i,
            "name": names[i] if names else None,
            "unit": units[i] if units else None,
        }
        if spec is not None and names and spec.low is not None and spec.high is not None:
            row["low"], row["high"] = float(spec.low[i]), float(spec.high[i])
        for c, v in col_values.items():
            row[c] = v[i] if i < len(v) else None
        rows.append(row)
    out: dict[str, Any] = {
        "dim": dim,
        "kind": spec.kind if spec is not None and names else None,
        "normalization": mode,
        "dims": rows,
    }
    if spec is not None and names and spec.gripper_index is not None:
        out["gripper_index"] = spec.gripper_index
    return out


def _member(
    entry: Any,
    cfg: Any,
    ckpt_path: Path,
    is_mixture: bool,
    execute_horizon: int,
    mixture_names: list[str],
) -> dict[str, Any]:
    """Inputs, outputs, stats and client view of one robot, sized as ``Policy`` would act."""
    from vlastack.data.normalization import Normalizer
    from vlastack.errors import DataError
    from vlastack.policy import member_layout

    problems: list[str] = []
    label = f"member {entry.name!r}" if is_mixture else "checkpoint"
    cameras, state_dim, action_dim, pad_cameras = member_layout(entry, cfg, is_mixture)
    emb = entry.embodiment
    norm = entry.normalization or {}
    try:
        Normalizer.from_dict(norm, source=f"{ckpt_path}/normalization.json")
    except DataError as exc:
        problems.append(f"{label}: stats do not load: {exc}")
    if emb is None:
        problems.append(
            f"{label}: no embodiment spec, so units, action kind (absolute/delta) and the "
            "gripper dim are unknown; retrain from a dataset with meta/embodiment.json"
        )
    H, W = cfg.image_size
    cams_out = []
    for c in cameras:
        cs = None
        if emb is not None:
            cs = next((x for x in emb.cameras if x.name == c), None)
        cams_out.append(
            {
                "key": f"observation.images.{c}",
                "name": c,
                "model_height": H,
                "model_width": W,
                "native_height": cs.height if cs else None,
                "native_width": cs.width if cs else None,
                "channels": cs.channels if cs else 3,
                "orientation": cs.orientation if cs else "upright",
                "dtype": "uint8",
            }
        )
    lang = cfg.language
    state = _vector(STATE_KEY, state_dim, emb.state if emb else None, norm, problems, label)
    action = _vector(ACTION_KEY, action_dim, emb.action if emb else None, norm, problems, label)
    obs_keys = [f"observation.images.{c}" for c in cameras]
    if state_dim:
        obs_keys.append(STATE_KEY)
    obs_keys.append("task")
    metadata: dict[str, Any] = {
        "action_horizon": cfg.action_horizon,
        "execute_horizon": execute_horizon,
        "obs_horizon": cfg.obs_horizon,
        "action_dim": action_dim,
        "state_dim": state_dim,
        "cameras": cameras,
        "image_size": [H, W],
        "embodiment": emb.to_dict() if emb else None,
        "observation_keys": obs_keys,
    }
    if is_mixture:
        metadata.update(
            embodiment_name=entry.name,
            robot_type=emb.robot_type if emb else None,
            mixture_members=mixture_names,
        )
    send: dict[str, str] = {}
    for cam_out in cams_out:
        send[cam_out["key"]] = (
            f"uint8 (H, W, 3) RGB, upright; {H}×{W} as trained (another H×W is resized to it)"
        )
    if state_dim:
        send[STATE_KEY] = f"float32 ({state_dim},), raw robot units (normalized by the policy)"
    send["task"] = (
        "str, the language instruction"
        if lang != "none"
        else "str, optional: this model has no language input (language='none')"
    )
    aliases = {f"observation.images.{c}": [f"observation/{c}", f"images/{c}", c] for c in cameras}
    if state_dim:
        aliases[STATE_KEY] = ["observation/state", "state"]
    aliases["task"] = ["prompt"]
    return {
        "name": entry.name,
        "robot_type": emb.robot_type if emb else None,
        "control_hz": emb.control_hz if emb else None,
        "dataset": entry.dataset,
        "weight": entry.weight,
        "inputs": {
            "cameras": cams_out,
            "padded_cameras": pad_cameras,
            "state": state,
            "state_padded_to": cfg.state_dim if is_mixture and cfg.state_dim > state_dim else None,
            "instruction": {
                "expected": lang != "none",
                "language": lang,
                "default_if_missing": "",
            },
        },
        "outputs": {
            "action": action,
            "action_padded_from": cfg.action_dim
            if is_mixture and cfg.action_dim > action_dim
            else None,
            "chunk_length": cfg.action_horizon,
            "execute_horizon": execute_horizon,
            "control_hz": emb.control_hz if emb else None,
        },
        "normalization": {
            "modes": dict(norm.get("modes", {}) or {}),
            "stats_keys": {k: sorted(v) for k, v in (norm.get("stats", {}) or {}).items()},
        },
        "client": {
            "send": send,
            "also_accepted": aliases,
            "reply": {
                "actions": f"float32 ({cfg.action_horizon}, {action_dim}), robot units",
                "policy_timing": "{infer_ms}",
                "server_timing": "{infer_ms, prev_total_ms}",
            },
            "metadata": metadata,
            "serve": f"vlastack serve {ckpt_path}"
            + (f" --embodiment {entry.name}" if is_mixture else ""),
        },
        "problems": problems,
    }


def describe_checkpoint(path: str | Path, embodiment: str | None = None) -> dict[str, Any]:
    """Everything ``vlastack inspect`` prints, as one JSON-serialisable dict."""
    from vlastack.checkpoints import FORMAT_VERSION, STEP_PREFIX, Checkpoint
    from vlastack.errors import DataError
    from vlastack.models.vla import VLAConfig
    from vlastack.policy import UnknownEmbodimentError

    p = _resolve(path)
    raw_version = (p / "format_version").read_text().strip()
    try:
        version = int(raw_version)
    except ValueError:
        raise ConfigError(f"{p}/format_version: {raw_version!r} is not an integer") from None
    if version != FORMAT_VERSION:
        raise ConfigError(
            f"{p}: checkpoint format_version {version}, this vlastack reads {FORMAT_VERSION}; "
            + ("upgrade vlastack" if version > FORMAT_VERSION else "migrate the checkpoint")
        )
    config = _read_json(p / "config.json")
    normalization = _read_json(p / "normalization.json")
    model_d = config.get("model")
    if not isinstance(model_d, Mapping):
        raise ConfigError(f"{p}/config.json has no 'model' section; not a VLA checkpoint")
    cfg = VLAConfig.from_dict(model_d)
    from vlastack.embodiment import EmbodimentSpec

    emb = EmbodimentSpec.load(p / "embodiment.json") if (p / "embodiment.json").is_file() else None
    # weights={} : the Checkpoint helpers for embodiments never touch the weights.
    ckpt = Checkpoint(p, {}, config, normalization, emb, version)
    entries = ckpt.embodiments()
    names = [e.name for e in entries]
    if embodiment is not None:
        if ckpt.is_mixture:
            try:
                entries = [ckpt.select_embodiment(embodiment)]
            except DataError as exc:
                raise UnknownEmbodimentError(str(exc)) from None
        elif embodiment not in (entries[0].name, getattr(emb, "robot_type", None)):
            raise ConfigError(
                f"{p} was trained on one robot ({entries[0].name!r}), not {embodiment!r}; "
                "drop --embodiment"
            )
    extra = config.get("recipe_extra", {}) or {}
    execute_horizon = int(extra.get("execute_horizon") or max(1, cfg.action_horizon // 2))
    step = None
    if (p / "trainer_state.json").is_file():
        step = _read_json(p / "trainer_state.json").get("step")
    if step is None and p.name.startswith(STEP_PREFIX):
        step = int(p.name[len(STEP_PREFIX) :])
    train = config.get("train", {}) or {}
    mix = config.get("mixture") or None
    return {
        "path": str(p),
        "format_version": version,
        "step": step,
        "resumable": (p / "trainer_state.json").is_file(),
        "vlastack_version": config.get("vlastack_version"),
        "recipe": config.get("recipe") or None,
        "trained_on": list(train.get("data", []) or []),
        "model": {
            "vision": cfg.vision,
            "vision_description": _registry_description("vision", cfg.vision),
            "language": cfg.language,
            "language_description": _registry_description("language", cfg.language),
            "head": cfg.head,
            "head_description": _registry_description("head", cfg.head),
            "projector": cfg.projector,
            "action_horizon": cfg.action_horizon,
            "execute_horizon": execute_horizon,
            "execute_horizon_source": "recipe" if extra.get("execute_horizon") else "default H/2",
            "obs_horizon": cfg.obs_horizon,
            "image_size": list(cfg.image_size),
            "cameras": list(cfg.cameras),
            "state_dim": cfg.state_dim,
            "action_dim": cfg.action_dim,
            "quantization": config.get("quantization"),
        },
        "parameters": weight_summary(p / "model.safetensors"),
        "mixture": {"default": mix.get("default"), "members": names} if mix else None,
        "embodiments": [
            _member(e, cfg, p, ckpt.is_mixture, execute_horizon, names) for e in entries
        ],
    }


# ---- text -------------------------------------------------------------------------------


def _num(x: Any) -> str:
    return "" if x is None else f"{x:.4g}"


def _dims_table(v: Mapping[str, Any], indent: str = "    ") -> list[str]:
    cols = [
        c for c in ("mean", "std", "min", "max", "q01", "q99") if v["dims"] and c in v["dims"][0]
    ]
    head = f"{indent}{'dim':>3}  {'name':<18}{'unit':<10}" + "".join(f"{c:>10}" for c in cols)
    lines = [head + "  range"] if v["dims"] else []
    for r in v["dims"]:
        rng = f"[{r['low']:g}, {r['high']:g}]" if "low" in r else ""
        grip = "  gripper" if v.get("gripper_index") == r["index"] else ""
        lines.append(
            f"{indent}{r['index']:>3}  {str(r['name'] or '?'):<18}{str(r['unit'] or '?'):<10}"
            + "".join(f"{_num(r.get(c)):>10}" for c in cols)
            + f"  {rng}{grip}".rstrip()
        )
    return lines


def _member_text(m: Mapping[str, Any], model: Mapping[str, Any], mixture: bool) -> list[str]:
    ins, outs = m["inputs"], m["outputs"]
    hz = f" @ {m['control_hz']:g} Hz" if m["control_hz"] else " (control rate unknown)"
    title = f"robot {m['robot_type'] or '?'}{hz}"
    if mixture:
        w = f", {m['weight']:.0%} of training samples" if m["weight"] is not None else ""
        title = f"member {m['name']!r}: {title}{w}"
    lines = [title]
    lines.append("  INPUTS (send one observation per call; the policy keeps its own history)")
    for c in ins["cameras"]:
        native = (
            f"; robot camera {c['native_height']}×{c['native_width']}" if c["native_height"] else ""
        )
        lines.append(
            f"    {c['key']}: uint8 H×W×3 RGB, {c['orientation']}; resized to "
            f"{c['model_height']}×{c['model_width']}{native}"
        )
    for c in ins["padded_cameras"]:
        lines.append(f"    (observation.images.{c}: not this robot's; fed as a masked zero image)")
    st = ins["state"]
    if st["dim"]:
        pad = f", zero-padded to {ins['state_padded_to']}" if ins["state_padded_to"] else ""
        lines.append(
            f"    observation.state: float32 ({st['dim']},) raw units, "
            f"normalized {st['normalization'] or 'NOT'}{pad}"
        )
        lines += _dims_table(st, "      ")
    else:
        lines.append("    observation.state: not used (state_dim 0)")
    instr = ins["instruction"]
    lines.append(
        f"    task: language instruction ({instr['language']})"
        if instr["expected"]
        else "    task: ignored (this model has no language input)"
    )
    act = outs["action"]
    lines.append("  OUTPUTS")
    kind = act["kind"] or "kind unknown (absolute/delta?)"
    hz = f" at {outs['control_hz']:g} Hz" if outs["control_hz"] else ""
    lines.append(
        f"    actions: float32 ({outs['chunk_length']}, {act['dim']}), {kind}, robot units "
        f"(un-normalized from {act['normalization'] or 'NOT normalized'}); execute the first "
        f"{outs['execute_horizon']} of {outs['chunk_length']}{hz}, then ask again"
    )
    if outs["action_padded_from"]:
        lines.append(f"    (the model predicts {outs['action_padded_from']} dims; padding cut off)")
    lines += _dims_table(act, "      ")
    norm = m["normalization"]
    lines.append("  NORMALIZATION (inside the policy: send raw values, get raw actions)")
    for key, stat_names in norm["stats_keys"].items():
        mode = norm["modes"].get(key, "not normalized")
        lines.append(f"    {key}: {mode} (stats: {', '.join(stat_names)})")
    for key, mode in norm["modes"].items():
        if key not in norm["stats_keys"]:
            lines.append(f"    {key}: {mode} (NO STATS)")
    cl = m["client"]
    lines.append(f"  OPENPI CLIENT ({cl['serve']})")
    lines.append("    send one dict (msgpack-numpy) per call:")
    for k, v in cl["send"].items():
        alias = " / ".join(repr(a) for a in cl["also_accepted"].get(k, []))
        lines.append(f"      {k!r}: {v}" + (f"  (or {alias})" if alias else ""))
    lines.append("    reply: {" + ", ".join(f"{k!r}: {v}" for k, v in cl["reply"].items()) + "}")
    lines.append("    metadata frame on connect: " + ", ".join(cl["metadata"]))
    for pr in m["problems"]:
        lines.append(f"  WARNING: {pr}")
    return lines


def format_text(info: Mapping[str, Any]) -> str:
    """The plain-words report of ``describe_checkpoint``'s dict."""
    m = info["model"]
    step = f"step {info['step']}" if info["step"] is not None else "step ?"
    ver = f", vlastack {info['vlastack_version']}" if info["vlastack_version"] else ""
    lines = [f"checkpoint {info['path']}", f"  format {info['format_version']}, {step}{ver}"]
    if info["recipe"]:
        lines.append(f"  recipe: {info['recipe']}")
    for part in ("vision", "language", "head"):
        desc = m[f"{part}_description"]
        lines.append(f"  {part}: {m[part]}" + (f" ({desc})" if desc else ""))
    lines.append(
        f"  action_horizon {m['action_horizon']} (chunk length), execute_horizon "
        f"{m['execute_horizon']} ({m['execute_horizon_source']}), obs_horizon {m['obs_horizon']}"
    )
    prm = info["parameters"]
    groups = ", ".join(f"{g} {n:,}" for g, n in prm["by_module"].items())
    dts = "/".join(prm["dtypes"])
    lines.append(f"  parameters: {prm['total']:,} ({dts}, {prm['file_mb']} MB): {groups}")
    if m["quantization"]:
        lines.append(f"  quantization: {m['quantization']}")
    if info["trained_on"]:
        lines.append(f"  trained on: {', '.join(info['trained_on'])}")
    mix = info["mixture"]
    if mix:
        lines.append(
            f"  mixture of {len(mix['members'])} robots (default {mix['default']!r}); model sizes "
            f"state {m['state_dim']}, action {m['action_dim']}, cameras {m['cameras']}"
        )
        lines.append(f"    {'member':<14}{'robot':<16}{'state':>6}{'action':>7}  cameras")
        for e in info["embodiments"]:
            lines.append(
                f"    {e['name']:<14}{str(e['robot_type']):<16}{e['inputs']['state']['dim']:>6}"
                f"{e['outputs']['action']['dim']:>7}  "
                + ", ".join(c["name"] for c in e["inputs"]["cameras"])
            )
    for e in info["embodiments"]:
        lines.append("")
        lines += _member_text(e, m, bool(mix))
    return "\n".join(lines)
