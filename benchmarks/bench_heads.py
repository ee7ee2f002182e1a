"""Speed and memory of every registered action head at one fixed, documented size (issue 4).

Fixed size: context B×N×D with N=64 tokens, D=256 (a small backbone's output), action_horizon
H=16, action_dim A=7; every head at its default config (width 256, depth 4, 4 heads; diffusion
DDIM 10 steps, flow 10 Euler steps, FAST without merges; ``diffusion_unet`` is the diffusion head
with DP-C's U-Net denoiser, down_dims (64, 128, 256)). Per head: parameters, latency per chunk
at batch 1 (p50/p95 of ``sample_actions``), chunk throughput at batch 32, one AdamW train step at
batch 32, and peak RSS growth (each head runs in its own subprocess so ``ru_maxrss`` is its own).
Also: the flow sampler's achieved GFLOP/s (FLOPs counted by ``torch.utils.flop_counter``) against
this machine's measured float32 matmul peak. If ``/work/lerobot-venv`` (or ``--lerobot-python``)
has LeRobot, its ACT and Diffusion policies are timed at matched sizes (``bench_lerobot_policies``).

    .venv/bin/python benchmarks/bench_heads.py [--iters 20] [--heads flow_matching act]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

B1, B32, N, D, H, A = 1, 32, 64, 256, 16, 7
# rows beyond the registered heads' defaults: name → (head, config)
VARIANTS = {"diffusion_unet": ("diffusion", {"denoiser": "unet"})}  # DP-C, down_dims (64,128,256)


DEVICE = torch.device("cpu")
RUNNER = ""  # --runner: what runs sample_actions ("" = the device's default, native on a CPU)


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def _inputs(B: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ctx = torch.randn(B, N, D, generator=g)
    mask = torch.ones(B, N, dtype=torch.bool)
    actions = torch.rand(B, H, A, generator=g) * 2 - 1
    pad = torch.zeros(B, H, dtype=torch.bool)
    return tuple(t.to(DEVICE) for t in (ctx, mask, actions, pad))


def _time(fn, iters: int, warmup: int = 2) -> np.ndarray:
    """Wall time per call in ms; on a GPU each call ends with a synchronize, so the time is the
    chunk's latency as a robot client sees it, not the launch time."""
    for _ in range(warmup):
        fn()
    _sync()
    out = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        _sync()
        out.append((time.perf_counter() - t) * 1e3)
    return np.array(out)


def matmul_peak_gflops(n: int = 2048, reps: int = 5) -> float:
    """float32 matmul peak of DEVICE (on a GPU with TF32 off, torch's default for matmul)."""
    if DEVICE.type == "cuda":
        n, reps = 8192, 10
    a, b = torch.randn(n, n, device=DEVICE), torch.randn(n, n, device=DEVICE)
    torch.matmul(a, b)
    best = min(_time(lambda: torch.matmul(a, b), reps, warmup=1))
    return 2 * n**3 / (best / 1e3) / 1e9


def flops_of(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    # counted on the plain modules (same math): FlopCounterMode has no formula for the native
    # runner's kernels or oneDNN prepacked linears and would leave them out
    with FlopCounterMode(display=False) as fc:
        fn()
    return int(fc.get_total_flops())


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)  # a CPU generator on every device, as Policy keeps


