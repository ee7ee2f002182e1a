"""Opt-in video decoding with torchcodec (``video_backend="torchcodec"``), LeRobot's default.

Same contract as ``video.VideoDecoder`` (PyAV, the default): frames shown at the requested
timestamps, each checked against ``tolerance_s``, (N, H, W, 3) or (N, 3, H, W) uint8. torchcodec
seeks and decodes in C++ and converts to RGB in one call per window, about half PyAV's CPU time
for a 2-frame window (benchmarks/bench_dataloader.py).

Frame selection: torchcodec returns the frame *played* at a time, i.e. the one with
pts <= t < pts + duration. A wanted timestamp computed from parquet float32 ``timestamp`` plus the
episode's offset can sit a hair before its frame's pts, which would pick the previous frame, so
each time is asked for at t + tolerance_s and the frame that comes back must have
|pts - t| <= tolerance_s, as on the PyAV path; anything else is a DataError.

Pixels: on this project's files (AV1, H.264 and MPEG-4 in yuv420p, widths 56-640, BT.601 and
BT.709 tags, limited and full range) torchcodec 0.13 over Debian's FFmpeg 5.1 gives the same bytes
as PyAV 18's bundled FFmpeg 8.1 at FAST_BILINEAR, planar or packed: both go through swscale's
unscaled YUV->RGB converter, which at equal size does no chroma filtering that the interpolation
flag would change. Another FFmpeg build may round that conversion differently, so the tests allow
``PIXEL_TOLERANCE`` per pixel (see tests/test_video_torchcodec.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vlastack.data.open_handles import PerThreadHandles
from vlastack.errors import DataError

# Largest |torchcodec - PyAV| per uint8 pixel the tests accept (measured here: 0).
PIXEL_TOLERANCE = 2

INSTALL_HINT = (
    "install it with `pip install 'vlastack[torchcodec]'` (torchcodec also needs FFmpeg 4-8 "
    "shared libraries, e.g. `apt install ffmpeg`), or use video_backend='pyav' (the default)"
)


def load_torchcodec() -> Any:
    """torchcodec's ``VideoDecoder`` class, or a DataError saying how to get it."""
    try:
        from torchcodec.decoders import VideoDecoder as TorchCodecVideoDecoder
    except ImportError as exc:
        raise DataError(
            f"video_backend='torchcodec' but torchcodec is not installed ({exc}); {INSTALL_HINT}"
        ) from None
    except Exception as exc:  # its FFmpeg libraries failed to load (RuntimeError / OSError)
        raise DataError(
            f"video_backend='torchcodec' but torchcodec failed to load ({exc}); {INSTALL_HINT}"
        ) from None
    return TorchCodecVideoDecoder


class TorchCodecDecoder(PerThreadHandles):
    """Decodes frames at timestamps with torchcodec, one open decoder per file, process and
    thread (a decoder's seek state is not thread-safe; a DataLoader worker opens its own)."""

    def __init__(self, tolerance_s: float = 1e-4, max_open: int = 64) -> None:
        self._cls = load_torchcodec()  # fail when the reader is built, not in a worker
        super().__init__(tolerance_s, max_open)

    def _decoder(self, path: str) -> Any:
        d = self._open.get(path)
        if d is None:
            if len(self._open) >= self.max_open:
                self.close()
            if not Path(path).is_file():
                raise DataError(
                    f"{path}: video file is missing; restore it or re-record the dataset"
                )
            try:
                # "approximate": no scan of the whole file on open (LeRobot's choice too); every
                # frame's pts is checked below, so a file that is not constant-rate still cannot
                # hand back a wrong frame silently. One FFmpeg thread, as on the PyAV path.
                d = self._cls(path, seek_mode="approximate", num_ffmpeg_threads=1, device="cpu")
            except Exception as exc:
                raise DataError(
                    f"{path}: video file is unreadable or truncated ({exc}); restore it or "
                    "re-encode the camera"
                ) from None
            self._open[path] = d
        return d

    def decode(
        self, path: str | Path, timestamps_s: np.ndarray, *, channels_first: bool = False
    ) -> np.ndarray:
        """Frames (N, H, W, 3) uint8 shown at ``timestamps_s`` (any order, repeats allowed);
        ``channels_first``: (N, 3, H, W), a strided view of the same memory."""
        path = str(path)
        ts = np.asarray(timestamps_s, dtype=np.float64).reshape(-1)
        if ts.size == 0:
            raise DataError(f"{path}: no timestamps requested")
        wanted, inverse = np.unique(ts, return_inverse=True)
        dec = self._decoder(path)
        end = float(dec.metadata.end_stream_seconds)
        late = wanted[wanted + self.tolerance_s >= end]
        if late.size:  # torchcodec refuses times past the last frame's end
            raise DataError(
                f"{path}: no frame at t={float(late[0]):.6f} s within tolerance_s="
                f"{self.tolerance_s} (the video ends at {end:.6f} s); the video has fewer frames "
                "than the episode metadata says: re-encode the camera"
            )
        try:
            batch = dec.get_frames_played_at(seconds=(wanted + self.tolerance_s).tolist())
        except (RuntimeError, IndexError) as exc:
            self._open.pop(path, None)
            raise DataError(
                f"{path}: decoding failed ({exc}); the video is corrupt or truncated, restore or "
                "re-encode it"
            ) from None
        got = batch.pts_seconds.numpy().astype(np.float64)
        off = np.abs(got - wanted) > self.tolerance_s
        if off.any():
            k = int(np.argmax(off))
            raise DataError(
                f"{path}: no frame at t={wanted[k]:.6f} s within tolerance_s={self.tolerance_s} "
                f"(the frame shown then starts at {got[k]:.6f} s); the video has fewer frames "
                "than the episode metadata says or its timestamps are off: re-encode the camera "
                "or raise tolerance_s"
            )
        frames = batch.data.numpy()  # (n, 3, H, W): torchcodec's NHWC memory, permuted
        if len(wanted) != len(ts) or not np.array_equal(wanted, ts):
            frames = frames[inverse.reshape(-1)]
        return frames if channels_first else frames.transpose(0, 2, 3, 1)
