"""What each of vlastack's CPU-path optimizations buys, measured one at a time (issues 4 and 5).

Every row times the same computation both ways in one process, interleaved (each round runs
each variant once, so machine load hits both alike), and reports the medians and their ratio:

* ``maxpool``: a ResNet stem's 3×3/2 max pool, forward + backward, batch 8 at 96² (the
  8×64×48×48 map), ``nn.MaxPool2d`` vs ``fusion.FastMaxPool2d``, fp32 and bf16.
* ``resnet18 step``: forward + backward of a ResNet-18-shaped ``hf_resnet`` (frozen BatchNorm,
  as ``bench_train.py --same-arch``) with the stock pool vs the fast one.
* ``attention bf16``: the heads' attention forward + backward under bf16 autocast at ACT's
  training size (8 × 4 heads × 20 × 16), PyTorch's bf16 kernel vs ``layers.attention.sdpa`` (float32).
* ``ACT GEMM``: the ACT chunk's four GEMM shapes at 16 rows, 24 distinct weights in turn, MKL
  ``addmm`` (eager LeRobot) vs the oneDNN prepacked linear (vlastack's fast path), in GFLOP/s
  beside the 2048² matmul peak.
* ``bn fold``: MobileNetV2 (the demo's 14 blocks) and the ResNet-18 at inference, batch 1 and 8
  at 96², Conv→BatchNorm unfolded (the plain module) vs folded (the native runner's encoder).
* ``page faults``: a ResNet-18 ACT training step (``training.loop.train``, 20 steps on a real
  dataset when ``--data`` is given) with ``--retain_host_memory`` off vs on, each in its own
  process: median step time and minor page faults per step.

    .venv/bin/python benchmarks/bench_cpu_paths.py [--rounds 15] [--data DATASET]

Prints a table, then one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

RESNET18 = {
    "embedding_size": 64,
    "hidden_sizes": [64, 128, 256, 512],
    "depths": [2, 2, 2, 2],
    "layer_type": "basic",
}


def interleaved(variants: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median ms per variant; every round runs every variant once (after 2 warm-up rounds)."""
    times: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(rounds + 2):
        for k, fn in variants.items():
            t = time.perf_counter()
            fn()
            if r >= 2:
                times[k].append((time.perf_counter() - t) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def pool_rows(rounds: int) -> list[dict]:
    from vlastack.models.vision.fusion import FastMaxPool2d

    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.relu(torch.randn(8, 64, 48, 48)).to(dtype).requires_grad_()
        g = torch.randn(8, 64, 24, 24, dtype=dtype)

        def run(pool: nn.Module, x: torch.Tensor = x, g: torch.Tensor = g) -> Callable[[], None]:
            return lambda: pool(x).backward(g)

        t = interleaved(
            {"stock": run(nn.MaxPool2d(3, 2, 1)), "vlastack": run(FastMaxPool2d(3, 2, 1))}, rounds
        )
        rows.append(row(f"maxpool fwd+bwd 8x64x48x48 {_name(dtype)}", t))
    return rows


def resnet_rows(rounds: int) -> list[dict]:
    from vlastack.models.vision import build_vision_encoder
    from vlastack.models.vision.fusion import FastMaxPool2d

    torch.manual_seed(0)
    fast = build_vision_encoder("hf_resnet", {"config": RESNET18, "freeze_bn": True})
    stock = copy.deepcopy(fast)
    pool = stock.model.embedder.pooler
    assert isinstance(pool, FastMaxPool2d)
    stock.model.embedder.pooler = nn.MaxPool2d(pool.kernel_size, pool.stride, pool.padding)
    fast.train()
    stock.train()
    x = torch.rand(8, 3, 96, 96)
    rows = []
    for dtype in (torch.float32, torch.bfloat16):

        def run(m: nn.Module, dtype: torch.dtype = dtype) -> Callable[[], None]:
            def f() -> None:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype != torch.float32):
                    y = m(x)
                y.float().square().mean().backward()

            return f

        t = interleaved({"stock": run(stock), "vlastack": run(fast)}, max(5, rounds // 2))
        rows.append(row(f"resnet18 fwd+bwd batch 8 96² {_name(dtype)}", t))
    return rows


def attention_rows(rounds: int) -> list[dict]:
    import torch.nn.functional as F

    from vlastack.models.layers.attention import sdpa

    q, k, v = (torch.randn(8, 4, 20, 16, dtype=torch.bfloat16, requires_grad=True) for _ in "qkv")
    g = torch.randn(8, 4, 20, 16, dtype=torch.bfloat16)

    def stock() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            o = F.scaled_dot_product_attention(q, k, v)
        o.backward(g)

    def ours() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            o = sdpa(q, k, v)
        o.backward(g)

    return [
        row(
            "attention fwd+bwd 8x4x20x16 bf16",
            interleaved({"stock": stock, "vlastack": ours}, rounds * 5),
        )
    ]


def gemm_rows(rounds: int) -> list[dict]:
    """The ACT chunk's GEMMs at its 16 query rows, each of 24 weights in turn (as a 4-layer
    decoder streams them): MKL's ``addmm`` (what eager LeRobot runs) vs vlastack's oneDNN
    prepacked linear; GFLOP/s beside the machine's 2048² peak shows what is left."""
    rows = []
    for k, n in ((256, 1024), (1024, 256), (256, 768), (256, 256)):
        x, b = torch.randn(16, k), torch.randn(n)
        ws = [torch.randn(n, k) for _ in range(24)]
        packed = [torch.ops.mkldnn._reorder_linear_weight(w, 16) for w in ws]

        def stock(x: torch.Tensor = x, b: torch.Tensor = b, ws: list = ws) -> None:
            for w in ws:
                torch.addmm(b, x, w.t())

        def ours(x: torch.Tensor = x, b: torch.Tensor = b, ps: list = packed) -> None:
            for w in ps:
                torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")

        with torch.inference_mode():
            t = interleaved({"stock": stock, "vlastack": ours}, rounds * 4)
        r = row(f"ACT GEMM 16x{k}x{n}, 24 weights in turn", t)
        r["gflops"] = {m: 24 * 2 * 16 * k * n / (t[m] * 1e6) for m in t}
        rows.append(r)
    a = torch.randn(2048, 2048)
    with torch.inference_mode():
        ms = interleaved({"stock": lambda: a @ a, "vlastack": lambda: a @ a}, 5)["stock"]
    rows.append({"case": "matmul peak 2048² fp32", "gflops_peak": 2 * 2048**3 / (ms * 1e6)})
    return rows


def fold_rows(rounds: int) -> list[dict]:
    from vlastack.models.vision import build_vision_encoder
    from vlastack.runners.native.vision import fold_encoder

    rows = []
    torch.manual_seed(0)
    encoders = {
        "mobilenet_v2 (14 blocks)": build_vision_encoder(
            "mobilenet_v2", {"pretrained": False, "num_layers": 14}
        ),
        "resnet18": build_vision_encoder("hf_resnet", {"config": RESNET18}),
    }
    for name, enc in encoders.items():
        enc.eval()
        fast = fold_encoder(enc)
        for bs in (1, 8):
            x = torch.rand(bs, 3, 96, 96)

            def unfolded(enc: nn.Module = enc, x: torch.Tensor = x) -> None:
                with torch.no_grad():
                    enc(x)

            def folded(enc: nn.Module = fast, x: torch.Tensor = x) -> None:
                with torch.no_grad():
                    enc(x)

            t = interleaved({"stock": unfolded, "vlastack": folded}, rounds * (4 if bs == 1 else 1))
            rows.append(row(f"bn fold inference {name} batch {bs}", t))
    return rows


FAULTS = r"""
import json, resource, sys, tempfile, time
sys.path.insert(0, sys.argv[3])
from bench_train import RESNET18_SHAPED
from vlastack.training.config import TrainConfig
from vlastack.data.format import DatasetReader
from vlastack.training.loop import train
data, retain = sys.argv[1], sys.argv[2]
reader = DatasetReader(data)
cam = reader.camera_keys[0]
h, w = reader.features[cam].shape[:2]
with tempfile.TemporaryDirectory() as tmp:
    cfg = TrainConfig.from_recipe("act", [
        f"--data={data}", f"--out_dir={tmp}/run", "--steps=24", "--batch_size=8",
        "--warmup_steps=1", "--log=none", "--progress=false", "--val_fraction=0",
        f'--model.cameras=["{cam.removeprefix("observation.images.")}"]',
        f"--model.image_size=[{h},{w}]",
        "--model.vision=hf_resnet", f"--model.vision_kwargs={RESNET18_SHAPED}",
        f"--retain_host_memory={retain}"])
    res = train(cfg)
print(json.dumps({"step_ms": sorted(res.step_s[4:])[len(res.step_s[4:]) // 2] * 1e3,
                  "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt}))
"""


def fault_rows(data: str) -> list[dict]:
    out: dict[str, dict] = {}
    for mode, flag in (("stock", "false"), ("vlastack", "true")):
        proc = subprocess.run(
            [sys.executable, "-c", FAULTS, data, flag, str(REPO / "benchmarks")],
            capture_output=True,
            text=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        if proc.returncode != 0:
            print(proc.stderr[-2000:], file=sys.stderr)
            return []
        out[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    r = row(
        "act ResNet-18 train step, retain_host_memory off/on",
        {k: v["step_ms"] for k, v in out.items()},
    )
    r["faults_process"] = {k: v["faults"] for k, v in out.items()}
    return [r]


def row(name: str, t: dict[str, float]) -> dict:
    return {
        "case": name,
        "stock_ms": t["stock"],
        "vlastack_ms": t["vlastack"],
        "speedup": t["stock"] / t["vlastack"],
    }


def _name(dtype: torch.dtype) -> str:
    return "fp32" if dtype == torch.float32 else "bf16"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data", default=None, help="a Meta-World dataset for the page-fault row")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = pool_rows(args.rounds) + resnet_rows(args.rounds) + attention_rows(args.rounds)
    rows += gemm_rows(args.rounds) + fold_rows(args.rounds)
    if args.data:
        rows += fault_rows(args.data)
    print(
        f"{torch.get_num_threads()} thread(s), torch {torch.__version__}, load {os.getloadavg()[0]:.2f}"
    )
    print(f"{'case':<58}{'stock ms':>10}{'vlastack ms':>13}{'speed-up':>10}")
    for r in rows:
        if "gflops_peak" in r:
            print(f"{r['case']:<58}{r['gflops_peak']:>10.1f} GFLOP/s")
            continue
        print(
            f"{r['case']:<58}{r['stock_ms']:>10.2f}{r['vlastack_ms']:>13.2f}{r['speedup']:>9.2f}x"
        )
        if "gflops" in r:
            gf = r["gflops"]
            print(f"{'  GFLOP/s':<58}{gf['stock']:>10.1f}{gf['vlastack']:>13.1f}")
        if "faults_process" in r:
            print(
                f"{'  minor page faults in the whole run (24 steps)':<58}{r['faults_process']['stock']:>10}{r['faults_process']['vlastack']:>13}"
            )
    print(
        json.dumps({"threads": torch.get_num_threads(), "torch": torch.__version__, "rows": rows})
    )


if __name__ == "__main__":
    main()
