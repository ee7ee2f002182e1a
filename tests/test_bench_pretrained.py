"""benchmarks/bench_pretrained.py (issue 26): the full-size vlastack-vs-LeRobot benchmark, run here
with ``--quick`` (the reduced fixture sizes) so that every path of the script runs: LeRobot 0.6.1
builds and saves each model, each side loads the folder in its own process, and the last line is
the JSON the BENCHMARKS.md numbers come from."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from _lerobot_python import lerobot_python

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_pretrained.py"


def test_bad_model_name_is_refused_with_the_choices():
    res = subprocess.run(
        [sys.executable, str(SCRIPT), "--models", "smolvla,pi9"], capture_output=True, text=True
    )
    assert res.returncode != 0
    assert "--models: unknown model 'pi9'" in res.stderr and "smolvla and/or pi0" in res.stderr


@pytest.mark.slow
def test_quick_run_gives_both_sides_the_same_chunk_and_a_full_json():
    """slow: five interpreters start (LeRobot's imports alone take ~15 s each on 2 cores)."""
    py = lerobot_python()
    res = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--dtypes", "bf16", "--repeats", "1",
         "--threads", "1", "--train", "--lerobot-python", py],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["quick"] is True and out["matmul_peak_gflops"]["bf16"]["1"] > 0
    for model in ("smolvla", "pi0"):
        row = out["results"][model]["bf16"]
        ours, theirs = row["vlastack"], row["lerobot"]
        # the same saved weights, inputs and noise: the two chunks agree (bf16 tolerance)
        assert ours["chunk_abs_mean"] == pytest.approx(theirs["chunk_abs_mean"], rel=2e-2)
        assert ours["flops"] > 0 and 0 < ours["pct_of_matmul_peak"] < 100
        for side in (ours, theirs):
            assert side["threads"] == 1 and side["peak_rss_gib"] > 0
            assert 0 < side["stages_s"]["denoise"] < side["p50_s"]
            assert 0 < side["stages_s"]["vision"] < side["p50_s"]
        assert row["latency_ratio"] > 0
    assert out["results"]["pi0"]["bf16"]["train_ratio"] > 0  # pi0 has a training loss
    assert "train" not in out["results"]["smolvla"]["bf16"]["vlastack"]  # SmolVLA: none yet
