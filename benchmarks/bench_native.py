"""vlastack's native CPU kernels (``vlastack.native``) against the torch ops they replace,
one thread, interleaved rounds (each round runs every variant, so machine load hits all alike).

* ``products``: an ACT decoder's 16 products at 16 rows (4 layers of q/k/v 768×256, output
  256×256, FFN 1024×256 and 256×1024, 16.8 MB of weights cycling through the caches as in a
  chunk): the native kernel, oneDNN's prepacked linear (the torch fast path) and MKL's
  ``F.linear`` (eager LeRobot), in GFLOP/s beside a 2048² matmul.
* ``attention``: 16 queries over 16 keys, 4 heads of 64, read from a stacked q/k/v product:
  ``native.self_attention`` vs the view/permute → SDPA → transpose/reshape sequence.
* ``conv block``: Diffusion Policy's Conv1d(k 5) → GroupNorm(8) → Mish → FiLM at 16 steps and
  256 channels, time-major: ``native.conv1d`` vs pad/im2col/product/GroupNorm/Mish/addcmul.

    .venv/bin/python benchmarks/bench_native.py [--rounds 10]

Prints a table, then one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from vlastack import native  # noqa: E402


def _products() -> tuple[dict[str, Callable[[], object]], float]:
    shapes = [(768, 256), (256, 256), (1024, 256), (256, 1024)] * 4
    g = torch.Generator().manual_seed(0)
    ws = [torch.randn(o, i, generator=g) / i**0.5 for o, i in shapes]
    bs = [torch.randn(o, generator=g) for o, _ in shapes]
    xs = {i: torch.randn(16, i, generator=g) for i in (256, 1024)}
    packs = [native.pack_linear(w, b) for w, b in zip(ws, bs)]
    dnn = [torch.ops.mkldnn._reorder_linear_weight(w, 16) for w in ws]
    lp = torch.ops.mkldnn._linear_pointwise

    def nat() -> None:
        for p, w in zip(packs, ws):
            native.linear(xs[w.shape[1]], p)

    def onednn() -> None:
        for p, b, w in zip(dnn, bs, ws):
            lp(xs[w.shape[1]], p, b, "none", [], "")

    def mkl() -> None:
        for w, b in zip(ws, bs):
            F.linear(xs[w.shape[1]], w, b)

    flops = float(sum(2 * 16 * o * i for o, i in shapes))
    return {"native": nat, "onednn": onednn, "mkl": mkl}, flops


def _attention() -> dict[str, Callable[[], object]]:
    D, H = 256, 4
    qkv = torch.randn(1, 16, 3 * D)

    def nat() -> object:
        return native.self_attention(qkv, H)

    def torch_ops() -> object:
        t = qkv.view(1, 16, 3, H, D // H).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(t[0], t[1], t[2])
        return a.transpose(1, 2).reshape(1, 16, D)

    return {"native": nat, "torch": torch_ops}


def _conv_block() -> dict[str, Callable[[], object]]:
    C, T, k = 256, 16, 5
    conv = torch.nn.Conv1d(C, C, k, padding=2)
    gn = torch.nn.GroupNorm(8, C)
    x = torch.randn(1, T, C)
    film = torch.randn(1, 2 * C)
    pack = native.pack_conv1d(conv.weight, conv.bias)
    w2 = conv.weight.detach().reshape(C, -1)
    pk = torch.ops.mkldnn._reorder_linear_weight(w2.contiguous(), T)
    norm = (8, gn.weight.detach(), gn.bias.detach(), gn.eps)

    def nat() -> object:
        return native.conv1d(x, pack, k, 1, 2, norm, (film[:, :C], film[:, C:]))

    def torch_ops() -> object:  # what UnetPlan runs on torch's kernels
        cols = F.pad(x, (0, 0, 2, 2)).unfold(1, k, 1).reshape(T, C * k)
        y = torch.ops.mkldnn._linear_pointwise(cols, pk, conv.bias, "none", [], "").view(1, T, C)
        y = F.group_norm(y.transpose(1, 2), 8, norm[1], norm[2], norm[3])
        y = F.mish(y, inplace=True).transpose(1, 2)
        return torch.addcmul(film[:, None, C:], y, film[:, None, :C])

    with torch.no_grad():
        torch.testing.assert_close(nat(), torch_ops(), atol=1e-4, rtol=1e-4)
    return {"native": nat, "torch": torch_ops}


def _time(groups: dict[str, dict[str, Callable[[], object]]], rounds: int, iters: int) -> dict:
    out: dict[str, dict[str, list[float]]] = {g: {n: [] for n in fns} for g, fns in groups.items()}
    with torch.inference_mode():
        for _ in range(rounds):
            for g, fns in groups.items():
                for name, fn in fns.items():
                    for _ in range(3):
                        fn()
                    for _ in range(iters):
                        t0 = time.perf_counter()
                        fn()
                        out[g][name].append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--iters", type=int, default=50)
    args = ap.parse_args()
    torch.set_num_threads(1)
    if not native.available():
        print(f"native kernels unavailable: {native.status()}")
        print(json.dumps({"native": native.status()}))
        return
    prods, flops = _products()
    times = _time(
        {"products": prods, "attention": _attention(), "conv block": _conv_block()},
        args.rounds,
        args.iters,
    )
    a = torch.randn(2048, 2048)
    t0 = time.perf_counter()
    for _ in range(5):
        a @ a
    peak = 5 * 2 * 2048**3 / (time.perf_counter() - t0) / 1e9
    print(f"torch {torch.__version__}, 1 thread, native: {native.status()}")
    print(f"2048² float32 matmul: {peak:.1f} GFLOP/s")
    print(f"{'what':12s} {'variant':8s} {'p50 µs':>9s} {'min µs':>9s} {'vs native':>9s}  GFLOP/s")
    rows = []
    for g, variants in times.items():
        base = statistics.median(variants["native"])
        for name, ts in variants.items():
            p50 = statistics.median(ts)
            gf = f"{flops / p50 / 1e9:.1f}" if g == "products" else ""
            print(
                f"{g:12s} {name:8s} {p50 * 1e6:9.1f} {min(ts) * 1e6:9.1f} {p50 / base:9.2f}  {gf}"
            )
            rows.append(
                {
                    "what": g,
                    "variant": name,
                    "p50_us": p50 * 1e6,
                    "min_us": min(ts) * 1e6,
                    "ratio_to_native": p50 / base,
                    **({"gflops": flops / p50 / 1e9} if g == "products" else {}),
                }
            )
    print(json.dumps({"peak_gflops": peak, "native": native.status(), "rows": rows}))


if __name__ == "__main__":
    main()
