"""LeRobot 0.6.1 checks for SmolVLA fine-tuning, in one interpreter:
``python tests/compat/lerobot_vla_finetune_checks.py JOBS.json OUT.json``.

JOBS.json is a list of ``{"check": "smolvla_loss", "folder", "src", "dst"}`` (LeRobot's
``SmolVLAPolicy.forward(batch, noise=, time=)`` in train mode on the batch in ``src``: the
preprocessed LeRobot keys plus ``draw.noise`` / ``draw.time``; ``dst`` gets ``loss`` and
``grad.<param>`` for the parameters ``src``'s metadata ``params`` names, zeros where LeRobot
leaves a parameter without gradient) and ``{"check": "smolvla_export", "golden_dir", "folder"}``
(``check_lerobot_smolvla_export.run``: the chunks of the golden observations). OUT.json gets
one entry per job: ``null`` for a loss check, the chunks otherwise. The fixtures' patches apply
(``check_lerobot_smolvla_export.stub_auto_processor``; the VLM config and tokenizer are found
relative to each folder).
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(__file__))


def loss(folder: str, src: str, dst: str) -> None:
    import torch
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    data = load_file(src)
    with safe_open(src, "pt") as f:
        params = json.loads((f.metadata() or {}).get("params", "[]"))
    here = os.getcwd()
    os.chdir(folder)
    try:
        policy = SmolVLAPolicy.from_pretrained(folder)
    finally:
        os.chdir(here)
    policy.train()
    batch = {k: v for k, v in data.items() if not k.startswith("draw.")}
    batch["action_is_pad"] = batch["action_is_pad"].bool()
    batch["observation.language.attention_mask"] = batch[
        "observation.language.attention_mask"
    ].bool()
    out_loss, _ = policy.forward(batch, noise=data["draw.noise"], time=data["draw.time"])
    out_loss.backward()
    named = dict(policy.named_parameters())
    out = {"loss": out_loss.detach().reshape(1)}
    for p in params:
        g = named[p].grad
        out[f"grad.{p}"] = torch.zeros_like(named[p]) if g is None else g.detach().clone()
    save_file(out, dst)


def main() -> int:
    import check_lerobot_smolvla_export as smolvla_export
    import torch

    torch.set_num_threads(1)
    smolvla_export.stub_auto_processor()
    jobs_file, out_file = sys.argv[1:]
    with open(jobs_file) as f:
        jobs = json.load(f)
    results = []
    for job in jobs:
        if job["check"] == "smolvla_loss":
            loss(job["folder"], job["src"], job["dst"])
            results.append(None)
        else:
            results.append(smolvla_export.run(job["golden_dir"], job["folder"]))
    with open(out_file, "w") as f:
        json.dump(results, f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
