"""Load Diffusion Policy ``pretrained_model`` folders with LeRobot's own classes and sample one
chunk per golden observation with the recorded noise.

Run with a Python that has ``lerobot`` 0.6.1 (``.venv-lerobot``; not a vlastack dependency):
``python tests/compat/check_lerobot_diffusion_export.py GOLDEN_DIR FOLDER [FOLDER ...]``,
``GOLDEN_DIR`` being ``fixtures/lerobot_policies/diffusion``. For each folder:
``DiffusionPolicy.from_pretrained`` + ``make_pre_post_processors``, then per golden observation
at 1 thread: ``prepare_observation_for_inference`` -> preprocessor -> the observation repeated
over ``n_obs_steps`` (LeRobot's offline ``predict_action_chunk`` input, as after a reset) ->
``predict_action_chunk(noise=obs<i>.noise)`` with diffusers' DDPM step draws
(``scheduling_ddpm.randn_tensor``) replaced by ``obs<i>.ddpm_step_noise`` in order ->
postprocessor. Prints one JSON line ``{folder: [chunk of obs0, obs1, obs2]}`` (dataset units).
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(__file__))

TASKS = ["pick up the red block", "put the green cup in the sink", "open the top drawer"]


def run(golden_dir: str, folder: str) -> list:
    import diffusers.schedulers.scheduling_ddpm as ddpm
    import torch
    from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy
    from lerobot.policies.factory import make_pre_post_processors
    from lerobot.policies.utils import prepare_observation_for_inference
    from safetensors.torch import load_file

    golden = load_file(os.path.join(golden_dir, "golden.safetensors"))
    policy = DiffusionPolicy.from_pretrained(folder)
    policy.eval()
    pre, post = make_pre_post_processors(policy.config, pretrained_path=folder)
    n = policy.config.n_obs_steps
    chunks = []
    real = ddpm.randn_tensor
    for i, task in enumerate(TASKS):
        prefix = f"obs{i}.raw."
        raw = {k[len(prefix) :]: v.numpy() for k, v in golden.items() if k.startswith(prefix)}
        draws = list(golden[f"obs{i}.ddpm_step_noise"].unbind(0))

        def randn_tensor(shape, generator=None, device=None, dtype=None, layout=None, d=draws):
            return d.pop(0).reshape(shape).to(dtype=dtype or torch.float32)

        ddpm.randn_tensor = randn_tensor
        try:
            with torch.inference_mode():
                batch = pre(prepare_observation_for_inference(raw, device="cpu", task=task))
                policy.reset()
                stacked = {
                    k: torch.stack([v] * n, dim=1)
                    for k, v in batch.items()
                    if isinstance(v, torch.Tensor) and k.startswith("observation.")
                }
                chunk = policy.predict_action_chunk(stacked, noise=golden[f"obs{i}.noise"])
                chunks.append(post(chunk).tolist())
        finally:
            ddpm.randn_tensor = real
        assert not draws, f"{len(draws)} step draws unused"
    return chunks


def main() -> int:
    import torch
    from check_lerobot_act_export import register_resnet18_width8

    torch.set_num_threads(1)
    register_resnet18_width8()
    golden_dir, *folders = sys.argv[1:]
    print(json.dumps({f: run(golden_dir, f) for f in folders}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
