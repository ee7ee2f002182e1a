"""Action-head latency through each runner (``vlastack.runners``), in CPU time at one thread.

Same sizes as ``bench_heads.py`` (64 context tokens of width 256, chunk 16, 7 action dims);
the minimum over iterations of ``time.thread_time`` per chunk at batch 1 and batch 32, so the
numbers hold on a loaded machine. Prints a table and, on its last line, a JSON object.

    .venv/bin/python benchmarks/bench_runners.py --runners eager,native --heads act,diffusion_unet
    VLASTACK_NATIVE=0 .venv/bin/python benchmarks/bench_runners.py --runners native   # oneDNN tier
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from vlastack.errors import ConfigError
from vlastack.models.action_heads import build_action_head
from vlastack.runners import get_runner

N, D, H, A = 64, 256, 16, 7
VARIANTS = {"diffusion_unet": ("diffusion", {"denoiser": "unet"})}
DEFAULT_HEADS = "act,bins,l1,flow_matching,diffusion,diffusion_unet"


def _inputs(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, N, D, generator=g), torch.ones(batch, N, dtype=torch.bool)


def _time(fn, batch: int, iters: int) -> float:
    context, mask = _inputs(batch)
    with torch.inference_mode():
        for _ in range(2):
            fn(context, mask, torch.Generator().manual_seed(0))
        best = float("inf")
        for _ in range(iters):
            t = time.thread_time()
            fn(context, mask, torch.Generator().manual_seed(0))
            best = min(best, (time.thread_time() - t) * 1e3)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runners", default="eager,native")
    p.add_argument("--heads", default=DEFAULT_HEADS)
    p.add_argument("--iters", type=int, default=15)
    args = p.parse_args()
    torch.set_num_threads(1)
    results: dict[str, dict[str, dict[str, float | str]]] = {}
    print(f"{'head':16s} {'runner':12s} {'batch 1 ms':>11s} {'batch 32 ms':>12s}")
    for name in args.heads.split(","):
        torch.manual_seed(0)
        base, cfg = VARIANTS.get(name, (name, None))
        head = build_action_head(base, cfg, context_dim=D, action_dim=A, action_horizon=H).eval()
        for runner in args.runners.split(","):
            try:
                fn = get_runner(runner).head(head)
            except ConfigError as exc:
                results.setdefault(name, {})[runner] = {"not_applicable": str(exc)}
                print(f"{name:16s} {runner:12s} {'n/a':>11s} {'n/a':>12s}")
                continue
            b1 = _time(fn, 1, args.iters)
            b32 = _time(fn, 32, max(3, args.iters // 5))
            results.setdefault(name, {})[runner] = {"b1_ms": round(b1, 3), "b32_ms": round(b32, 3)}
            print(f"{name:16s} {runner:12s} {b1:11.2f} {b32:12.1f}")
    print(json.dumps({"threads": 1, "clock": "thread_time", "results": results}))


if __name__ == "__main__":
    main()
