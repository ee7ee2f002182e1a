"""Regenerate the committed golden outputs of the ``flower`` and ``hierarchy`` models (issue 30).

A tiny VLA of each (``tests/_export_tiny.tiny_config``: small CNN, no hub model) is built after
``torch.manual_seed(0)``; on fixed inputs we store its loss (global RNG seeded 123 right before
``loss``), its sampled chunk (``torch.Generator`` seeded 0) and, for the hierarchy, System 2's
subtask ids and the chunk System 1 gives for the subtask "close gripper", in
``tests/golden/vla_<name>.safetensors``. Run from the repository root ONLY when a change to these
models is intentional:

    .venv/bin/python tests/golden/recipe_trends.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _export_tiny import tiny_config  # noqa: E402

NAMES = ("flower", "hierarchy")
DIR = Path(__file__).resolve().parent


def build(name: str):
    from vlastack.models.vla import build_vla

    torch.manual_seed(0)
    if name == "flower":
        cfg = tiny_config(
            "flower", trunk_layers=1, head_kwargs={"width": 32, "depth": 1, "num_heads": 2}
        )
    else:
        cfg = tiny_config("flow_matching", hierarchy=True, trunk_layers=1, gripper_index=3)
    return build_vla(cfg)


def inputs() -> dict:
    g = torch.Generator().manual_seed(2024)
    B = 2
    t = torch.linspace(0, 1, 4)[None, :, None]
    return {
        "observation.images.front": torch.rand(B, 1, 3, 16, 16, generator=g),
        "observation.images.wrist": torch.rand(B, 1, 3, 16, 16, generator=g),
        "observation.state": torch.randn(B, 1, 4, generator=g),
        "action": (0.7 * torch.sin(3 * t + torch.randn(B, 1, 4, generator=g))).clamp(-1, 1),
        "action_is_pad": torch.zeros(B, 4, dtype=torch.bool),
    }


def golden_outputs(name: str) -> dict[str, torch.Tensor]:
    model = build(name)
    x = inputs()
    torch.manual_seed(123)
    with torch.no_grad():
        loss = model.loss(x)
    model.eval()
    out = {
        "loss": loss.contiguous(),
        "samples": model.sample_actions(x, torch.Generator().manual_seed(0)).contiguous(),
    }
    if name == "hierarchy":
        names = model.predict_subtasks(x)
        out["subtask_ids"] = torch.tensor([model.hierarchy.index[n] for n in names])
        given = {**x, "subtask": ["close gripper"] * 2}
        out["samples_given"] = model.sample_actions(
            given, torch.Generator().manual_seed(0)
        ).contiguous()
    return out


def main() -> None:
    from safetensors.torch import save_file

    for name in NAMES:
        path = DIR / f"vla_{name}.safetensors"
        save_file(golden_outputs(name), str(path))
        print("wrote", path)


if __name__ == "__main__":
    main()
