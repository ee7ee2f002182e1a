"""Load ACT ``pretrained_model`` folders with LeRobot's own classes and run the golden
observations through them.

Run with a Python that has ``lerobot`` 0.6.1 installed (``.venv-lerobot``; not a vlastack
dependency): ``python tests/compat/check_lerobot_act_export.py GOLDEN_DIR FOLDER [FOLDER ...]``,
``GOLDEN_DIR`` being ``fixtures/lerobot_policies/act`` (golden.safetensors). For each folder:
``ACTPolicy.from_pretrained`` + ``make_pre_post_processors(config, pretrained_path=folder)``, then
per golden observation, at 1 thread as the goldens were made, the fixture's golden run
(``prepare_observation_for_inference`` -> preprocessor -> ``reset`` -> ``predict_action_chunk``
-> postprocessor). Prints one JSON line:
``{folder: [chunk of obs0, obs1, obs2]}`` (nested lists, dataset units). Exit 0 = all loaded.

The fixture's reduced backbone ``resnet18_width8`` is registered first, as the fixture generator
did (README "act"): torchvision ``ResNet(BasicBlock, [2, 2, 2, 2])`` with stage widths
8/16/32/64, same module classes and state-dict keys as resnet18.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TASKS = ["pick up the red block", "put the green cup in the sink", "open the top drawer"]


def register_resnet18_width8() -> None:
    import torchvision
    from torch import nn
    from torchvision.models.resnet import BasicBlock, ResNet

    def resnet18_width8(*, weights=None, progress=True, **kwargs):
        assert weights is None, "resnet18_width8 has no pretrained weights"
        rsd = kwargs.pop("replace_stride_with_dilation", None) or [False, False, False]
        m = ResNet(BasicBlock, [2, 2, 2, 2], **kwargs)
        norm = m._norm_layer
        m.inplanes, m.dilation = 8, 1
        m.conv1 = nn.Conv2d(3, 8, kernel_size=7, stride=2, padding=3, bias=False)
        m.bn1 = norm(8)
        m.layer1 = m._make_layer(BasicBlock, 8, 2)
        m.layer2 = m._make_layer(BasicBlock, 16, 2, stride=2, dilate=rsd[0])
        m.layer3 = m._make_layer(BasicBlock, 32, 2, stride=2, dilate=rsd[1])
        m.layer4 = m._make_layer(BasicBlock, 64, 2, stride=2, dilate=rsd[2])
        m.fc = nn.Linear(64, kwargs.get("num_classes", 1000))
        return m

    torchvision.models.resnet18_width8 = resnet18_width8


def run(golden_dir: str, folder: str) -> list:
    import torch
    from lerobot.policies.act.modeling_act import ACTPolicy
    from lerobot.policies.factory import make_pre_post_processors
    from lerobot.policies.utils import prepare_observation_for_inference
    from safetensors.torch import load_file

    golden = load_file(os.path.join(golden_dir, "golden.safetensors"))
    policy = ACTPolicy.from_pretrained(folder)
    policy.eval()
    pre, post = make_pre_post_processors(policy.config, pretrained_path=folder)
    chunks = []
    for i, task in enumerate(TASKS):
        prefix = f"obs{i}.raw."
        raw = {k[len(prefix) :]: v.numpy() for k, v in golden.items() if k.startswith(prefix)}
        with torch.inference_mode():
            batch = prepare_observation_for_inference(raw, device="cpu", task=task)
            batch = pre(batch)
            policy.reset()
            chunk = post(policy.predict_action_chunk(batch))
        chunks.append(chunk.tolist())
    return chunks


def main() -> int:
    import torch

    torch.set_num_threads(1)  # the goldens were made at 1 thread
    register_resnet18_width8()
    golden_dir, *folders = sys.argv[1:]
    print(json.dumps({f: run(golden_dir, f) for f in folders}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
