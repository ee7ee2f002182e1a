"""Checkpoint folders: pickle-free optimizer state, atomic writes, pointers, pruning, refusals."""

from __future__ import annotations

import json
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from training_toy import ToyPolicy, toy_embodiment
from vlastack.errors import DataError
from vlastack.training import checkpoint as ck

STATS = {
    "format_version": 1,
    "modes": {"action": "mean_std"},
    "stats": {"action": {"mean": [0.0, 1.0], "std": [1.0, 2.0]}},
}


def trained_optimizer() -> tuple[ToyPolicy, torch.optim.AdamW]:
    torch.manual_seed(0)
    model = ToyPolicy()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95))
    for _ in range(2):
        opt.zero_grad()
        sum(p.square().sum() for p in model.parameters()).backward()
        opt.step()
    return model, opt


def save(root: Path, step: int, **kw) -> Path:
    model, opt = trained_optimizer()
    state = ck.ResumeState(
        step=step,
        optimizer=opt.state_dict(),
        scheduler={"last_epoch": step},
        rng=ck.capture_rng(),
        sampler={"epoch": 0, "batch_in_epoch": step},
    )
    args = dict(
        weights=model.state_dict(),
        config={"train": {}},
        normalization=STATS,
        embodiment=toy_embodiment(),
        resume=state,
    )
    args.update(kw)
    return ck.save_checkpoint(root, step, **args)


def test_optimizer_state_round_trips_without_pickle(tmp_path: Path) -> None:
    model, opt = trained_optimizer()
    sd = opt.state_dict()
    ck.save_state_file(tmp_path / "opt.safetensors", sd)
    raw = (tmp_path / "opt.safetensors").read_bytes()
    assert b"torch._utils" not in raw and not raw.startswith(b"\x80")  # not a pickle
    back = ck.load_state_file(tmp_path / "opt.safetensors")
    assert back["param_groups"] == sd["param_groups"]
    assert set(back["state"]) == set(sd["state"])  # int keys survive
    for i, st in sd["state"].items():
        for k, v in st.items():
            assert torch.equal(back["state"][i][k], v)
    opt2 = torch.optim.AdamW(model.parameters(), lr=1e-3)
    opt2.load_state_dict(back)
    assert opt2.param_groups[0]["betas"] == (0.9, 0.95)


def test_rng_capture_restore() -> None:
    state = ck.capture_rng()
    a = (random.random(), np.random.rand(), torch.rand(3))
    ck.restore_rng(json.loads(json.dumps(state)))
    b = (random.random(), np.random.rand(), torch.rand(3))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])


def test_layout_pointers_and_pruning(tmp_path: Path) -> None:
    for step in (1, 2, 3, 4):
        path = save(tmp_path, step)
        if step == 2:
            ck.set_pointer(tmp_path, "best", path.name)
    ck.prune_checkpoints(tmp_path, keep_last=2)
    names = sorted(p.name for p in ck.list_step_dirs(tmp_path))
    assert names == ["step_000002", "step_000003", "step_000004"]  # best is kept
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders
    assert ck.resolve_checkpoint(tmp_path / "last").name == "step_000004"
    assert ck.resolve_checkpoint(tmp_path.parent / tmp_path.name / "best").name == "step_000002"
    files = sorted(p.name for p in (tmp_path / "step_000004").iterdir())
    assert files == sorted(
        [
            "model.safetensors",
            "config.json",
            "normalization.json",
            "embodiment.json",
            "format_version",
            "optimizer.safetensors",
            "trainer_state.json",
        ]
    )
    st = ck.load_resume_state(tmp_path)
    assert st.step == 4 and st.sampler == {"epoch": 0, "batch_in_epoch": 4}


def test_pointer_files_when_symlinks_fail(tmp_path: Path, monkeypatch) -> None:
    def no_symlink(*a, **k):
        raise OSError("symlinks not permitted")

    monkeypatch.setattr(ck.os, "symlink", no_symlink)
    save(tmp_path, 7)
    assert (tmp_path / "last").is_file() and not (tmp_path / "last").is_symlink()
    assert ck.load_checkpoint(tmp_path / "last").step == 7


def test_loading_refuses_mismatches(tmp_path: Path, monkeypatch) -> None:
    path = save(tmp_path, 1)
    # Never unpickles: loading works with pickle and torch.load disabled.
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load called"))
    monkeypatch.setattr(pickle, "load", lambda *a, **k: pytest.fail("pickle.load called"))
    loaded = ck.load_checkpoint(path, expect_stats=STATS, expect_embodiment=toy_embodiment())
    assert loaded.embodiment.robot_type == "toy" and "head.0.weight" in loaded.weights

    other = json.loads(json.dumps(STATS))
    other["stats"]["action"]["std"][1] = 3.0
    with pytest.raises(DataError, match=r"'action'.*std.*dim 1"):
        ck.load_checkpoint(path, expect_stats=other["stats"])
    with pytest.raises(DataError, match="std"):
        ck.load_checkpoint(path, expect_stats=other)
    with pytest.raises(DataError, match="action dim 2 vs 3"):
        ck.load_checkpoint(path, expect_embodiment=toy_embodiment(action_dim=3))
    (path / "format_version").write_text("99\n")
    with pytest.raises(DataError, match="format_version 99.*upgrade"):
        ck.load_checkpoint(path)
    with pytest.raises(DataError, match="no checkpoint found"):
        ck.load_checkpoint(tmp_path / "nothing")


def test_tied_weights_are_saved(tmp_path: Path) -> None:
    w = torch.randn(3, 3)
    ck.save_weights(tmp_path / "m.safetensors", {"a": w, "b": w})
    from safetensors.torch import load_file

    out = load_file(str(tmp_path / "m.safetensors"))
    assert torch.equal(out["a"], out["b"])
