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

# Under CI (`CI` set, as .ci/run is run), a skip means a part that `make test` installs is missing
# (a C compiler for the native kernels, Meta-World, onnxruntime, h5py/zarr, the side venvs,
# chromium, ../shared's fixtures): a broken install, reported as a failure. These reasons name
# the parts `make test` does not install on purpose, and stay skips everywhere.
NOT_INSTALLED_BY_MAKE_TEST = (
    "needs a CUDA GPU",  # CI and the developers' machines have none
    "[rlds] extra",  # TensorFlow (~1.8 GB), opt-in
    "LIBERO",  # its own 2.1 GB venv, opt-in: `make venv-libero`
    "Linux-only",
)


def _strict_skips() -> bool:
    return bool(os.environ.get("CI")) and os.environ.get("VLASTACK_ALLOW_SKIPS") != "1"


def _skip_reason(longrepr: object) -> str:
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


def _skip_is_a_failure(report: pytest.BaseReport) -> str | None:
    if not (report.skipped and _strict_skips()) or hasattr(report, "wasxfail"):
        return None
    reason = _skip_reason(report.longrepr)
    if any(part in reason for part in NOT_INSTALLED_BY_MAKE_TEST):
        return None
    return (
        f"skipped under CI: {reason}\n`make test` installs this part, so a skip here means a "
        "broken install (set VLASTACK_ALLOW_SKIPS=1 to allow it on purpose)"
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> object:
    outcome = yield
    report = outcome.get_result()
    message = _skip_is_a_failure(report)
    if message is not None:
        report.outcome = "failed"
        report.longrepr = message


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> object:
    outcome = yield
    report = outcome.get_result()
    message = _skip_is_a_failure(report)
    if message is not None:
        report.outcome = "failed"
        report.longrepr = message


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
