"""Load a dataset with LeRobot's own ``LeRobotDataset`` and index every frame.

Run with a Python that has ``lerobot`` installed (a separate venv, ``.venv-lerobot``, built by
``make test`` from ``../shared/tools/lerobot-0.6.1/make_venv.sh``; it is not a vlastack
dependency): ``python tests/compat/check_lerobot_load.py PATH [--backends default,pyav]``. Prints
one JSON line with what LeRobot saw through each video backend (``default`` is whatever LeRobot
picks itself: torchcodec in 0.6.1): episode/frame counts, per-frame shapes, tasks, sampled values,
so that the calling test can compare them with vlastack's own reader. Exit code 0 = loaded and
indexed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def load(path: str, repo_id: str, backend: str | None, values: list[str] = ()) -> dict:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    kw = {} if backend is None else {"video_backend": backend}
    fps_probe = LeRobotDataset(repo_id, root=path, **kw)
    dt = 1.0 / fps_probe.fps
    ds = LeRobotDataset(repo_id, root=path, delta_timestamps={"action": [0.0, dt, 2 * dt]}, **kw)
    out: dict = {
        "num_episodes": ds.num_episodes,
        "num_frames": ds.num_frames,
        "len": len(ds),
        "fps": ds.fps,
        "video_backend": str(getattr(ds, "_video_backend", backend)),
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
        for k in values:  # --values: these features' values, as LeRobot returns them
            rec[f"value:{k}"] = item[k].tolist() if hasattr(item[k], "tolist") else item[k]
        rec["action_is_pad"] = item["action_is_pad"].tolist()
        out["frames"].append(rec)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("path")
    ap.add_argument("--repo-id", default="local/vlastack_compat")
    ap.add_argument("--backends", default="default,pyav")
    ap.add_argument("--values", default="", help="comma list of features whose values to print")
    args = ap.parse_args()
    import lerobot

    result = {"lerobot_version": getattr(lerobot, "__version__", "?"), "backends": {}}
    for name in args.backends.split(","):
        backend = None if name == "default" else name
        values = [v for v in args.values.split(",") if v]
        result["backends"][name] = load(args.path, args.repo_id, backend, values)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
