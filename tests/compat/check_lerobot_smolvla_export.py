"""Load SmolVLA ``pretrained_model`` folders with LeRobot's own classes and run the golden
observations through them.

Run with a Python that has ``lerobot`` 0.6.1 installed (``.venv-lerobot``; not a vlastack
dependency): ``python tests/compat/check_lerobot_smolvla_export.py GOLDEN_DIR FOLDER [FOLDER ...]``,
``GOLDEN_DIR`` being ``fixtures/lerobot_policies/smolvla`` (golden.safetensors). Each FOLDER must
have the VLM folder its config.json names (``../smolvlm2_tiny_config``, with config.json and a
tokenizer) beside it; LeRobot resolves that name from the working directory, so each folder is
loaded with the working directory set to it. For each folder: ``SmolVLAPolicy.from_pretrained`` +
``make_pre_post_processors(config, pretrained_path=folder)``, then per golden observation, at 1
thread as the goldens were made, the fixture's golden run (``prepare_observation_for_inference``
-> preprocessor -> ``reset`` -> ``predict_action_chunk(batch, noise=golden noise)`` ->
postprocessor). Prints one JSON line ``{folder: [chunk of obs0, obs1, obs2]}`` (dataset units).

As the fixture generator did (README "smolvla" patches), ``AutoProcessor`` inside
``smolvlm_with_expert`` is replaced by a stub: SmolVLA reads only ``tokenizer.fake_image_token_id``
/ ``global_image_token_id`` from it, and uses them only with ``add_image_special_tokens``.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TASKS = ["pick up the red block", "put the green cup in the sink", "open the top drawer"]


def stub_auto_processor() -> None:
    from types import SimpleNamespace

    import lerobot.policies.smolvla.smolvlm_with_expert as swe

    tok = SimpleNamespace(fake_image_token_id=1001, global_image_token_id=1002)

    class _Processor:
        @staticmethod
        def from_pretrained(*_args, **_kwargs):
            return SimpleNamespace(tokenizer=tok)

    swe.AutoProcessor = _Processor


def run(golden_dir: str, folder: str) -> list:
    import torch
    from lerobot.policies.factory import make_pre_post_processors
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy
    from lerobot.policies.utils import prepare_observation_for_inference
    from safetensors.torch import load_file

    golden = load_file(os.path.join(golden_dir, "golden.safetensors"))
    here = os.getcwd()
    os.chdir(folder)  # vlm_model_name / tokenizer_name are relative to the working directory
    try:
        policy = SmolVLAPolicy.from_pretrained(folder)
        policy.eval()
        pre, post = make_pre_post_processors(policy.config, pretrained_path=folder)
    finally:
        os.chdir(here)
    chunks = []
    for i, task in enumerate(TASKS):
        prefix = f"obs{i}.raw."
        raw = {k[len(prefix) :]: v.numpy() for k, v in golden.items() if k.startswith(prefix)}
        with torch.inference_mode():
            batch = prepare_observation_for_inference(raw, device="cpu", task=task)
            batch = pre(batch)
            policy.reset()
            chunk = policy.predict_action_chunk(batch, noise=golden[f"obs{i}.noise"])
            chunks.append(post(chunk).tolist())
    return chunks


def main() -> int:
    import torch

    torch.set_num_threads(1)  # the goldens were made at 1 thread
    stub_auto_processor()
    golden_dir, *folders = sys.argv[1:]
    print(json.dumps({f: run(golden_dir, os.path.abspath(f)) for f in folders}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
