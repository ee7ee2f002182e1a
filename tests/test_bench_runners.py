"""benchmarks/bench_runners.py runs every CPU runner on a head and ends with its JSON line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bench(*args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.pop("VLASTACK_PLUGINS", None)  # the test plug-ins live in tests/, not on this path
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/bench_runners.py"), "--iters", "1", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_bench_runners_prints_a_row_per_runner_and_a_json_last_line():
    l1 = _bench("--heads", "l1", "--runners", "eager,native,onnxruntime")["results"]["l1"]
    assert (
        l1["eager"]["b1_ms"] > 0 and l1["native"]["b32_ms"] > 0 and l1["onnxruntime"]["b1_ms"] > 0
    )
    # a runner that cannot run a head says why instead of timing something else
    bins_ar = _bench("--heads", "bins_ar", "--runners", "onnxruntime")["results"]["bins_ar"]
    assert "export_kind" in bins_ar["onnxruntime"]["not_applicable"]
