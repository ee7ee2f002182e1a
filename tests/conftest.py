"""Shared pytest fixtures."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The tests' fake envs and checkpoint format live in the plugin package tests/vlastack_test_plugins
# and reach vlastack the way a user's plugin does: VLASTACK_PLUGINS names it, and tests/ is on
# sys.path here and on PYTHONPATH for worker processes and CLI subprocesses.
TESTS = Path(__file__).resolve().parent
TEST_PLUGIN = "vlastack_test_plugins"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))
_pythonpath = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
if str(TESTS) not in _pythonpath:
    os.environ["PYTHONPATH"] = os.pathsep.join([*_pythonpath, str(TESTS)])
_plugins = [p.strip() for p in os.environ.get("VLASTACK_PLUGINS", "").split(",") if p.strip()]
if TEST_PLUGIN not in _plugins:
    os.environ["VLASTACK_PLUGINS"] = ",".join([*_plugins, TEST_PLUGIN])

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VLASTACK_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    d = SHARED / "fixtures"
    if not d.exists():
        pytest.skip(f"shared fixtures not found at {d} (set VLASTACK_SHARED)")
    return d


@pytest.fixture(scope="session")
def lerobot_fixture(fixtures_dir: Path) -> Path:
    return fixtures_dir / "lerobot_v3_tiny_two_cam"


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """Code under test may set torch's global intra-op thread count (the server's startup
    timing, training's auto threads); later tests start from the count they would have had."""
    import torch

    before = torch.get_num_threads()
    yield
    if torch.get_num_threads() != before:
        torch.set_num_threads(before)


@pytest.fixture(params=["native", "torch"])
def kernels(request):
    """Run the test once with vlastack's native CPU kernels (``vlastack.native``) and once with
    torch's (oneDNN / MKL): plans and packs built inside take the one named."""
    from vlastack import native

    if request.param == "native":
        if not native.available():
            pytest.skip(f"native kernels unavailable here: {native.status()}")
        yield "native"
    else:
        with native.disabled():
            yield "torch"
