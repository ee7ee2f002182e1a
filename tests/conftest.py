"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

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
