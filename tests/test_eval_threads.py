"""``vlastack eval --threads N`` (issue 27.7): the policy runs on N torch threads, in-process and in
workers, and the manifest records it (latency on a loaded CPU depends on it)."""

from __future__ import annotations

import json

import torch

from vlastack.cli.main import main
from vlastack.evaluation.rollout import evaluate
from vlastack_test_plugins import fakes


class ThreadRecordingPolicy(fakes.ScriptedReachPolicy):
    seen: list[int] = []

    def infer(self, obs):
        ThreadRecordingPolicy.seen.append(torch.get_num_threads())
        return super().infer(obs)


def _factory():
    return ThreadRecordingPolicy(action_horizon=8)


def test_threads_set_for_the_policy_and_recorded(tmp_path):
    before = torch.get_num_threads()
    ThreadRecordingPolicy.seen = []
    try:
        res = evaluate(
            _factory,
            "fake/reach-easy",
            episodes_per_task=1,
            workers=0,
            threads=1,
            image_size=(16, 16),
            progress=False,
        )
        assert ThreadRecordingPolicy.seen and set(ThreadRecordingPolicy.seen) == {1}
        assert res.manifest["torch_threads"] == 1
    finally:
        torch.set_num_threads(before)


def test_cli_threads_flag(tmp_path):
    ck = fakes.write_fake_checkpoint(tmp_path / "ck", action_horizon=8, noise=0.05)
    out = tmp_path / "r"
    before = torch.get_num_threads()
    try:
        argv = ["eval", str(ck), "--env", "fake/reach-easy", "--episodes-per-task", "1"]
        argv += ["--workers", "0", "--threads", "1", "--no-progress", "--out", str(out)]
        assert main(argv) == 0
    finally:
        torch.set_num_threads(before)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["torch_threads"] == 1
