"""Checkpoints survive a SIGKILL at every write inside a save, a re-save and a prune.

One helper process imports torch once, counts the file-system events a full operation makes
(file writes, renames, symlinks, fsyncs, mkdirs, and every unlink inside a folder delete), then for every k forks a child that
runs the operation and SIGKILLs itself at the k-th event; a file write is first left half
written (safetensors and JSON alike). The test then checks each folder the way a resumed run
reads it: every ``step_*`` folder is complete with the exact weights of a save, the previous
checkpoint is intact, and ``recover_checkpoints`` (what ``train --resume`` runs first) repairs
the folder and resumes from a complete checkpoint holding the newest weights that were committed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from vlastack.errors import DataError
from vlastack.training import checkpoint as C

SRC = Path(__file__).resolve().parents[1] / "src"
TESTS = Path(__file__).resolve().parent


def weights(step: int, salt: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 * salt + step)
    return {
        "enc.weight": torch.randn(48, 16, generator=g),
        "head.bias": torch.randn(8, generator=g),
    }


def resume_state(step: int, salt: int = 0) -> C.ResumeState:
    g = torch.Generator().manual_seed(7 + 1000 * salt + step)
    return C.ResumeState(
        step=step,
        optimizer={
            "state": {
                0: {"step": torch.tensor(float(step)), "exp_avg": torch.randn(8, generator=g)}
            },
            "param_groups": [{"lr": 0.1, "params": [0]}],
        },
        scheduler={"last_epoch": step},
        rng={"python": step},
        sampler={"epoch": 0, "batch_in_epoch": step},
        ema={k: v + 1 for k, v in weights(step, salt).items()},
        extra={"best_metric": None, "salt": salt},
    )


def save(root: Path, step: int, salt: int = 0, keep_last: int | None = None) -> None:
    """What the training loop's save() does: the checkpoint, then pruning."""
    C.save_checkpoint(
        root,
        step,
        weights=weights(step, salt),
        config={"model": {"salt": salt}, "train": {"steps": 10}},
        normalization={"stats": {}, "modes": {}},
        embodiment=None,
        resume=resume_state(step, salt),
    )
    if keep_last is not None:
        C.prune_checkpoints(root, keep_last)


HELPER = textwrap.dedent(
    """
    import json, os, pathlib, shutil, signal, sys
    sys.path.insert(0, {src!r}); sys.path.insert(0, {tests!r})
    from test_training_checkpoint_kill import save
    import vlastack.training.checkpoint as C
    out = pathlib.Path(sys.argv[1])
    # scenario: (what is there before, the operation)
    SCENARIOS = {{
        "first": (lambda r: None, lambda r: save(r, 1)),
        "next": (lambda r: save(r, 1), lambda r: save(r, 2, keep_last=1)),
        "same": (lambda r: save(r, 1), lambda r: save(r, 1, salt=1)),
    }}
    from _kill_points import KillPoints
    kp = KillPoints()
    die, event, before = kp.die, kp.event, kp.before

    real_save_file, real_write_text = C.save_file, pathlib.Path.write_text

    def save_file(tensors, path, metadata=None):
        if event():  # a torn write: half the bytes reached the file
            real_save_file(tensors, path, metadata=metadata)
            data = pathlib.Path(path).read_bytes()
            pathlib.Path(path).write_bytes(data[: len(data) // 2])
            die()
        return real_save_file(tensors, path, metadata=metadata)

    def write_text(self, data, *a, **kw):
        if event():
            real_write_text(self, data[: len(data) // 2])
            die()
        return real_write_text(self, data, *a, **kw)

    def patch():
        C.save_file = save_file
        pathlib.Path.write_text = write_text
        for obj, name in [(pathlib.Path, "rename"), (pathlib.Path, "mkdir"), (os, "replace"),
                          (os, "symlink"), (os, "fsync"), (shutil, "rmtree"),
                          (os, "unlink"), (os, "rmdir")]:  # rmtree deletes file by file
            setattr(obj, name, before(getattr(obj, name)))

    report = {{}}
    for name, (setup, op) in SCENARIOS.items():
        base = out / name / "base"
        setup(base)
        base.mkdir(parents=True, exist_ok=True)
        shutil.copytree(base, out / name / "count", symlinks=True)
        pid = os.fork()
        if pid == 0:  # count the events of the whole operation
            patch()
            op(out / name / "count")
            os._exit(10 + kp.events)
        _, status = os.waitpid(pid, 0)
        n = os.waitstatus_to_exitcode(status) - 10
        report[name] = {{"events": n, "killed": []}}
        for k in range(n):
            root = out / name / f"k{{k:03d}}"
            shutil.copytree(base, root, symlinks=True)
            pid = os.fork()
            if pid == 0:
                kp.kill_at = k
                patch()
                op(root)
                os._exit(0)
            _, status = os.waitpid(pid, 0)
            report[name]["killed"].append(os.waitstatus_to_exitcode(status) == -signal.SIGKILL)
    print(json.dumps(report))
    """
)


