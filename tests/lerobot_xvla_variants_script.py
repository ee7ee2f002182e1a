"""Run under LeRobot 0.6.1 (``.venv-lerobot``) by tests/test_pretrained_lerobot_xvla_variants.py:
for each variant folder (the X-VLA fixture with config.json fields changed), LeRobot's own
``XVLAPolicy.from_pretrained`` and ``model.generate_actions`` on obs0's recorded inputs, its
``torch.randn`` draw returning the recorded noise (as the fixture's generator did). Writes
``{variant: output}`` to a safetensors file.

argv: golden.safetensors, jobs.json ({variant: folder}), out.safetensors
"""

import json
import sys
from pathlib import Path

import torch
from lerobot.policies.xvla.modeling_xvla import XVLAPolicy
from safetensors.torch import load_file, save_file

torch.set_num_threads(1)
golden = load_file(sys.argv[1])
jobs = json.loads(Path(sys.argv[2]).read_text())
p = "obs0.generate_actions."
out = {}
for name, folder in jobs.items():
    policy = XVLAPolicy.from_pretrained(folder)
    noise = golden["obs0.noise"]
    real_randn = torch.randn

    def recorded(*shape, _noise=noise, **kw):
        return _noise.to(kw.get("dtype") or torch.float32)

    torch.randn = recorded
    try:
        with torch.no_grad():
            got = policy.model.generate_actions(
                golden[p + "input_ids"],
                golden[p + "image_input"],
                golden[p + "image_mask"],
                golden[p + "domain_id"],
                golden[p + "proprio"],
                steps=10,
            )
    finally:
        torch.randn = real_randn
    out[name] = got.float().contiguous()
save_file(out, sys.argv[3])
