"""``vlastack export``: quantize a checkpoint, compare it with its source, export heads to ONNX.

``vlastack export quantize CKPT --method int8 --out DIR`` writes a loadable checkpoint folder;
``vlastack export compare SRC QUANT --dataset DATA`` prints open-loop error, latency and memory of
both; ``vlastack export onnx CKPT --out DIR`` writes the action head's ONNX graphs + manifest.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def _parts(text: str | None) -> list[str] | None:
    return [p.strip() for p in text.split(",") if p.strip()] if text else None


def run_quantize(args: argparse.Namespace) -> int:
    from vlastack.export.quantize import quantization_info, quantize_checkpoint

    out = quantize_checkpoint(
        args.checkpoint,
        args.out,
        args.method,
        _parts(args.parts),
        backend=args.backend,
        overwrite=args.overwrite,
    )
    info = quantization_info(out) or {}
    print(
        f"wrote {out} ({info.get('method')}, parts {','.join(info.get('parts', []))}, "
        f"{info.get('num_layers')} linear layers)"
    )
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from vlastack.export.comparison import compare

    res = compare(
        args.reference,
        args.quantized,
        args.dataset,
        max_windows=args.max_windows,
        latency_repeats=args.repeats,
        measure_rss=not args.no_rss,
        sim_env=args.sim_env,
        sim_episodes=args.sim_episodes,
    )
    rows = [
        ("action MAE (orig. units)", "action_mae", "{:.5f}"),
        ("action RMSE", "action_rmse", "{:.5f}"),
        ("latency p50 ms / chunk", "latency_ms_p50", "{:.2f}"),
        ("latency p95 ms / chunk", "latency_ms_p95", "{:.2f}"),
        ("parameter MB", "param_bytes", "{:.3f}"),
        ("peak RSS delta MB", "peak_rss_delta_mb", "{:.1f}"),
        ("RSS delta MB (after)", "rss_delta_mb", "{:.1f}"),
        ("success rate", "success_rate", "{:.3f}"),
    ]
    print(f"{'':28s}{'reference':>14s}{'quantized':>14s}")
    for label, key, fmt in rows:
        if key not in res["reference"]:
            continue
        vals = []
        for side in ("reference", "quantized"):
            v = res[side][key]
            v = v / 1e6 if key == "param_bytes" else v
            vals.append("n/a" if v is None else fmt.format(v))
        print(f"{label:28s}{vals[0]:>14s}{vals[1]:>14s}")
    print(f"quantized vs reference MAE: {res['quantized_vs_reference_mae']:.5f}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    print(json.dumps(res))
    return 0


def run_onnx(args: argparse.Namespace) -> int:
    from vlastack.export.onnx_lerobot import export_any_onnx  # native or imported (LeRobot)

    manifest = export_any_onnx(
        args.checkpoint,
        args.out,
        _parts(args.parts) or None,
        opset=args.opset,
        check=not args.no_check,
        atol=args.atol,
    )
    for g in manifest["graphs"].values():
        err = g.get("max_abs_error")
        parity = "" if err is None else f"  onnxruntime vs torch max |err| {err:.2e}"
        print(f"{Path(args.out) / g['file']}{parity}")
    return 0


def run_lerobot(args: argparse.Namespace) -> int:
    from vlastack.pretrained.lerobot.write import export_checkpoint

    out = export_checkpoint(args.checkpoint, args.out, force=args.force)
    print(f"wrote {out} (LeRobot pretrained_model folder: {', '.join(sorted(os.listdir(out)))})")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export", help="quantize checkpoints (int8, ternary) and export action heads to ONNX"
    )
    sub = p.add_subparsers(dest="export_command", metavar="ACTION")
    p.set_defaults(func=lambda a: (p.print_help(), 0)[1])

    q = sub.add_parser("quantize", help="write an int8 or ternary (1.58-bit) copy of a checkpoint")
    q.add_argument("checkpoint", help="checkpoint folder (or run folder / checkpoints folder)")
    q.add_argument("--method", choices=["int8", "ternary"], default="int8")
    q.add_argument("--out", required=True, help="new checkpoint folder to write")
    q.add_argument(
        "--parts",
        default=None,
        help="comma list of vision,language,projector,trunk,state,head "
        "(default int8: all; ternary: vision,projector,trunk,head)",
    )
    q.add_argument(
        "--backend",
        choices=["auto", "dynamic", "weight_only"],
        default="auto",
        help="int8 kernels at load: torch.ao dynamic (int8 activations) or weight-only",
    )
    q.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    q.set_defaults(func=run_quantize)

    c = sub.add_parser("compare", help="accuracy, latency and memory of a quantized checkpoint")
    c.add_argument("reference", help="full-precision checkpoint")
    c.add_argument("quantized", help="checkpoint written by `vlastack export quantize`")
    c.add_argument("--dataset", required=True, help="LeRobot v3 dataset (validation episodes)")
    c.add_argument("--max-windows", type=int, default=64)
    c.add_argument("--repeats", type=int, default=20, help="timed chunks per policy")
    c.add_argument("--no-rss", action="store_true", help="skip the peak-RSS subprocesses")
    c.add_argument(
        "--sim-env", default=None, help="also roll out in this env/task (e.g. Meta-World)"
    )
    c.add_argument("--sim-episodes", type=int, default=5)
    c.add_argument("--json", default=None, help="also write the result to this file")
    c.set_defaults(func=run_compare)

    o = sub.add_parser("onnx", help="export the action head (prefix/step/sampler) to ONNX")
    o.add_argument("checkpoint")
    o.add_argument("--out", required=True, help="folder for the .onnx files and manifest.json")
    o.add_argument(
        "--parts",
        default=None,
        help="comma list of prefix,step,sampler (default all; imported SmolVLA / pi0 / pi0.5: "
        "prefix,step, the unrolled sampler only when named)",
    )
    o.add_argument("--opset", type=int, default=17)
    o.add_argument("--atol", type=float, default=1e-4, help="parity tolerance vs PyTorch")
    o.add_argument("--no-check", action="store_true", help="skip the onnxruntime parity check")
    o.set_defaults(func=run_onnx)

    r = sub.add_parser(
        "lerobot",
        help="write an imported LeRobot ACT/Diffusion/pi0 policy back as pretrained_model",
    )
    r.add_argument("checkpoint", help="LeRobot ACT, Diffusion, pi0 or pi05 pretrained_model folder")
    r.add_argument("--out", required=True, help="folder to write (LeRobot's layout)")
    r.add_argument("--force", action="store_true", help="replace a non-empty --out")
    r.set_defaults(func=run_lerobot)
