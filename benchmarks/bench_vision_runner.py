"""The CNN vision encoders at inference, as a ``Policy`` runs them on a CPU, beside the plain
modules: MobileNetV2 (the demo's 14 blocks) and a ResNet-18-shaped ``hf_resnet``, at 96², batch
1 and 8, one torch thread, random BatchNorm statistics, interleaved rounds.

``policy`` is the encoder as the device's default runner runs it (``native``: each eval
Conv→BatchNorm pair folded, ``runners/native/vision.py``); ``plain`` is the module itself.
``--src`` points at another checkout's ``src`` to time it the same way: a tree from before
issue #25's vision seam folded inside the modules (``policy``: the module under ``no_grad``;
``plain``: the same under ``reference_inference()``). Use CPU time on a shared machine:

    .venv/bin/python benchmarks/cpu_time.py benchmarks/bench_vision_runner.py [--src DIR]

Prints a table, then one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

RESNET18 = {
    "embedding_size": 64,
    "hidden_sizes": [64, 128, 256, 512],
    "depths": [2, 2, 2, 2],
    "layer_type": "basic",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", default=str(Path(__file__).resolve().parents[1] / "src"))
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--size", type=int, default=96)
    args = ap.parse_args()
    sys.path.insert(0, args.src)
    import torch

    from vlastack.models.vision import build_vision_encoder

    torch.set_num_threads(1)
    try:
        from vlastack.runners import default_runner, get_runner

        runner = get_runner(default_runner("cpu"))
        seam = hasattr(runner, "vision")
    except ImportError:
        seam = False
    reference: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    if not seam:  # before the vision seam: the folding was inside the modules
        from vlastack.models.layers.inference import reference_inference

        reference = reference_inference
    torch.manual_seed(0)
    encoders = {
        "mobilenet_v2 (14 blocks)": build_vision_encoder(
            "mobilenet_v2", {"pretrained": False, "num_layers": 14}
        ),
        "resnet18": build_vision_encoder("hf_resnet", {"config": RESNET18}),
    }
    rows = []
    for name, enc in encoders.items():
        g = torch.Generator().manual_seed(1)
        for m in enc.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
        enc.eval()
        fast = (runner.vision(enc) or enc) if seam else enc
        for bs in (1, 8):
            x = torch.rand(bs, 3, args.size, args.size)

            def plain(enc: torch.nn.Module = enc, x: torch.Tensor = x) -> None:
                with torch.no_grad(), reference():
                    enc(x)

            def policy(fast: torch.nn.Module = fast, x: torch.Tensor = x) -> None:
                with torch.no_grad():
                    fast(x)

            times: dict[str, list[float]] = {"plain": [], "policy": []}
            rounds = args.rounds * (4 if bs == 1 else 1)
            for r in range(rounds + 2):
                for k, fn in (("plain", plain), ("policy", policy)):
                    t = time.perf_counter()
                    fn()
                    if r >= 2:
                        times[k].append((time.perf_counter() - t) * 1e3)
            row = {
                "case": f"{name} batch {bs}",
                **{f"{k}_p50_ms": statistics.median(v) for k, v in times.items()},
                **{f"{k}_min_ms": min(v) for k, v in times.items()},
            }
            row["speedup_p50"] = row["plain_p50_ms"] / row["policy_p50_ms"]
            rows.append(row)
            print(
                f"{row['case']:<32} plain {row['plain_p50_ms']:8.2f} ms  policy "
                f"{row['policy_p50_ms']:8.2f} ms  ({row['speedup_p50']:.2f}x)",
                flush=True,
            )
    print(json.dumps({"src": args.src, "vision_seam": seam, "rows": rows}))


if __name__ == "__main__":
    main()
