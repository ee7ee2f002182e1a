"""LeRobot 0.6.1's interpreter for the compatibility tests: ``.venv-lerobot`` beside the repo
(``make test`` builds it with ../shared/tools/lerobot-0.6.1/make_venv.sh), or
``VLASTACK_LEROBOT_PYTHON``. vlastack never imports lerobot; these tests run LeRobot's own code
in that interpreter, as a subprocess."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

LEROBOT_VENV_PY = Path(__file__).resolve().parents[1] / ".venv-lerobot" / "bin" / "python"


def lerobot_python() -> str:
    """The interpreter's path; skips (a failure under CI) when it is missing or has no lerobot."""
    py = os.environ.get("VLASTACK_LEROBOT_PYTHON") or str(LEROBOT_VENV_PY)
    if not Path(py).exists():
        pytest.skip(
            f"no LeRobot interpreter at {py}: `make test` builds .venv-lerobot "
            "(bash ../shared/tools/lerobot-0.6.1/make_venv.sh $PWD/.venv-lerobot)"
        )
    probe = subprocess.run([py, "-c", "import lerobot"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"{py} cannot import lerobot: {probe.stderr.decode()[-300:]}")
    return py


def run_checks(py: str, script: Path, tmp: Path) -> subprocess.CompletedProcess[str]:
    """``py script tmp/jobs.json tmp/out.json``: a compat check script run over the jobs
    written to ``tmp`` (ten minutes at the most)."""
    argv = [py, str(script), str(tmp / "jobs.json"), str(tmp / "out.json")]
    return subprocess.run(argv, capture_output=True, text=True, timeout=600)
