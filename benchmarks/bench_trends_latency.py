"""Per-call CPU time and stored parameters of the issue-30 recipes against the flat policy of the
same backbone (random weights; speed does not depend on training):

- ``flower`` (2 of 4 LM layers, flower head, 4 steps) vs ``flat_4layer_flow10`` (the same tiny
  SigLIP + all 4 LM layers + π0's flow head with 10 steps) and ``flower_4layer`` (FLOWER's head on
  the full LM: what the layer dropping alone saves);
- ``hierarchy``: System 2 alone (``predict_subtasks``), System 1 alone (the subtask given: no
  backbone), both (no subtask given), vs ``flat_2layer_flow10`` (the same model without the
  hierarchy: backbone + head every call).

CPU time (``time.process_time``) of one batch-1 call at one torch thread, median of ``--calls``
after 3 warm-up calls: on a shared machine this is steadier than wall time, not immune to it.

    python benchmarks/bench_trends_latency.py --out /work/runs-flower/latency.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _model_batches import make_batch  # noqa: E402


def cpu_ms(fn, calls: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(calls):
        t0 = time.process_time()
        fn()
        times.append((time.process_time() - t0) * 1e3)
    return statistics.median(times)


@torch.no_grad()
def measure(model, batch: dict, calls: int) -> dict[str, float]:
    batch.pop("action")
    gen = torch.Generator().manual_seed(0)
    row: dict[str, float] = {
        "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
        "lm_layers": float(len(model.language.model.get_decoder().layers)),
        "chunk_cpu_ms": cpu_ms(lambda: model.sample_actions(batch, gen), calls),
    }
    if model.supports_hierarchy:
        given = {**batch, "subtask": model.predict_subtasks(batch)}
        row["system2_cpu_ms"] = cpu_ms(lambda: model.predict_subtasks(batch), calls)
        row["system1_cpu_ms"] = cpu_ms(lambda: model.sample_actions(given, gen), calls)
    return {k: round(v, 3) for k, v in row.items()}


def main() -> None:
    from vlastack.models.vla import build_vla
    from vlastack.recipes import get_recipe

    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=30)
    ap.add_argument("--image-size", type=int, default=96)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    size = (args.image_size, args.image_size)
    lm4 = {"config": {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 4}}
    lm4["max_text_tokens"] = 24
    flow10 = {"width": 64, "depth": 2, "num_heads": 4, "num_steps": 10}
    variants = {
        "flower": get_recipe("flower", image_size=size),
        "flower_4layer": get_recipe("flower", image_size=size, language_kwargs=lm4),
        "flat_4layer_flow10": get_recipe(
            "flower", image_size=size, language_kwargs=lm4, head="flow_matching", head_kwargs=flow10
        ),
        "hierarchy": get_recipe("hierarchy", image_size=size),
        "flat_2layer_flow10": get_recipe("hierarchy", image_size=size, hierarchy=False),
    }
    rows: dict[str, dict[str, float]] = {}
    for name, r in variants.items():
        torch.manual_seed(0)
        rows[name] = measure(build_vla(r.model).eval(), make_batch(r.model, B=1), args.calls)
        print(name, rows[name], flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
