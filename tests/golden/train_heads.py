"""Regenerate ``tests/golden/trained_heads.safetensors``: every registered action head (and the
diffusion head's U-Net denoiser), built tiny, trained briefly on one fixed synthetic task, its
weights saved under ``<head>.<parameter>`` keys (parameters as float16, buffers as they are).
tests/test_runner_parity.py runs every runner on these trained weights (trained weights are not the random init's scale or symmetry: a
runner's reordered sums meet the values a real checkpoint holds). Deterministic on one machine;
the parity test compares runners with each other, not with stored outputs, so a regenerated
file on another CPU is as good. Run from the repository root ONLY to change the heads' set:

    .venv/bin/python tests/golden/train_heads.py
"""

from __future__ import annotations

from pathlib import Path

import torch

CONTEXT_DIM, ACTION_DIM, ACTION_HORIZON, N_TOKENS = 24, 3, 6, 5
STEPS, BATCH, LR = 30, 8, 3e-3

# the tiny sizes of tests/golden/regenerate.py; "diffusion_unet" is the U-Net denoiser
TRAINED_CONFIGS: dict[str, tuple[str, dict]] = {
    "bins": ("bins", dict(width=32, depth=1, num_heads=2)),
    "bins_ar": ("bins_ar", dict(width=32, depth=1, num_heads=2)),
    "fast": ("fast", dict(width=32, depth=1, num_heads=2)),
    "l1": ("l1", dict(width=32, depth=1, num_heads=2)),
    "mlp": ("mlp", dict(width=32, depth=1, num_heads=2)),
    "diffusion": ("diffusion", dict(width=32, depth=1, num_heads=2, num_inference_steps=5)),
    "diffusion_unet": (
        "diffusion",
        dict(
            denoiser="unet",
            width=32,
            down_dims=(16, 32),
            step_embed_dim=16,
            n_groups=4,
            num_inference_steps=5,
        ),
    ),
    "flow_matching": ("flow_matching", dict(width=32, depth=1, num_heads=2, num_steps=5)),
    "flower": ("flower", dict(width=32, depth=1, num_heads=2, num_steps=4)),
    "act": ("act", dict(width=32, encoder_depth=1, decoder_depth=1, num_heads=2)),
}
PATH = Path(__file__).with_name("trained_heads.safetensors")
# registered names that build the same class from the same builder: they share the weights
ALIASES = {"mlp": "l1"}


def build(name: str) -> torch.nn.Module:
    from vlastack.models.action_heads import build_action_head

    registered, cfg = TRAINED_CONFIGS[name]
    return build_action_head(
        registered,
        cfg,
        context_dim=CONTEXT_DIM,
        action_dim=ACTION_DIM,
        action_horizon=ACTION_HORIZON,
    )


def batch(g: torch.Generator, B: int = BATCH) -> dict[str, torch.Tensor]:
    """Actions a smooth function of the context's mean token; the last tokens padded."""
    context = torch.randn(B, N_TOKENS, CONTEXT_DIM, generator=g)
    mask = torch.ones(B, N_TOKENS, dtype=torch.bool)
    mask[::2, 3:] = False
    pooled = (context * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    t = torch.linspace(0, 1, ACTION_HORIZON)[None, :, None]
    phase = pooled[:, None, :ACTION_DIM]
    actions = (0.8 * torch.sin(3 * t + phase)).clamp(-1, 1)
    return dict(
        context=context,
        context_mask=mask,
        actions=actions,
        action_is_pad=torch.zeros(B, ACTION_HORIZON, dtype=torch.bool),
    )


def train(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    head = build(name).train()
    opt = torch.optim.Adam(head.parameters(), lr=LR)
    g = torch.Generator().manual_seed(1)
    for _ in range(STEPS):
        x = batch(g)
        loss = head.loss(x["context"], x["context_mask"], x["actions"], x["action_is_pad"]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return head.eval()


def main() -> None:
    from safetensors.torch import save_file

    tensors = {}
    for name in TRAINED_CONFIGS:
        if name in ALIASES:
            continue
        head = train(name)
        print(name, flush=True)
        params = {k for k, _ in head.named_parameters()}
        for k, v in head.state_dict().items():
            # trained parameters stored as float16 (the file stays under 1 MB; loading casts
            # them back to float32); buffers (noise schedules, bin centres) exactly
            v = v.detach().contiguous().clone()
            tensors[f"{name}.{k}"] = v.half() if k in params and v.is_floating_point() else v
    save_file(tensors, str(PATH))
    print(f"{PATH}: {PATH.stat().st_size / 1e3:.0f} kB, {len(tensors)} tensors")


if __name__ == "__main__":
    main()
