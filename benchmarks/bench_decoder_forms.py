"""The native runner's decoder forms against each other and eager (issue #25's rule: keep a form
only where it wins somewhere). ``DecoderPlan`` runs a ``CrossDecoder`` in one of three forms:

* ``fused``: the whole decoder in one C call (``vl_decoder``, ``native.decoder``), float32, where
  the pass has no FiLM and no short-memory re-association; else the ``loop`` below;
* ``loop``: ``DecoderPlan._run_native``, one Python loop over the C op kernels (products with
  bias/activation/residual fused, attention reading q/k/v in place), float32;
* ``onednn``: ``DecoderPlan.run``, one Python loop of torch ops over oneDNN-prepacked (or MKL)
  products: what the runner runs without its C kernels (``VLASTACK_NATIVE=0``, bf16).

One form per process (``--form``; ``onednn`` sets ``VLASTACK_NATIVE=0`` before vlastack is
imported), the eager head timed in the same process, interleaved, as the common yardstick.
Heads at ``bench_heads.py``'s default size (width 256, depth 4, 4 heads, H 16, A 7, 3 context
tokens). Use CPU time on a shared machine and alternate the processes:

    .venv/bin/python benchmarks/cpu_time.py benchmarks/bench_decoder_forms.py --form fused

Prints one JSON object per (head, batch, dtype) row.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(
    0, os.environ.get("VLASTACK_SRC") or str(Path(__file__).resolve().parents[1] / "src")
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--form", choices=("fused", "loop", "onednn"), required=True)
    ap.add_argument("--heads", default="act,l1,diffusion")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--rounds", type=int, default=8)
    args = ap.parse_args()
    if args.form == "onednn":
        os.environ["VLASTACK_NATIVE"] = "0"
    import torch

    from vlastack.models.action_heads import build_action_head
    from vlastack.runners.native import NativeRunner
    from vlastack.runners.native import decoder as decoder_mod

    torch.set_num_threads(1)
    if args.form == "loop":  # the per-op loop wherever the one-call decoder would run
        init = decoder_mod.DecoderPlan.__init__

        def loop_init(self: object, dec: object) -> None:
            init(self, dec)  # type: ignore[arg-type]
            self.native_params = None  # type: ignore[attr-defined]

        decoder_mod.DecoderPlan.__init__ = loop_init  # type: ignore[method-assign]
    for name in args.heads.split(","):
        for dtype_name in args.dtypes.split(","):
            dtype = torch.float32 if dtype_name == "fp32" else torch.bfloat16
            if dtype is torch.bfloat16 and args.form != "onednn":
                continue  # the C kernels are float32: bf16 runs the onednn form in every process
            torch.manual_seed(0)
            head = build_action_head(
                name,
                {"width": 256, "num_heads": 4},
                context_dim=256,
                action_dim=7,
                action_horizon=16,
            ).eval()
            with torch.inference_mode():
                head = head.to(dtype)
                fast = NativeRunner().head(head)
            for B in (int(b) for b in args.batches.split(",")):
                ctx = torch.randn(B, 3, 256, dtype=dtype)
                mask = torch.ones(B, 3, dtype=torch.bool)

                def eager(head=head, ctx=ctx, mask=mask):  # type: ignore[no-untyped-def]
                    return head.sample_actions(ctx, mask, torch.Generator().manual_seed(0))

                def runner(fast=fast, ctx=ctx, mask=mask):  # type: ignore[no-untyped-def]
                    return fast(ctx, mask, generator=torch.Generator().manual_seed(0))

                fns = {"eager": eager, args.form: runner}
                times: dict[str, list[float]] = {k: [] for k in fns}
                rounds = args.rounds * (3 if B == 1 else 1)
                with torch.inference_mode():
                    for r in range(rounds + 2):
                        for k, fn in fns.items():
                            t = time.perf_counter()
                            fn()
                            if r >= 2:
                                times[k].append((time.perf_counter() - t) * 1e3)
                row = {"head": name, "batch": B, "dtype": dtype_name, "form": args.form}
                for k, v in times.items():
                    row[f"{k}_min_ms"] = round(min(v), 3)
                    row[f"{k}_p50_ms"] = round(statistics.median(v), 3)
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