@pytest.fixture(scope="module")
def killed(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("ckpt_kill")
    script = out / "helper.py"
    script.write_text(HELPER.format(src=str(SRC), tests=str(TESTS)))
    proc = subprocess.run(
        [sys.executable, str(script), str(out)], capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads(proc.stdout.strip().splitlines()[-1])


def _step_dirs_are_exact_saves(root: Path, allowed: dict[int, set[int]]) -> dict[int, int]:
    """Every step_* folder loads completely with the weights, EMA and optimizer state of one
    save (``allowed[step]`` = the salts that step was saved with); returns step -> salt."""
    found = {}
    for p in C.list_step_dirs(root):
        step = int(p.name.removeprefix(C.STEP_PREFIX))
        ck = C.load_checkpoint(p)
        st = C.load_resume_state(p)
        salt = int(st.extra["salt"])
        assert salt in allowed.get(step, set()), (p, salt)
        for k, v in weights(step, salt).items():
            assert torch.equal(ck.weights[k], v), (p, k)
            assert st.ema is not None and torch.equal(st.ema[k], v + 1), (p, k)
        ref = resume_state(step, salt).optimizer["state"][0]["exp_avg"]
        assert torch.equal(st.optimizer["state"][0]["exp_avg"], ref)
        assert ck.config["model"]["salt"] == salt and st.step == step
        found[step] = salt
    return found


def _resume(root: Path) -> tuple[int, int] | None:
    """What train --resume does first; returns (step, salt) of the checkpoint it resumes."""
    last = C.recover_checkpoints(root)
    if last is None:
        assert not C.list_step_dirs(root)
        return None
    st = C.load_resume_state(root / "last")
    ck = C.load_checkpoint(root / "last")
    assert ck.path == last
    salt = int(st.extra["salt"])
    for k, v in weights(st.step, salt).items():
        assert torch.equal(ck.weights[k], v)
    assert not [p.name for p in root.iterdir() if p.name.startswith((".tmp-", ".old-", ".trash-"))]
    return st.step, salt


def _kill_points(killed, name: str) -> list[Path]:
    out, report = killed
    r = report[name]
    assert r["events"] >= 8, r  # writes, fsyncs, renames and the pointer
    assert all(r["killed"]) and len(r["killed"]) == r["events"], r
    return [out / name / f"k{k:03d}" for k in range(r["events"])]


def test_killed_first_save_leaves_nothing_or_a_complete_checkpoint(killed):
    outcomes = set()
    for root in _kill_points(killed, "first"):
        found = _step_dirs_are_exact_saves(root, {1: {0}})
        resumed = _resume(root)
        assert resumed == ((1, 0) if found else None), root
        outcomes.add(resumed)
        save(root, 2)  # the resumed run goes on saving
        assert C.load_checkpoint(root / "last").step == 2
    assert outcomes == {None, (1, 0)}  # both sides of the commit were hit


def test_killed_next_save_and_prune_keep_the_previous_checkpoint(killed):
    outcomes = set()
    for root in _kill_points(killed, "next"):
        found = _step_dirs_are_exact_saves(root, {1: {0}, 2: {0}})
        assert found, root  # never zero checkpoints: step 1 is deleted only after step 2 commits
        try:  # the pointer as a reader (eval, export) sees it, before any repair
            before = C.load_checkpoint(root / "last").step
        except DataError:
            before = None
        assert before in found, root
        resumed = _resume(root)
        assert resumed is not None and resumed[0] in found and resumed[0] >= (before or 0)
        outcomes.add(resumed)
    assert outcomes == {(1, 0), (2, 0)}


def test_killed_resave_of_the_same_step_keeps_one_complete_version(killed):
    outcomes = set()
    for root in _kill_points(killed, "same"):
        _step_dirs_are_exact_saves(root, {1: {0, 1}})
        resumed = _resume(root)
        assert resumed is not None and resumed[0] == 1, root  # step 1 never disappears
        assert _step_dirs_are_exact_saves(root, {1: {0, 1}}) == {1: resumed[1]}
        outcomes.add(resumed)
    assert outcomes == {(1, 0), (1, 1)}
