"""Precomputed outputs of a frozen vision encoder, so training does not re-run it every step.

When the vision encoder is frozen (no FiLM, no image augmentation), its output for a frame is a
pure function of that frame. Encoding every frame once, instead of once per sample per epoch,
turns pretrained-encoder recipes (MobileNetV2, SigLIP, DINOv2) from hours into minutes on a CPU,
and skips video decoding during training. The policy still runs the encoder at inference: same
weights, same outputs (tested).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from vlastack.data.dataset import WindowedDataset
from vlastack.data.reader import DatasetReader
from vlastack.models.foresight import FUTURE_FEATURES_KEY
from vlastack.models.vla import IMAGE_FEATURES_KEY
from vlastack.runners import vision_for_inference


def can_cache(model: Any) -> bool:
    """True when the model's image tokens depend on the frames alone and the encoder is frozen."""
    cfg = getattr(model, "config", None)
    vision = getattr(model, "vision", None)
    if cfg is None or vision is None or getattr(cfg, "film", False):
        return False
    return not any(p.requires_grad for p in vision.parameters())


@torch.no_grad()
def compute_frame_features(
    model: Any,
    reader: DatasetReader,
    episodes: list[int],
    *,
    batch_size: int = 64,
    dtype: torch.dtype = torch.float16,
    progress: bool = True,
) -> torch.Tensor:
    """Encode every frame of ``episodes`` -> (N_frames, cams, n, D) on the CPU.

    Rows are indexed by the dataset's global frame index; frames of other episodes stay zero.
    Videos are decoded one episode at a time (one sequential pass per file).
    """
    cams = list(model.config.cameras)
    H, W = (int(s) for s in model.config.image_size)
    vision = model.vision
    was_training = vision.training
    vision.eval()
    dev = next(model.parameters()).device
    encoder = vision_for_inference(vision, dev)  # native on a CPU: Conv→BatchNorm folded
    out: torch.Tensor | None = None
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=sum(reader.episode(e).length for e in episodes),
            desc="encode frames",
            unit="frame",
        )
    for e in episodes:
        ep = reader.episode(e)
        per_cam = []
        for ci, cam in enumerate(cams):
            frames = reader.decode_frames(f"observation.images.{cam}", e, np.arange(ep.length))
            toks = []
            for s in range(0, ep.length, batch_size):
                x = torch.from_numpy(frames[s : s + batch_size]).to(dev).permute(0, 3, 1, 2).float()
                x = x.div_(255.0)
                if tuple(x.shape[-2:]) != (H, W):
                    x = F.interpolate(
                        x, size=(H, W), mode="bilinear", align_corners=False, antialias=True
                    )
                toks.append(encoder.encode_frames(ci, x).to("cpu", dtype))
            per_cam.append(torch.cat(toks))  # (L, n, D)
        feats = torch.stack(per_cam, dim=1)  # (L, cams, n, D)
        if out is None:
            out = torch.zeros(reader.num_frames, *feats.shape[1:], dtype=dtype)
        out[ep.dataset_from_index : ep.dataset_to_index] = feats
        if bar is not None:
            bar.update(ep.length)
    if bar is not None:
        bar.close()
    vision.train(was_training)
    if out is None:
        raise ValueError("no episodes to encode")
    return out


class FeatureWindowDataset(Dataset):
    """A WindowedDataset without images plus ``observation.image_features`` (cams, T, n, D)."""

    def __init__(self, base: WindowedDataset, features: torch.Tensor) -> None:
        if base.image_keys:
            raise ValueError("build the base WindowedDataset with image_keys=[]")
        self.base = base
        self.features = features

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict[str, Any]:
        s = self.base[i]
        g = int(s["index"])
        lo, hi = int(self.base._from[g]), int(self.base._to[g])
        window = np.clip(g + self.base._obs_offsets, lo, hi - 1)
        s[IMAGE_FEATURES_KEY] = self.features[window].float().transpose(0, 1)  # (cams, T, n, D)
        if self.base.future_offset:  # the frame a subgoal / world model predicts (foresight.py)
            s[FUTURE_FEATURES_KEY] = self.features[min(g + self.base.future_offset, hi - 1)].float()
        return s


def cached_datasets(
    model: Any, datasets: list[WindowedDataset], *, progress: bool = True
) -> list[FeatureWindowDataset]:
    """Encode the frames of every episode used by ``datasets`` (one reader) once, and wrap each
    dataset into a FeatureWindowDataset sharing that one feature tensor."""
    reader = datasets[0].reader
    episodes = sorted({e for d in datasets for e in d.episodes})
    features = compute_frame_features(model, reader, episodes, progress=progress)
    return [
        FeatureWindowDataset(
            WindowedDataset(
                reader,
                obs_horizon=d.obs_horizon,
                action_horizon=d.action_horizon,
                episodes=d.episodes,
                image_keys=[],
                future_offset=d.future_offset,
            ),
            features,
        )
        for d in datasets
    ]
