"""Vision-encoder interface and the multi-camera, multi-frame wrapper around one encoder.

Every encoder maps normalized frames (M, 3, H, W) to tokens (M, n, D). ``MultiCameraEncoder``
checks the batch's image tensors (shape, channel order, size, dtype) before anything runs, applies
the encoder's own normalization (ImageNet by default), shares or duplicates weights per camera,
and returns (B, cams, T, n, D).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from vlastack.errors import ConfigError, DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VisionEncoder(nn.Module):
    """Base class: subclasses set ``out_dim`` and implement ``encode``."""

    out_dim: int
    image_mean: tuple[float, float, float] = IMAGENET_MEAN
    image_std: tuple[float, float, float] = IMAGENET_STD

    def encode(self, images: torch.Tensor, film_cond: torch.Tensor | None = None) -> torch.Tensor:
        """(M, 3, H, W) normalized images (+ optional (M, F) FiLM condition) -> (M, n, D)."""
        raise NotImplementedError

    def forward(self, images: torch.Tensor, film_cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.encode(images, film_cond)


def camera_key(camera: str) -> str:
    return camera if camera.startswith("observation.") else f"observation.images.{camera}"


class MultiCameraEncoder(nn.Module):
    """Encodes ``observation.images.<cam>`` tensors (B, T, C, H, W) in [0, 1] for every camera.

    ``shared=True`` runs one encoder on all cameras (one batched call); otherwise each camera has
    its own copy. ``pooled=True`` averages each frame's tokens into one token.
    """

    mean: torch.Tensor
    std: torch.Tensor
    out_dim: int

    def __init__(
        self,
        build_encoder: Callable[[], VisionEncoder],
        cameras: list[str],
        obs_horizon: int,
        image_size: tuple[int, int],
        shared: bool = True,
        pooled: bool = False,
    ) -> None:
        super().__init__()
        if not cameras:
            raise ConfigError("cameras: a vision encoder needs at least one camera name")
        self.cameras = list(cameras)
        self.obs_horizon = int(obs_horizon)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.shared = shared
        self.pooled = pooled
        n_copies = 1 if shared else len(self.cameras)
        self.encoders = nn.ModuleList([build_encoder() for _ in range(n_copies)])
        enc: VisionEncoder = self.encoders[0]  # type: ignore[assignment]
        self.out_dim = enc.out_dim
        self.register_buffer(
            "mean", torch.tensor(enc.image_mean).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer("std", torch.tensor(enc.image_std).view(1, 3, 1, 1), persistent=False)

    def check(self, batch: Mapping[str, object]) -> None:
        """Raise a DataError naming the key, the shape received and the shape expected."""
        H, W = self.image_size
        expected = f"(B, T={self.obs_horizon}, C=3, H={H}, W={W})"
        for cam in self.cameras:
            key = camera_key(cam)
            if key not in batch:
                have = sorted(k for k in batch if str(k).startswith("observation.images"))
                raise DataError(
                    f"batch has no '{key}' (cameras configured: {self.cameras}); image keys "
                    f"present: {have}. Fix the camera names in the model config (field 'cameras')."
                )
            x = batch[key]
            if not isinstance(x, torch.Tensor):
                raise DataError(
                    f"'{key}' must be a torch tensor {expected}, got {type(x).__name__}"
                )
            shape = tuple(x.shape)
            if x.dtype == torch.uint8:
                raise DataError(
                    f"'{key}' is uint8; expected float32 in [0, 1]. Divide by 255 before the model."
                )
            if x.dim() == 4:
                raise DataError(
                    f"'{key}' has shape {shape} with no time axis; expected {expected}. "
                    "Add the obs_horizon axis (x.unsqueeze(1) for one frame)."
                )
            if x.dim() != 5:
                raise DataError(f"'{key}' has shape {shape}; expected {expected}")
            if shape[2] != 3 and shape[4] == 3:
                raise DataError(
                    f"'{key}' has shape {shape}, which looks like (B, T, H, W, C); expected "
                    f"{expected} (channels first). Use x.permute(0, 1, 4, 2, 3)."
                )
            if shape[2] != 3:
                raise DataError(f"'{key}' has {shape[2]} channels; expected 3 (RGB) in {expected}")
            if shape[1] != self.obs_horizon:
                raise DataError(
                    f"'{key}' has T={shape[1]} frames; the model's obs_horizon is "
                    f"{self.obs_horizon}, expected {expected}"
                )
            if (shape[3], shape[4]) != (H, W):
                raise DataError(
                    f"'{key}' images are {shape[3]}x{shape[4]} (HxW); the model expects "
                    f"image_size=({H}, {W}), i.e. {expected}. Resize the images or set image_size."
                )

    def encode_frames(self, camera_index: int, images: torch.Tensor) -> torch.Tensor:
        """(M, 3, H, W) in [0, 1] of one camera -> (M, n, D) tokens, exactly as ``forward`` makes
        them without FiLM (used to precompute features of a frozen encoder)."""
        enc = self.encoders[0 if self.shared else camera_index]
        tok = enc((images - self.mean) / self.std, None)
        return tok.mean(dim=1, keepdim=True) if self.pooled else tok

    def forward(
        self, batch: Mapping[str, object], film_cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Returns (B, cams, T, n, D); ``film_cond`` is (B, F) and is repeated per frame."""
        self.check(batch)
        frames: list[torch.Tensor] = [batch[camera_key(c)] for c in self.cameras]  # type: ignore[misc]
        B, T = frames[0].shape[:2]  # type: ignore[union-attr]
        n_cams = len(self.cameras)
        if self.shared:
            x = torch.stack(frames, dim=1).flatten(0, 2)  # type: ignore[arg-type]  # (B*cams*T, 3, H, W)
            x = (x - self.mean) / self.std
            cond = None
            if film_cond is not None:  # rows are ordered (B, cams, T)
                cond = (
                    film_cond[:, None, None, :].expand(B, n_cams, T, -1).reshape(B * n_cams * T, -1)
                )
            tok = self.encoders[0](x, cond)  # (B*cams*T, n, D)
            tok = tok.view(B, n_cams, T, *tok.shape[1:])
        else:
            cond = None
            if film_cond is not None:
                cond = film_cond[:, None, :].expand(B, T, -1).reshape(B * T, -1)
            outs = []
            for i, frame in enumerate(frames):
                x = (frame.flatten(0, 1) - self.mean) / self.std  # type: ignore[union-attr]
                outs.append(self.encoders[i](x, cond).view(B, T, -1, self.out_dim))
            tok = torch.stack(outs, dim=1)
        if self.pooled:
            tok = tok.mean(dim=3, keepdim=True)
        return tok
