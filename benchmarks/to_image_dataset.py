"""Rewrite a vlastack/LeRobot v3 video dataset with its cameras as PNG images in the parquet (LeRobot's dtype
'image'), so LeRobot can read it where torchvision has no VideoReader and torchcodec is absent (how the
GPU rows of bench_train.py were taken; see BENCHMARKS.md).

    python benchmarks/to_image_dataset.py SRC_DATASET DST_DATASET
"""

import sys

import numpy as np

from vlastack.data.format import DEFAULT_FEATURES, DatasetReader, DatasetWriter, Feature

src, dst = sys.argv[1:3]
r = DatasetReader(src)
feats = {
    k: Feature(f.dtype, f.shape, f.names, None if f.is_camera else f.info)
    for k, f in r.features.items()
    if k not in DEFAULT_FEATURES and k != "task"
}
w = DatasetWriter.create(
    dst,
    fps=r.fps,
    features=feats,
    robot_type=r.info.get("robot_type", "unknown"),
    embodiment=r.embodiment,
    use_videos=False,
)
cols = {k: r.column(k) for k in feats if not feats[k].is_camera}
for ep in r.episodes:
    frames = {k: r.decode_frames(k, ep.index, np.arange(ep.length)) for k in r.camera_keys}
    for i in range(ep.length):
        g = ep.dataset_from_index + i
        fr = {k: v[g] for k, v in cols.items()}
        fr.update({k: v[i] for k, v in frames.items()})
        w.add_frame(fr, r.task_of(g))
    w.save_episode()
w.finalize()
print("wrote", dst, w.num_episodes, "episodes")
