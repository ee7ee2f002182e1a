"""LeRobot 0.6.1's side of tests/test_pretrained_lerobot_sessions.py: a Diffusion Policy run
step by step with ``select_action``, as ``lerobot_eval`` runs it.

``python tests/compat/lerobot_select_action_steps.py JOBS.json OUT.json`` (``.venv-lerobot``;
not a vlastack dependency). JOBS.json: ``{"folder", "observations", "seed"}``; ``observations``
is a safetensors file of ``step<k>.<feature>`` raw observations (uint8 HWC frames, float32
state). ``DiffusionPolicy.from_pretrained(folder)`` + ``make_pre_post_processors``, then
``policy.reset()``, ``torch.manual_seed(seed)`` (the start noise and diffusers' DDPM step draws
come from torch's global generator), and per step: ``prepare_observation_for_inference`` ->
preprocessor -> ``select_action`` -> postprocessor. OUT.json: the (steps, A) actions, dataset
units. At 1 thread, as the goldens were made.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(__file__))

TASK = "pick up the red block"


def run(folder: str, observations: str, seed: int) -> list:
    import torch
    from check_lerobot_act_export import register_resnet18_width8
    from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy
    from lerobot.policies.factory import make_pre_post_processors
    from lerobot.policies.utils import prepare_observation_for_inference
    from safetensors.torch import load_file

    register_resnet18_width8()  # the fixture's reduced backbone
    torch.set_num_threads(1)
    steps = load_file(observations)
    n = 1 + max(int(k.split(".", 1)[0][4:]) for k in steps)
    policy = DiffusionPolicy.from_pretrained(folder)
    policy.eval()
    pre, post = make_pre_post_processors(policy.config, pretrained_path=folder)
    policy.reset()
    torch.manual_seed(seed)
    out = []
    with torch.inference_mode():
        for k in range(n):
            prefix = f"step{k}."
            raw = {a[len(prefix) :]: v.numpy() for a, v in steps.items() if a.startswith(prefix)}
            batch = pre(prepare_observation_for_inference(raw, device="cpu", task=TASK))
            action = post(policy.select_action(batch))
            out.append(action[0].tolist())
    return out


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        job = json.load(f)
    result = run(job["folder"], job["observations"], int(job["seed"]))
    with open(sys.argv[2], "w") as f:
        json.dump(result, f)
