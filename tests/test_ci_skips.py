"""Under CI a skip is a failure unless it names a part `make test` does not install on purpose
(tests/conftest.py): a missing compiler, simulator or side venv cannot turn a run green."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = Path(__file__).with_name("conftest.py")

SKIPPING = """
import pytest

def test_part_missing():
    pytest.skip("metaworld is not installed")

@pytest.mark.skipif(True, reason="needs a CUDA GPU")
def test_gpu_only():
    pass

def test_ok():
    pass
"""


def _run(tmp_path: Path, env_extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    shutil.copy(CONFTEST, tmp_path / "conftest.py")
    (tmp_path / "test_probe.py").write_text(SKIPPING)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "VLASTACK_ALLOW_SKIPS")}
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfs", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )


def test_a_missing_part_fails_under_ci(tmp_path: Path) -> None:
    proc = _run(tmp_path, {"CI": "true"})
    assert proc.returncode == 1, proc.stdout
    assert "1 failed, 1 passed, 1 skipped" in proc.stdout
    assert "FAILED test_probe.py::test_part_missing - skipped under CI" in proc.stdout
    assert "metaworld is not installed" in proc.stdout


@pytest.mark.parametrize("env", [{}, {"CI": "true", "VLASTACK_ALLOW_SKIPS": "1"}])
def test_outside_ci_a_skip_stays_a_skip(tmp_path: Path, env: dict[str, str]) -> None:
    proc = _run(tmp_path, env)
    assert proc.returncode == 0, proc.stdout
    assert "1 passed, 2 skipped" in proc.stdout
