"""The evaluation harness with a real tiny VLA on a real simulator (PushT), not the scripted fake.

The fake policy ignores its images and the fake env is a point reacher, so the harness tests on
them cannot see a protocol detail that only changes what a real network is fed (image size,
camera, chunking) or a simulator whose reset info is not a flat vector. Here a real
``vlastack.policy.Policy`` (tiny random CNN + l1 head, saved by ``save_checkpoint``) drives
PushT at 32x32 for 10 steps: (a) a re-run from the written manifest reproduces every
episode, (b) two worker processes give the same episodes as inline, (c) a worker that dies
mid-episode is retried once, then recorded as an error. Per-episode records carry no raw actions
or rewards; the action-derived metrics (jerk, chunk-boundary jump) stand for the actions.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("gym_pusht", reason="PushT is not installed (pip install 'vlastack[sim]')")
pytestmark = pytest.mark.sim

IMAGE = (32, 32)
STEPS = 10
KW: dict[str, Any] = dict(image_size=IMAGE, max_steps=STEPS, progress=False)


def _write_checkpoint(root: Path) -> Path:
    import torch

    from vlastack.data.normalization import Normalizer
    from vlastack.envs.pusht import embodiment
    from vlastack.models.vla import VLAConfig, build_vla
    from vlastack.training.checkpoint import save_checkpoint

    torch.manual_seed(0)
    cfg = VLAConfig(
        action_dim=2,
        action_horizon=4,
        obs_horizon=1,
        state_dim=2,
        cameras=["top"],
        image_size=IMAGE,
        width=32,
        vision="small_cnn",
        vision_kwargs={"width": 8, "num_blocks": 2, "out_dim": 32},
        vision_pooled=True,
        language="none",
        head="l1",
        head_kwargs={"width": 32, "depth": 1, "num_heads": 2, "resnet_blocks": 1},
    )
    # Workspace-pixel stats, so the random network's targets land inside the 512x512 table.
    stats = {
        k: {"mean": [256.0, 256.0], "std": [80.0, 80.0], "min": [0.0, 0.0], "max": [512.0] * 2}
        for k in ("observation.state", "action")
    }
    norm = Normalizer(stats, {"observation.state": "mean_std", "action": "mean_std"})
    return save_checkpoint(
        root,
        1,
        weights=build_vla(cfg).state_dict(),
        config={"model": cfg.to_dict(), "train": {"seed": 0}},
        normalization=norm.to_dict(),
        embodiment=embodiment(IMAGE),
    )


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return _write_checkpoint(tmp_path_factory.mktemp("real_vla") / "checkpoints")


@pytest.fixture(scope="module")
def inline(ckpt, tmp_path_factory):
    """Three PushT episodes run in this process, results written to a folder."""
    from vlastack.evaluation.rollout import evaluate

    out = tmp_path_factory.mktemp("inline") / "res"
    return evaluate(ckpt, "pusht", episodes_per_task=3, seed=4, workers=0, out_dir=out, **KW)


def _outcome(r: Any) -> tuple:
    """Everything of an episode record that a re-run must reproduce (not timings)."""
    d = r if isinstance(r, dict) else r.to_dict()
    return (
        d["task"],
        d["episode"],
        d["seed"],
        d["status"],
        d["steps"],
        d["steps_to_success"],
        d["num_chunks"],
        d["initial_state_sha"],
        d["mean_squared_jerk"],
        d["chunk_jump"],
        d["extra"].get("clipped_steps"),
        d["error"],
    )


def test_real_episodes_are_real(inline):
    """Guard: the episodes ran (no errors), differ per seed, and the policy really moved."""
    recs = inline.records
    assert [r.status for r in recs] == ["failure"] * 3, [r.error for r in recs]
    # the checkpoint's default executes half of each 4-action chunk: 10 steps = 5 chunks
    assert all(r.steps == STEPS and r.num_chunks == 5 for r in recs)
    assert {r.extra["execute_horizon"] for r in recs} == {2}
    assert len({r.initial_state_sha for r in recs}) == 3
    assert len({r.mean_squared_jerk for r in recs}) == 3
    assert all(r.mean_squared_jerk and r.mean_squared_jerk > 0 for r in recs)


def test_rerun_from_the_written_manifest_reproduces_every_episode(inline, tmp_path):
    from vlastack.evaluation.reproduce import evaluate_manifest

    out = inline.out_dir
    again = evaluate_manifest(out / "manifest.json", out_dir=tmp_path / "b", progress=False)
    assert [_outcome(r) for r in again.records] == [_outcome(r) for r in inline.records]
    written = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    rewritten = [
        json.loads(line) for line in (tmp_path / "b" / "episodes.jsonl").read_text().splitlines()
    ]
    assert [_outcome(d) for d in rewritten] == [_outcome(d) for d in written]
    rep = again.summary["reproduction"]
    assert rep["checkpoint_sha_matches"] and rep["initial_states_compared"] == 3
    assert rep["initial_states_mismatched"] == []


# ~20 s on 2 shared cores: two spawned workers import torch and build the policy
def test_two_workers_match_inline(ckpt, inline):
    from vlastack.evaluation.rollout import evaluate

    pooled = evaluate(ckpt, "pusht", episodes_per_task=3, seed=4, workers=2, **KW)
    assert [_outcome(r) for r in pooled.records] == [_outcome(r) for r in inline.records]
    assert pooled.summary["timing"]["workers"] == 2


class _DiesMidEpisode:
    """A picklable policy factory: the real Policy of ``ckpt``, whose worker process exits (as a
    segfaulting simulator or an OOM kill would) at the second chunk of the episode that starts
    with the agent at ``die_at``; other episodes run untouched."""

    def __init__(self, ckpt: str, die_at: list[float]) -> None:
        self.ckpt, self.die_at = ckpt, die_at

    def __call__(self) -> Any:
        from vlastack.policy import Policy

        policy = Policy.from_checkpoint(self.ckpt)
        real_reset, real_infer = policy.reset, policy.infer
        calls: list[np.ndarray] = []

        def reset() -> None:
            calls.clear()
            real_reset()

        def infer(obs: dict[str, Any]) -> dict[str, Any]:
            calls.append(np.asarray(obs["observation.state"], dtype=np.float64))
            if len(calls) == 2 and np.allclose(calls[0], self.die_at, atol=1e-3):
                os._exit(3)
            return real_infer(obs)

        policy.reset, policy.infer = reset, infer  # type: ignore[method-assign]
        return policy


# ~25 s: three worker processes start one after the other
def test_a_worker_dying_mid_episode_is_retried_once_then_an_error(ckpt, inline):
    from vlastack.envs import make_env
    from vlastack.evaluation.rollout import evaluate

    env = make_env("pusht", image_size=IMAGE)
    obs, _ = env.reset(seed=inline.records[1].seed)
    env.close()
    factory = _DiesMidEpisode(str(ckpt), np.asarray(obs["observation.state"]).tolist())
    # The same factory inline: it must not fire for the other episodes (guards the injection).
    res = evaluate(factory, "pusht", episodes_per_task=3, seed=4, workers=1, **KW)
    statuses = [r.status for r in res.records]
    assert statuses == ["failure", "error", "failure"], [r.error for r in res.records]
    dead = res.records[1]
    assert dead.attempts == 2
    assert "worker process died (exit code 3)" in (dead.error or "")
    assert [res.records[0].attempts, res.records[2].attempts] == [1, 1]
    for i in (0, 2):  # the episodes around the crash are the inline ones, on fresh workers
        assert _outcome(res.records[i]) == _outcome(inline.records[i])
    o = res.summary["overall"]
    assert (o["completed"], o["errors"]) == (2, 1)
