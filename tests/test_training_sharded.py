"""Sharded (DCP) checkpoints in one process: exact resume, what counts as a complete folder, the
RNG on a change of world size, and the errors of a misconfigured multi-node launch. The
multi-process cases (4 ranks -> 2 -> 1, two nodes) are in test_training_multinode.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from training_toy import toy_parts
from vlastack.errors import ConfigError
from vlastack.training import checkpoint, distributed, sharded
from vlastack.training.config import TrainConfig, apply_overrides
from vlastack.training.loop import restore_rank_rng, train

ARGS = ["--steps=4", "--batch_size=8", "--lr=1e-2", "--warmup_steps=1", "--val_batches=1"]


def run(out: Path, *extra: str) -> Path:
    cfg = apply_overrides(
        TrainConfig(log="none", progress=False), [*ARGS, *extra, f"--out_dir={out}"]
    )
    res = train(cfg, lambda c: toy_parts())  # loss noise on: the RNG must be restored too
    assert res.last_checkpoint is not None
    return res.last_checkpoint


def test_sharded_checkpoint_resumes_exactly_and_keeps_the_deployable_weights(
    tmp_path: Path,
) -> None:
    whole = run(tmp_path / "whole", "--checkpoint_format=sharded")
    assert sharded.is_sharded(whole) and not (whole / "optimizer.safetensors").exists()
    assert json.loads((whole / "trainer_state.json").read_text())["sharded"] is True
    assert checkpoint.is_complete_checkpoint(whole, resumable=True)

    run(tmp_path / "a", "--checkpoint_format=sharded", "--save_every=2")
    shutil.rmtree(tmp_path / "a" / "checkpoints" / "step_000004")
    checkpoint.set_pointer(tmp_path / "a" / "checkpoints", "last", "step_000002")
    resumed = run(tmp_path / "a", "--checkpoint_format=sharded", "--resume=true")
    a, b = (
        load_file(str(whole / "model.safetensors")),
        load_file(str(resumed / "model.safetensors")),
    )
    assert a.keys() == b.keys()
    for k in a:  # one process, same RNG, same order of operations: bitwise
        assert torch.equal(a[k], b[k]), k
    # the deployable weights of a sharded checkpoint are the full ones, like a 'full' checkpoint's
    full = run(tmp_path / "full", "--checkpoint_format=full")
    c = load_file(str(full / "model.safetensors"))
    assert all(torch.equal(a[k], c[k]) for k in a)


def test_a_sharded_checkpoint_without_its_dcp_metadata_is_incomplete(tmp_path: Path) -> None:
    last = run(tmp_path / "r", "--checkpoint_format=sharded", "--steps=2", "--save_every=1")
    (last / "dcp" / ".metadata").unlink()  # a kill between the shards and the metadata
    assert not checkpoint.is_complete_checkpoint(last, resumable=True)
    back = checkpoint.recover_checkpoints(last.parent)
    assert back is not None and back.name == "step_000001"  # last re-pointed, step 2 set aside


def test_rng_is_restored_on_the_same_world_and_reseeded_per_rank_on_another() -> None:
    torch.manual_seed(1)
    saved = [checkpoint.capture_rng(), checkpoint.capture_rng()]
    expected = torch.rand(3)
    said: list[str] = []
    restore_rank_rng(saved, distributed.DistInfo(rank=1, world_size=2), 0, 10, said.append)
    assert torch.equal(torch.rand(3), expected) and not said
    draws = []
    for rank in (0, 1):
        restore_rank_rng(saved, distributed.DistInfo(rank=rank, world_size=4), 0, 10, said.append)
        draws.append(torch.rand(3))
    assert not torch.equal(draws[0], draws[1])  # ranks still draw distinct noise
    assert "re-seeded" in said[0]


def test_hsdp_needs_the_same_processes_on_every_node(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "6")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    with pytest.raises(ConfigError, match="LOCAL_WORLD_SIZE=4.*--nproc_per_node"):
        distributed.init_distributed("hsdp", "cpu")


def test_a_node_that_cannot_see_the_checkpoint_folder_is_told_to_share_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # as if rank 0 had made the folder on a disk this rank does not mount
    monkeypatch.setattr(sharded, "make_temp_folder", lambda root, step: root / "elsewhere")
    with pytest.raises(ConfigError, match="filesystem every node mounts"):
        sharded.begin_checkpoint_folder(tmp_path, 3, distributed.DistInfo())
