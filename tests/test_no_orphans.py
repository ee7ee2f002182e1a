"""kill -9 or SIGTERM of ``vlastack collect --workers N`` and ``vlastack train`` leaves no
process behind (issue 27.3): no worker, no forkserver, no resource tracker. The command runs as a
real subprocess; the test records its whole process tree, kills the top process and waits (bounded)
for every recorded descendant to be gone. SIGTERM is a clean stop with a message. After kill -9 the
dataset still reads and a resume adds exactly the missing episode, with no duplicate."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

psutil = pytest.importorskip("psutil", reason="psutil reads the process tree")

SRC = Path(__file__).resolve().parents[1] / "src"


def _start(args: list[str], log: Path) -> subprocess.Popen:
    tests = str(Path(__file__).resolve().parent)
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{tests}", "OMP_NUM_THREADS": "1"}
    with open(log, "wb") as f:  # a file, not a pipe: an orphan holding a pipe would hang us
        return subprocess.Popen(
            [sys.executable, "-m", "vlastack", *args], stdout=f, stderr=subprocess.STDOUT, env=env
        )


def _wait_for_tree(proc: subprocess.Popen, want: int, log: Path, timeout_s: float = 90.0):
    """The process's descendants once at least ``want`` exist (and have for a moment)."""
    top = psutil.Process(proc.pid)
    deadline = time.monotonic() + timeout_s
    seen: dict[int, psutil.Process] = {}
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"exited early ({proc.returncode}): {log.read_text()[-2000:]}"
        for p in top.children(recursive=True):
            seen.setdefault(p.pid, p)
        if len(seen) >= want:
            time.sleep(1.0)  # let the workers get into their work
            for p in top.children(recursive=True):
                seen.setdefault(p.pid, p)
            return list(seen.values())
        time.sleep(0.2)
    raise AssertionError(f"only {len(seen)} descendants after {timeout_s}s: {log.read_text()}")


def _survivors(procs: list, timeout_s: float = 15.0) -> list:
    deadline = time.monotonic() + timeout_s
    while True:
        alive = []
        for p in procs:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


def _kill_and_check(proc: subprocess.Popen, tree: list, sig: int) -> list[str]:
    try:
        os.kill(proc.pid, sig)
        proc.wait(60)
        left = _survivors(tree)
        return [f"{p.pid} {' '.join(p.cmdline())[:100]}" for p in left]
    finally:
        for p in tree:  # never leave them for the next test, whatever happened
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


COLLECT = ["collect", "--env", "metaworld/reach-v3", "--episodes-per-task", "12"]
COLLECT += ["--image-size", "32", "--workers", "2"]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_collect_with_workers_leaves_no_process(tmp_path, sig):
    pytest.importorskip("metaworld", reason="Meta-World is in the 'sim' extra")
    out, log = tmp_path / "ds", tmp_path / "log.txt"
    proc = _start([*COLLECT, "--out", str(out)], log)
    tree = _wait_for_tree(proc, want=4, log=log)  # tracker, forkserver, 2 workers
    left = _kill_and_check(proc, tree, sig)
    assert not left, f"processes left after {sig.name}: {left}"
    if sig == signal.SIGTERM:
        assert proc.returncode == 128 + signal.SIGTERM
        assert "sigterm" in log.read_text().lower(), log.read_text()[-1000:]
        return
    # kill -9: the dataset reads, and a resume adds the missing episode once
    from vlastack.data.format import DatasetReader
    from vlastack.envs.collect import collect

    if not (out / "meta" / "info.json").exists():
        return  # killed before the first episode was written: nothing to resume
    before = DatasetReader(out).num_episodes
    res = collect(
        "metaworld/reach-v3",
        out,
        episodes_per_task=before + 1,
        workers=1,
        image_size=(32, 32),
        progress=False,
    )
    reader = DatasetReader(out)
    keys = [(e.extra["env"], e.extra["attempt"]) for e in reader.episodes]
    assert res.new_episodes == 1 and reader.num_episodes == before + 1
    assert len(keys) == len(set(keys))


# ~20 s each (the recipe's model build before the loader starts); the collect tests above pin the
# same mechanism (vlastack.lifeline) in the default run.
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_train_with_loader_workers_leaves_no_process(tmp_path, lerobot_fixture, sig):
    log = tmp_path / "log.txt"
    args = ["train", "rt1", f"--data={lerobot_fixture}", "--steps=100000", "--batch_size=4"]
    args += ["--num_workers=2", "--num_threads=1", "--log=none", "--progress=false"]
    args += ["--val_fraction=0", f"--out_dir={tmp_path / 'run'}", "--save_every=100000"]
    proc = _start(args, log)
    tree = _wait_for_tree(proc, want=4, log=log)  # tracker, forkserver, 2 loader workers
    left = _kill_and_check(proc, tree, sig)
    assert not left, f"processes left after {sig.name}: {left}"
    if sig == signal.SIGTERM:
        assert proc.returncode == 128 + signal.SIGTERM
        assert "sigterm" in log.read_text().lower(), log.read_text()[-1000:]
