"""The scaffolding of the tests that run imported LeRobot folders through the commands
(``vlastack bench latency``, ``serve`` to the real openpi client, ``eval`` in PushT): PushT's
features and stats for a PushT-shaped folder, and each command run the way those tests run it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import torch

from vlastack.cli.main import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
OPENPI_PY = ROOT / ".venv-openpi" / "bin" / "python"
OBS_SCRIPT = Path(__file__).with_name("serving_openpi_obs_script.py")

# PushT: one 96x96 'top' camera, 2-d state and action
PUSHT_INPUTS = {
    "observation.images.top": {"type": "VISUAL", "shape": [3, 96, 96]},
    "observation.state": {"type": "STATE", "shape": [2]},
}
PUSHT_OUTPUTS = {"action": {"type": "ACTION", "shape": [2]}}


def pusht_config(src: Path, dst: Path) -> dict[str, Any]:
    """``src``'s config.json with PushT's features and n_action_steps 5, written to ``dst``."""
    cfg = json.loads((src / "config.json").read_text())
    cfg.update(input_features=PUSHT_INPUTS, output_features=PUSHT_OUTPUTS, n_action_steps=5)
    (dst / "config.json").write_text(json.dumps(cfg))
    return cfg


def pusht_stats() -> dict[str, torch.Tensor]:
    """MEAN_STD stats of state and action in PushT's pixel units."""
    return {
        "observation.state.mean": torch.full((2,), 256.0),
        "observation.state.std": torch.full((2,), 100.0),
        "action.mean": torch.full((2,), 256.0),
        "action.std": torch.full((2,), 100.0),
    }


def eval_pusht(folder: Path, out: Path, max_steps: int = 10) -> int:
    """``vlastack eval FOLDER --env pusht``: one episode of ``max_steps`` at 96x96."""
    argv = ["eval", str(folder), "--env", "pusht", "--episodes-per-task", "1"]
    argv += ["--max-steps", str(max_steps), "--image-size", "96", "--out", str(out)]
    return main([*argv, "--no-progress"])


def bench_latency(folder: Path, iters: int = 2) -> int:
    """``vlastack bench latency FOLDER --json`` on one thread; torch's thread count restored."""
    argv = ["bench", "latency", str(folder), "--iters", str(iters), "--warmup", "1"]
    threads = torch.get_num_threads()
    try:
        return main([*argv, "--threads", "1", "--json"])
    finally:
        torch.set_num_threads(threads)


def serve_policy(argv: list[str]) -> Any:
    """What ``vlastack serve ...`` serves (``argv`` without the leading 'serve'); torch's
    thread count restored."""
    from vlastack.cli.serve import _load_policy

    args = build_parser().parse_args(["serve", *argv])
    threads = torch.get_num_threads()
    try:
        return _load_policy(args)
    finally:
        torch.set_num_threads(threads)


def openpi_client_run(port: int, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """The real openpi client (.venv-openpi) sends ``tmp_path/obs.msgpack`` to ``port`` and
    writes the replies to ``tmp_path/out.msgpack``."""
    return subprocess.run(
        [
            str(OPENPI_PY),
            str(OBS_SCRIPT),
            str(port),
            str(tmp_path / "obs.msgpack"),
            str(tmp_path / "out.msgpack"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
