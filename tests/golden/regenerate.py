"""Regenerate the committed golden outputs of every registered action head.

Each head is built tiny (``TINY_CONFIGS``) after ``torch.manual_seed(0)``, fed the fixed inputs of
``golden_inputs()``, and we store its loss (global RNG seeded 123 right before ``loss``) and its
sampled chunk (``torch.Generator`` seeded 0) in ``tests/golden/<head>.safetensors``.
Run from the repository root ONLY when a change to a head is intentional:

    .venv/bin/python tests/golden/regenerate.py
"""

from __future__ import annotations

from pathlib import Path

import torch

CONTEXT_DIM, ACTION_DIM, ACTION_HORIZON = 24, 3, 6

TINY_CONFIGS: dict[str, dict] = {
    "bins": dict(width=32, depth=1, num_heads=2),
    "bins_ar": dict(width=32, depth=1, num_heads=2),
    "fast": dict(width=32, depth=1, num_heads=2),
    "l1": dict(width=32, depth=1, num_heads=2),
    "mlp": dict(width=32, depth=1, num_heads=2),
    "diffusion": dict(width=32, depth=1, num_heads=2, num_inference_steps=5),
    "flow_matching": dict(width=32, depth=1, num_heads=2, num_steps=5),
    "flower": dict(width=32, depth=1, num_heads=2, num_steps=4),
    "act": dict(width=32, encoder_depth=1, decoder_depth=1, num_heads=2),
}


def golden_inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(2024)
    B, N = 2, 5
    context = torch.randn(B, N, CONTEXT_DIM, generator=g)
    context_mask = torch.ones(B, N, dtype=torch.bool)
    context_mask[1, 3:] = False
    t = torch.linspace(0, 1, ACTION_HORIZON)[None, :, None]
    actions = (0.7 * torch.sin(3 * t + torch.randn(B, 1, ACTION_DIM, generator=g))).clamp(-1, 1)
    action_is_pad = torch.zeros(B, ACTION_HORIZON, dtype=torch.bool)
    action_is_pad[0, 4:] = True
    return dict(
        context=context, context_mask=context_mask, actions=actions, action_is_pad=action_is_pad
    )


def golden_outputs(name: str) -> dict[str, torch.Tensor]:
    from vlastack.models.action_heads import build_action_head

    torch.manual_seed(0)
    head = build_action_head(
        name,
        TINY_CONFIGS[name],
        context_dim=CONTEXT_DIM,
        action_dim=ACTION_DIM,
        action_horizon=ACTION_HORIZON,
    )
    x = golden_inputs()
    torch.manual_seed(123)
    with torch.no_grad():
        loss = head.loss(x["context"], x["context_mask"], x["actions"], x["action_is_pad"])
    samples = head.sample_actions(x["context"], x["context_mask"], torch.Generator().manual_seed(0))
    return {"loss": loss.contiguous(), "samples": samples.contiguous()}


def main() -> None:
    from safetensors.torch import save_file

    out_dir = Path(__file__).resolve().parent
    for name in TINY_CONFIGS:
        save_file(golden_outputs(name), str(out_dir / f"{name}.safetensors"))
        print("wrote", out_dir / f"{name}.safetensors")


if __name__ == "__main__":
    main()
