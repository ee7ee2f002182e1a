"""Run several LeRobot 0.6.1 checks in one interpreter (LeRobot's import is most of each
check's time): ``python tests/compat/lerobot_finetune_checks.py JOBS.json OUT.json``.

JOBS.json is a list of ``{"check": "loss", "folder", "src", "dst"}`` (``lerobot_training_loss``),
``{"check": "act_export" | "diffusion_export", "golden_dir", "folder"}``
(``check_lerobot_act_export`` / ``check_lerobot_diffusion_export``). OUT.json gets one entry per
job, in order: ``null`` for a loss check (its tensors are in ``dst``), the chunks otherwise.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(__file__))


def main() -> int:
    import check_lerobot_act_export as act_export
    import check_lerobot_diffusion_export as diffusion_export
    import lerobot_training_loss as loss
    import torch

    torch.set_num_threads(1)
    act_export.register_resnet18_width8()
    jobs_file, out_file = sys.argv[1:]
    with open(jobs_file) as f:
        jobs = json.load(f)
    results = []
    for job in jobs:
        if job["check"] == "loss":
            loss.run(job["folder"], job["src"], job["dst"])
            results.append(None)
        elif job["check"] == "act_export":
            results.append(act_export.run(job["golden_dir"], job["folder"]))
        else:
            results.append(diffusion_export.run(job["golden_dir"], job["folder"]))
    with open(out_file, "w") as f:
        json.dump(results, f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
