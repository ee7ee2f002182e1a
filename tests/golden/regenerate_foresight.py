"""Regenerate the committed golden outputs of the foresight models (models/foresight.py).

Two tiny VLAs built after ``torch.manual_seed(0)`` (no language model, a frozen small CNN):
``cot`` (CoT-VLA latent subgoal, L1 head) and ``wm`` (world-model auxiliary loss, flow-matching
head ranking 4 samples). Stored per model: the per-sample training loss on the fixed batch of
``golden_batch()`` (global RNG seeded 123 right before ``loss``), and the sampled chunk
(``torch.Generator`` seeded 0); for ``cot`` also the generated subgoal latents.
Run from the repository root ONLY when a change to these models is intentional:

    .venv/bin/python tests/golden/regenerate_foresight.py
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

BASE: dict[str, Any] = dict(
    action_dim=3,
    action_horizon=4,
    state_dim=2,
    image_size=(32, 32),
    width=32,
    vision="small_cnn",
    vision_kwargs={"width": 8, "num_blocks": 2, "out_dim": 16},
    language="none",
    freeze_vision=True,
)
HEAD = {"width": 32, "depth": 1, "num_heads": 2}
CONFIGS: dict[str, dict[str, Any]] = {
    "cot": dict(BASE, head="l1", head_kwargs=HEAD, subgoal={"horizon": 3, "num_heads": 2}),
    "wm": dict(
        BASE,
        head="flow_matching",
        head_kwargs={**HEAD, "num_steps": 3},
        world_model={"weight": 0.5, "horizon": 3, "rank_samples": 4},
    ),
}


def golden_batch() -> dict[str, Any]:
    g = torch.Generator().manual_seed(2024)
    B = 2
    return {
        "observation.images.main": torch.rand(B, 1, 3, 32, 32, generator=g),
        "observation.state": torch.randn(B, 1, 2, generator=g),
        "action": torch.rand(B, 4, 3, generator=g) * 2 - 1,
        "action_is_pad": torch.tensor([[False] * 4, [False, False, True, True]]),
        "future.images.main": torch.rand(B, 3, 32, 32, generator=g),
        "task": ["a", "b"],
    }


def golden_outputs(name: str) -> dict[str, torch.Tensor]:
    from vlastack.models.vla import VLAConfig, build_vla

    torch.manual_seed(0)
    vla = build_vla(VLAConfig(**CONFIGS[name])).eval()
    batch = golden_batch()
    torch.manual_seed(123)
    with torch.no_grad():
        loss = vla.loss(batch)
    samples = vla.sample_actions(batch, generator=torch.Generator().manual_seed(0))
    out = {"loss": loss.contiguous(), "samples": samples.contiguous()}
    if vla.last_subgoal is not None:
        out["subgoal"] = vla.last_subgoal.contiguous()
    return out


def main() -> None:
    from safetensors.torch import save_file

    out = Path(__file__).resolve().parent / "foresight.safetensors"
    tensors = {f"{n}.{k}": v for n in CONFIGS for k, v in golden_outputs(n).items()}
    save_file(tensors, str(out))
    print("wrote", out)


if __name__ == "__main__":
    main()
