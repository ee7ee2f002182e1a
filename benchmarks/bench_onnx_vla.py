"""Chunk latency of the imported SmolVLA / pi0 / pi0.5 fixtures: eager PyTorch vs the
``onnxruntime`` runner (prefix + step graphs, ``runners/onnx_vla.py``), one thread each.

Fixture sizes (``shared/fixtures/lerobot_policies``: reduced random-weight checkpoints), the
first golden observation, the recorded noise; ``predict_normalized`` (prepare + sample) is timed,
interleaved round by round so machine load hits both alike. CPU time (``time.process_time``) is
reported beside wall time because the 2-core machine this ran on is shared: CPU time is the
figure that load does not inflate. The first onnxruntime call (the export, seconds) is excluded.

    PYTHONPATH=src python benchmarks/bench_onnx_vla.py --iters 20
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

FIXTURES = Path("/work/shared/fixtures/lerobot_policies")


def _load(kind: str) -> Any:
    folder = FIXTURES / kind / "pretrained_model"
    if kind == "smolvla":
        from vlastack.pretrained.lerobot.smolvla_policy import load_lerobot_smolvla
        from vlastack.pretrained.lerobot.tokenizer import ByteTokenizer

        return load_lerobot_smolvla(folder, device="cpu", tokenizer=ByteTokenizer())
    from vlastack.pretrained.lerobot.pi0_policy import load_lerobot_pi0

    return load_lerobot_pi0(folder, device="cpu", tokenizer="bytes")


def bench(kind: str, iters: int) -> dict[str, Any]:
    golden = load_file(str(FIXTURES / kind / "golden.safetensors"))
    meta = json.loads((FIXTURES / kind / "golden.json").read_text())
    obs = {k[len("obs0.raw.") :]: v.numpy() for k, v in golden.items() if k.startswith("obs0.raw.")}
    obs["task"] = meta["observations"][0]["task"]
    noise = golden["obs0.noise"]
    eager, ort = _load(kind), _load(kind)
    ort.use_runner("onnxruntime")
    pre = {n: p.preprocess([obs]) for n, p in (("eager", eager), ("onnxruntime", ort))}
    ort.predict_normalized(pre["onnxruntime"], noise=noise)  # export + session build
    times: dict[str, dict[str, list[float]]] = {n: {"cpu": [], "wall": []} for n in pre}
    for _ in range(iters):
        for name, p in (("eager", eager), ("onnxruntime", ort)):
            c0, w0 = time.process_time(), time.perf_counter()
            p.predict_normalized(pre[name], noise=noise)
            times[name]["cpu"].append(1e3 * (time.process_time() - c0))
            times[name]["wall"].append(1e3 * (time.perf_counter() - w0))
    out: dict[str, Any] = {"kind": kind}
    for name, t in times.items():
        out[name] = {
            "cpu_ms_median": statistics.median(t["cpu"]),
            "cpu_ms_min": min(t["cpu"]),
            "wall_ms_median": statistics.median(t["wall"]),
        }
    out["ratio_cpu_median"] = out["onnxruntime"]["cpu_ms_median"] / out["eager"]["cpu_ms_median"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--kinds", default="smolvla,pi0,pi05")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = [bench(k, args.iters) for k in args.kinds.split(",")]
    print(
        f"{'policy':10s}{'eager cpu ms':>14s}{'ort cpu ms':>12s}{'ratio':>8s}{'eager wall':>12s}"
        f"{'ort wall':>10s}"
    )
    for r in rows:
        e, o = r["eager"], r["onnxruntime"]
        print(
            f"{r['kind']:10s}{e['cpu_ms_median']:14.1f}{o['cpu_ms_median']:12.1f}"
            f"{r['ratio_cpu_median']:8.2f}{e['wall_ms_median']:12.1f}{o['wall_ms_median']:10.1f}"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