def bench_one(name: str, iters: int) -> dict:
    from vlastack.models.action_heads import build_action_head

    torch.manual_seed(0)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    base, cfg = VARIANTS.get(name, (name, None))
    head = build_action_head(base, cfg, context_dim=D, action_dim=A, action_horizon=H)
    head = head.to(DEVICE)
    params = sum(p.numel() for p in head.parameters())
    c1, m1, _, _ = _inputs(B1)
    c32, m32, a32, p32 = _inputs(B32)
    head.eval()
    from vlastack.runners import default_runner, get_runner

    run = get_runner(RUNNER or default_runner(DEVICE)).head(head)
    with torch.inference_mode():
        lat = _time(lambda: run(c1, m1, _gen()), iters)
        thr_ms = _time(
            lambda: run(c32, m32, _gen()),
            max(3, iters // 5),
            1,
        )
        graphed_lat = None
        if DEVICE.type == "cuda" and head.cuda_graph_support()[0]:
            from vlastack.runners.cuda_graphs import GraphedHead

            graphed = GraphedHead(head)
            graphed_lat = _time(lambda: graphed(c1, m1, _gen()), iters)
    head.train()
    opt = torch.optim.AdamW(head.parameters(), lr=1e-4)

    def step():
        loss = head.loss(c32, m32, a32, p32).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    train_ms = _time(step, max(3, iters // 4), 1)
    row = {
        "head": name,
        "params_M": params / 1e6,
        "latency_b1_p50_ms": float(np.percentile(lat, 50)),
        "latency_b1_p95_ms": float(np.percentile(lat, 95)),
        "chunks_per_s_b32": float(B32 / (np.median(thr_ms) / 1e3)),
        "train_step_b32_ms": float(np.median(train_ms)),
        "peak_rss_growth_MB": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss)
        / 1024,
    }
    if DEVICE.type == "cuda":
        row["gpu_peak_MiB"] = torch.cuda.max_memory_allocated() / 2**20
    if graphed_lat is not None:  # Policy.enable_cuda_graphs: the sampler replayed as a graph
        row["latency_b1_graph_p50_ms"] = float(np.percentile(graphed_lat, 50))
        row["latency_b1_graph_p95_ms"] = float(np.percentile(graphed_lat, 95))
    if name == "flow_matching":
        head.eval()
        with torch.inference_mode():
            for B, c, m, ms in ((1, c1, m1, np.median(lat)), (32, c32, m32, np.median(thr_ms))):
                fl = flops_of(lambda c=c, m=m: head.sample_actions(c, m))
                row[f"flow_gflop_b{B}"] = fl / 1e9
                row[f"flow_gflops_per_s_b{B}"] = fl / 1e9 / (ms / 1e3)
    return row


def bench_lerobot(python: str, iters: int) -> list[dict]:
    script = Path(__file__).with_name("bench_lerobot_policies.py")
    r = subprocess.run(
        [python, str(script), "--rounds", str(max(4, iters // 2)), "--threads", "1"]
        + ["--device", DEVICE.type],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if r.returncode != 0:
        print(f"LeRobot benchmark failed:\n{r.stderr[-2000:]}", file=sys.stderr)
        return []
    rows = json.loads(r.stdout.strip().splitlines()[-1])["rows"]
    return [row for row in rows if row["policy"].startswith("lerobot_")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--heads", nargs="*", default=None)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one head
    ap.add_argument(
        "--lerobot-python",
        default=os.environ.get("VLASTACK_LEROBOT_PYTHON", "/work/lerobot-venv/bin/python"),
    )
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--runner", default="", help="vlastack runner (default: the device's)")
    args = ap.parse_args()
    global DEVICE, RUNNER
    DEVICE = torch.device(args.device)
    RUNNER = args.runner
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(bench_one(args.one, args.iters)))
        return

    from vlastack.models.action_heads import ACTION_HEADS

    names = args.heads or [n for n in ACTION_HEADS if n != "mlp"] + list(VARIANTS)  # mlp = l1
    peak = matmul_peak_gflops()
    rows = []
    for name in names:
        cmd = [sys.executable, __file__, "--one", name, "--iters", str(args.iters)]
        cmd += ["--device", args.device]
        if args.runner:
            cmd += ["--runner", args.runner]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            print(f"{name} failed:\n{r.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
    lerobot_rows = (
        bench_lerobot(args.lerobot_python, args.iters)
        if os.path.exists(args.lerobot_python)
        else []
    )

    gpu = f", GPU {torch.cuda.get_device_name(0)}" if DEVICE.type == "cuda" else ""
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores{gpu}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; {DEVICE.type} fp32 "
        f"matmul peak {peak:.1f} GFLOP/s"
    )
    print(f"size: B=1/32, N={N} context tokens, D={D}, H={H}, A={A}, default head configs")
    hdr = f"{'head':<16}{'params M':>9}{'b1 p50 ms':>11}{'b1 p95 ms':>11}{'chunks/s b32':>14}{'train b32 ms':>14}{'RSS+ MB':>9}"
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(
            f"{r['head']:<16}{r['params_M']:>9.2f}{r['latency_b1_p50_ms']:>11.2f}{r['latency_b1_p95_ms']:>11.2f}"
            f"{r['chunks_per_s_b32']:>14.1f}{r['train_step_b32_ms']:>14.1f}{r['peak_rss_growth_MB']:>9.0f}"
        )
    for r in rows:
        if "flow_gflops_per_s_b1" in r:
            for B in (1, 32):
                g = r[f"flow_gflops_per_s_b{B}"]
                print(
                    f"flow sampler b{B}: {r[f'flow_gflop_b{B}']:.3f} GFLOP/chunk-batch, {g:.1f} GFLOP/s "
                    f"= {100 * g / peak:.0f}% of matmul peak"
                )
    for r in rows:
        if "latency_b1_graph_p50_ms" in r:
            print(
                f"{r['head']:<16} CUDA graph b1 p50 {r['latency_b1_graph_p50_ms']:.2f} ms "
                f"(p95 {r['latency_b1_graph_p95_ms']:.2f}) vs eager {r['latency_b1_p50_ms']:.2f}"
            )
    for r in lerobot_rows:
        print(
            f"LeRobot {r['policy']:<10} params {r['params_M']:.2f} M, b1 p50 {r['latency_b1_p50_ms']:.2f} ms "
            f"(p95 {r['latency_b1_p95_ms']:.2f}); config {r['config']}"
        )
    print(
        json.dumps(
            {
                "device": DEVICE.type,
                "matmul_peak_gflops": peak,
                "heads": rows,
                "lerobot": lerobot_rows,
            }
        )
    )


if __name__ == "__main__":
    main()
