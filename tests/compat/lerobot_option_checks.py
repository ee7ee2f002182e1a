"""LeRobot 0.6.1's side of tests/test_pretrained_lerobot_options.py, in one interpreter:
``python tests/compat/lerobot_option_checks.py JOBS.json OUT.json`` (``.venv-lerobot``; not a
vlastack dependency).

JOBS.json is a list of
* ``{"check": "diffusion_variant", "golden_dir", "folder"}``: ``folder`` holds a copy of the
  diffusion fixture's files with config.json changed (one option). LeRobot reads that config
  (``PreTrainedConfig.from_pretrained``, so ``__post_init__`` derives what it derives), builds
  ``DiffusionPolicy(config)`` after ``torch.manual_seed(0)``, loads every fixture tensor whose
  shape still fits (all of them unless the image size changed), and ``save_pretrained(folder)``
  overwrites config.json and model.safetensors. Then golden observation 0 goes through
  ``prepare_observation_for_inference`` -> preprocessor -> repeated over ``n_obs_steps`` ->
  ``predict_action_chunk(noise=obs0.noise)`` with diffusers' DDPM step draws
  (``scheduling_ddpm.randn_tensor``) taken from ``obs0.ddpm_step_noise`` in order (DDIM must
  draw none) -> postprocessor. Result: ``{"chunk", "draws"}`` (dataset units; draws used).
* ``{"check": "act_ensemble", "golden_dir", "folder", "sequence"}``: ``ACTPolicy.from_pretrained``
  of a folder whose config sets ``temporal_ensemble_coeff``; after ``reset``, one
  ``select_action`` per golden observation index in ``sequence`` (one control step each), each
  action postprocessed. Result: the list of actions (dataset units).
All at 1 thread, as the goldens were made.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(__file__))

TASK = "pick up the red block"


def _raw(golden, i):
    prefix = f"obs{i}.raw."
    return {k[len(prefix) :]: v.numpy() for k, v in golden.items() if k.startswith(prefix)}


def diffusion_variant(golden_dir: str, folder: str) -> dict:
    import diffusers.schedulers.scheduling_ddim as ddim
    import diffusers.schedulers.scheduling_ddpm as ddpm
    import torch
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy
    from lerobot.policies.factory import make_pre_post_processors
    from lerobot.policies.utils import prepare_observation_for_inference
    from safetensors.torch import load_file

    golden = load_file(os.path.join(golden_dir, "golden.safetensors"))
    config = PreTrainedConfig.from_pretrained(folder)
    torch.manual_seed(0)
    policy = DiffusionPolicy(config)
    fixture = load_file(os.path.join(golden_dir, "pretrained_model", "model.safetensors"))
    own = policy.state_dict()
    fits = {k: v for k, v in fixture.items() if k in own and own[k].shape == v.shape}
    policy.load_state_dict(fits, strict=False)
    policy.save_pretrained(folder)
    policy.eval()
    pre, post = make_pre_post_processors(policy.config, pretrained_path=folder)
    draws = list(golden["obs0.ddpm_step_noise"].unbind(0))
    total = len(draws)

    def randn_tensor(shape, generator=None, device=None, dtype=None, layout=None):
        return draws.pop(0).reshape(shape).to(dtype=dtype or torch.float32)

    def no_draw(*args, **kwargs):
        raise AssertionError("DDIM with eta 0 must not draw")

    real = ddpm.randn_tensor, ddim.randn_tensor
    ddpm.randn_tensor, ddim.randn_tensor = randn_tensor, no_draw
    try:
        with torch.inference_mode():
            batch = pre(prepare_observation_for_inference(_raw(golden, 0), device="cpu", task=TASK))
            policy.reset()
            n = policy.config.n_obs_steps
            stacked = {
                k: torch.stack([v] * n, dim=1)
                for k, v in batch.items()
                if isinstance(v, torch.Tensor) and k.startswith("observation.")
            }
            chunk = policy.predict_action_chunk(stacked, noise=golden["obs0.noise"])
            chunk = post(chunk)
    finally:
        ddpm.randn_tensor, ddim.randn_tensor = real
    return {"chunk": chunk.tolist(), "draws": total - len(draws)}


def act_ensemble(golden_dir: str, folder: str, sequence: list[int]) -> list:
    import torch
    from lerobot.policies.act.modeling_act import ACTPolicy
    from lerobot.policies.factory import make_pre_post_processors
    from lerobot.policies.utils import prepare_observation_for_inference
    from safetensors.torch import load_file

    golden = load_file(os.path.join(golden_dir, "golden.safetensors"))
    policy = ACTPolicy.from_pretrained(folder)
    policy.eval()
    assert policy.config.temporal_ensemble_coeff is not None
    pre, post = make_pre_post_processors(policy.config, pretrained_path=folder)
    policy.reset()
    actions = []
    with torch.inference_mode():
        for i in sequence:
            batch = pre(prepare_observation_for_inference(_raw(golden, i), device="cpu", task=TASK))
            actions.append(post(policy.select_action(batch)).tolist())
    return actions


def main() -> int:
    import torch
    from check_lerobot_act_export import register_resnet18_width8

    torch.set_num_threads(1)
    register_resnet18_width8()
    jobs_file, out_file = sys.argv[1:]
    with open(jobs_file) as f:
        jobs = json.load(f)
    results = []
    for job in jobs:
        if job["check"] == "diffusion_variant":
            results.append(diffusion_variant(job["golden_dir"], job["folder"]))
        else:
            results.append(act_ensemble(job["golden_dir"], job["folder"], job["sequence"]))
    with open(out_file, "w") as f:
        json.dump(results, f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
