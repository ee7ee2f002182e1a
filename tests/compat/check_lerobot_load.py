"""Load a dataset with LeRobot's own ``LeRobotDataset`` and index every frame.

Run with a Python that has ``lerobot`` installed (a separate venv; it is not a vlastack
dependency): ``python tests/compat/check_lerobot_load.py PATH [--expect-json FILE]``. Prints one
JSON line with what LeRobot saw (episode/frame counts, per-frame shapes, tasks, sampled values) so
that the calling test can compare it with vlastack's own reader. Exit code 0 = loaded and indexed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("path")
    ap.add_argument("--repo-id", default="local/vlastack_compat")
    args = ap.parse_args()

    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    fps_probe = LeRobotDataset(args.repo_id, root=args.path, video_backend="pyav")
    dt = 1.0 / fps_probe.fps
    ds = LeRobotDataset(
        args.repo_id,
        root=args.path,
        video_backend="pyav",
        delta_timestamps={"action": [0.0, dt, 2 * dt]},
    )
    out: dict = {
        "num_episodes": ds.num_episodes,
        "num_frames": ds.num_frames,
        "len": len(ds),
        "fps": ds.fps,
        "frames": [],
    }
    for i in range(len(ds)):
        item = ds[i]
        rec = {"index": int(item["index"]), "task": item["task"]}
        for k, v in item.items():
            if hasattr(v, "shape"):
                rec[f"shape:{k}"] = list(v.shape)
        for k in ds.meta.camera_keys:
            rec[f"mean:{k}"] = float(item[k].float().mean())
        rec["action"] = item["action"].tolist()
        rec["action_is_pad"] = item["action_is_pad"].tolist()
        out["frames"].append(rec)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
