"""LeRobot 0.6.1's own training loss (``policy.forward``) on a given batch, with the random draws
given, and the gradients of named parameters.

Run with a Python that has ``lerobot`` 0.6.1 (``.venv-lerobot``; not a vlastack dependency):
``python tests/compat/lerobot_training_loss.py FOLDER IN.safetensors OUT.safetensors
[FOLDER IN OUT ...]`` (one LeRobot start for several checks). IN holds the normalized batch (LeRobot keys) plus the draws: ``draw.randn_like`` (ACT's VAE
latent noise), ``draw.randn`` (Diffusion's eps) and ``draw.randint`` (the ints Diffusion's
random crops and timestep draw take, in call order, concatenated). The policy runs in train mode
with every dropout set to 0 (its masks cannot be shared across processes); ``torch.randn_like``,
``torch.randn`` and ``torch.randint`` are replaced by functions handing out the given draws.
IN's metadata ``params`` (a JSON list) names the parameters whose gradients OUT gets as
``grad.<param>``, beside ``loss``.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(__file__))


def run(folder: str, src: str, dst: str) -> None:
    import json

    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file
    from torch import nn

    data = load_file(src)
    with safe_open(src, "pt") as f:
        params = json.loads((f.metadata() or {}).get("params", "[]"))
    with open(os.path.join(folder, "config.json")) as f:
        kind = json.load(f)["type"]
    if kind == "act":
        from lerobot.policies.act.modeling_act import ACTPolicy as Cls
    else:
        from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy as Cls
    policy = Cls.from_pretrained(folder)
    policy.train()
    for m in policy.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
        if isinstance(m, nn.MultiheadAttention):
            m.dropout = 0.0
    batch = {k: v for k, v in data.items() if not k.startswith("draw.")}
    batch["action_is_pad"] = batch["action_is_pad"].bool()
    ints = data.get("draw.randint", torch.zeros(0, dtype=torch.long)).tolist()

    def randn_like(t, *a, **k):
        return data["draw.randn_like"].to(t)

    def randn(*shape, **k):
        return data["draw.randn"].clone()

    def randint(low, high, size, **k):
        n = 1
        for s in size:
            n *= s
        vals = [ints.pop(0) for _ in range(n)]
        assert all(low <= v < high for v in vals), (low, high, vals)
        return torch.tensor(vals, dtype=torch.long).reshape(size)

    saved = torch.randn_like, torch.randn, torch.randint
    torch.randn_like, torch.randn, torch.randint = randn_like, randn, randint
    try:
        loss, _ = policy(batch)
    finally:
        torch.randn_like, torch.randn, torch.randint = saved
    loss.backward()
    assert not ints, f"{len(ints)} given randint draws unused"
    named = dict(policy.named_parameters())
    out = {"loss": loss.detach().reshape(1)}
    for p in params:
        out[f"grad.{p}"] = named[p].grad.detach().clone()
    save_file(out, dst)


def main() -> int:
    import torch
    from check_lerobot_act_export import register_resnet18_width8

    torch.set_num_threads(1)
    register_resnet18_width8()
    args = sys.argv[1:]
    assert args and len(args) % 3 == 0, "usage: FOLDER IN OUT [FOLDER IN OUT ...]"
    for i in range(0, len(args), 3):
        run(*args[i : i + 3])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
