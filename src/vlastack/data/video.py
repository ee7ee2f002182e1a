"""Video encoding, concatenation and timestamp-exact decoding with PyAV.

LeRobot v3 stores each camera as mp4 files holding many episodes back to back; an episode is the
time range [from_timestamp, to_timestamp) inside its file. We encode an episode to its own mp4
(AV1 via libsvtav1 like LeRobot when the av wheel has it, else H.264 or MPEG-4), then append it to
the shared file by remuxing packets (no re-encode). Decoding seeks to the keyframe before the
first wanted timestamp and decodes forward once, checking every frame's time against a tolerance.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from vlastack.data.open_handles import PerThreadHandles
from vlastack.errors import DataError

# SVT-AV1 prints its whole configuration to stderr for every encoder unless told otherwise.
os.environ.setdefault("SVT_LOG", "1")

# Encoders in order of preference, and the codec name LeRobot writes into info.json for each.
ENCODER_PREFERENCE = ("libsvtav1", "libaom-av1", "libx264", "libopenh264", "mpeg4")
CODEC_FAMILY = {
    "libsvtav1": "av1",
    "libaom-av1": "av1",
    "av1": "av1",
    "libx264": "h264",
    "libopenh264": "h264",
    "h264": "h264",
    "mpeg4": "mpeg4",
}


def _encoder_available(name: str) -> bool:
    import av

    try:
        av.codec.Codec(name, "w")
    except Exception:
        return False
    return True


def pick_video_encoder(preferred: str | None = "libsvtav1") -> str:
    """Return ``preferred`` if the installed PyAV can encode with it, else the best fallback."""
    if preferred and _encoder_available(preferred):
        return preferred
    for name in ENCODER_PREFERENCE:
        if _encoder_available(name):
            return name
    raise DataError(
        "no usable video encoder in the installed PyAV (tried "
        f"{', '.join(ENCODER_PREFERENCE)}); install the 'av' wheel from PyPI or store cameras "
        "with dtype='image' (PNG) instead of 'video'"
    )


@dataclass
class VideoSettings:
    """Encoder settings; LeRobot's defaults are GOP 2 (cheap random access), CRF 30, preset 12."""

    encoder: str = "libsvtav1"
    pix_fmt: str = "yuv420p"
    g: int = 2
    crf: int = 30
    preset: int = 12

    @property
    def codec(self) -> str:
        return CODEC_FAMILY.get(self.encoder, self.encoder)

    def options(self) -> dict[str, str]:
        opts = {"g": str(self.g)}
        if self.encoder in ("libsvtav1", "libaom-av1", "libx264"):
            opts["crf"] = str(self.crf)
        if self.encoder == "libsvtav1":
            opts["preset"] = str(self.preset)
        elif self.encoder == "libx264":
            opts["preset"] = "veryfast"
        elif self.encoder == "mpeg4":
            opts["qscale"] = "3"
        return opts

    def info_block(self, height: int, width: int, channels: int, fps: float) -> dict[str, Any]:
        """The ``info`` block of a video feature in ``meta/info.json`` (LeRobot 0.6.1 fields)."""
        return {
            "video.height": height,
            "video.width": width,
            "video.codec": self.codec,
            "video.pix_fmt": self.pix_fmt,
            "video.fps": _json_fps(fps),
            "video.channels": channels,
            "has_audio": False,
            "video.g": self.g,
            "video.crf": self.crf,
            "video.preset": self.preset,
            "video.fast_decode": 0,
            "video.video_backend": "pyav",
            "video.extra_options": {},
            "is_depth_map": False,
        }


def _json_fps(fps: float) -> int | float:
    return int(fps) if float(fps).is_integer() else float(fps)


def _rate(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001)


def encode_video(path: str | Path, frames: np.ndarray, fps: float, settings: VideoSettings) -> None:
    """Encode (N, H, W, 3) uint8 frames to an mp4 at ``path``; frame i is shown at i / fps."""
    import av

    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise DataError(
            f"{path}: video frames must be uint8 (N, H, W, 3), got {frames.dtype} {frames.shape}; "
            "store single-channel or RGBA cameras with dtype='image'"
        )
    n, h, w, _ = frames.shape
    if settings.pix_fmt == "yuv420p" and (h % 2 or w % 2):
        raise DataError(
            f"{path}: yuv420p video needs even height and width, got {h}x{w}; resize the camera "
            "to an even size or store it with dtype='image'"
        )
    with av.open(str(path), "w", format="mp4") as container:
        stream: Any = container.add_stream(settings.encoder, rate=_rate(fps))
        stream.width, stream.height, stream.pix_fmt = w, h, settings.pix_fmt
        stream.options = settings.options()
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(frames[i], format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1) / _rate(fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def concat_videos(inputs: list[tuple[Path, float]], output: str | Path, fps: float) -> list[float]:
    """Remux mp4 files one after another into ``output`` without re-encoding.

    ``inputs`` are (path, duration_s) pairs; packets at or beyond ``duration_s`` in an input are
    dropped (an uncommitted tail left by a crash). Input k starts at the sum of earlier durations.
    Returns those start times. All inputs must come from the same encoder settings.
    """
    import av

    starts: list[float] = []
    with av.open(str(output), "w", format="mp4") as out:
        out_stream = None
        offset_s = 0.0
        for path, duration_s in inputs:
            starts.append(offset_s)
            with av.open(str(path)) as src:
                in_stream: Any = src.streams.video[0]
                if out_stream is None:
                    out_stream = out.add_stream_from_template(in_stream, opaque=True)
                in_tb: Any = in_stream.time_base
                limit = duration_s - 0.5 / fps
                for packet in src.demux(in_stream):
                    if packet.dts is None:
                        continue
                    t_s = float(packet.pts * in_tb) if packet.pts is not None else 0.0
                    if t_s > limit:
                        continue
                    shift = round(offset_s / in_tb)
                    packet.pts = None if packet.pts is None else packet.pts + shift
                    packet.dts = packet.dts + shift
                    packet.stream = out_stream
                    out.mux(packet)
            offset_s += duration_s
    return starts


def probe_video(path: str | Path) -> tuple[int, int, float]:
    """(height, width, duration_s) of the first video stream; DataError if unreadable."""
    import av

    try:
        with av.open(str(path)) as c:
            s: Any = c.streams.video[0]
            dur = float(s.duration * s.time_base) if s.duration else float(c.duration or 0) / 1e6
            return s.codec_context.height, s.codec_context.width, dur
    except FileNotFoundError:
        raise DataError(
            f"{path}: video file is missing; restore it or re-record the dataset"
        ) from None
    except (av.error.FFmpegError, IndexError) as exc:
        raise DataError(
            f"{path}: video file is unreadable or truncated ({exc}); restore it from a backup "
            "or re-encode the camera"
        ) from None


class VideoDecoder(PerThreadHandles):
    """Decodes frames at timestamps, keeping one open container per file in this process and
    thread.

    Containers are not shared across processes (each DataLoader worker, a fork, notices the pid
    changed and opens its own) nor across threads (a container's seek/decode state is not
    thread-safe, and the training loop's prefetch thread decodes while validation does too).
    """

    def _container(self, path: str) -> Any:
        import av

        c = self._open.get(path)
        if c is None:
            if len(self._open) >= self.max_open:
                self.close()
            try:
                c = av.open(path)
            except FileNotFoundError:
                raise DataError(
                    f"{path}: video file is missing; restore it or re-record the dataset"
                ) from None
            except av.error.FFmpegError as exc:
                raise DataError(
                    f"{path}: video file is unreadable or truncated ({exc}); restore it or "
                    "re-encode the camera"
                ) from None
            # One decoding thread: windows are 1-3 frames after a seek, where frame threading only
            # adds pipeline latency (measured 1.7 vs 2.7 ms per 2-frame 224x224 AV1 window).
            c.streams.video[0].thread_count = 1
            self._open[path] = c
        return c

    def _close_handle(self, handle: Any) -> None:
        handle.close()

    def decode(
        self, path: str | Path, timestamps_s: np.ndarray, *, channels_first: bool = False
    ) -> np.ndarray:
        """Frames (N, H, W, 3) uint8 shown at ``timestamps_s`` (any order, repeats allowed);
        ``channels_first``: (N, 3, H, W), the same values (see ``_planar``)."""
        import av

        path = str(path)
        ts = np.asarray(timestamps_s, dtype=np.float64).reshape(-1)
        if ts.size == 0:
            raise DataError(f"{path}: no timestamps requested")
        wanted = np.unique(ts)
        container = self._container(path)
        stream = container.streams.video[0]
        found: dict[float, Any] = {}
        # One seek to the keyframe at or before the earliest wanted time, then decode forward.
        # Wanted times far apart (> 2 s) get their own seek rather than decoding everything between.
        groups: list[list[float]] = [[float(wanted[0])]]
        for t in wanted[1:]:
            if t - groups[-1][-1] > 2.0:
                groups.append([float(t)])
            else:
                groups[-1].append(float(t))
        try:
            for group in groups:
                self._decode_group(container, stream, group, found, path)
            frame0 = found[float(wanted[0])]
            planar = channels_first and self._planar(path, frame0)
            h, w = frame0.height, frame0.width
            out = np.empty((len(ts), 3, h, w) if planar else (len(ts), h, w, 3), np.uint8)
            done: dict[float, int] = {}
            for i, t in enumerate(ts.tolist()):
                j = done.get(t)
                if j is None:
                    self._rgb_into(found[t], out[i], planar)
                    done[t] = i
                else:
                    out[i] = out[j]  # a repeated timestamp: converted once
        except av.error.FFmpegError as exc:
            self._open.pop(path, None)
            raise DataError(
                f"{path}: decoding failed ({exc}); the video is corrupt or truncated, restore or "
                "re-encode it"
            ) from None
        return out.transpose(0, 3, 1, 2) if channels_first and not planar else out

    @staticmethod
    def _rgb_into(frame: Any, dst: np.ndarray, planar: bool) -> None:
        """One frame as uint8 RGB into ``dst``: (H, W, 3) from swscale's packed ``rgb24``, or
        (3, H, W) from its planar ``gbrp`` (planes G, B, R, read in place). Bilinear chroma
        upsampling: ~40% cheaper than swscale's default bicubic."""
        if not planar:
            dst[...] = frame.to_ndarray(format="rgb24", interpolation="FAST_BILINEAR")
            return
        g = frame.reformat(format="gbrp", interpolation="FAST_BILINEAR")
        for c, plane in zip((1, 2, 0), g.planes):
            rows = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
            dst[c] = rows[:, : plane.width]

    def _planar(self, path: str, frame: Any) -> bool:
        """Whether this file can use swscale's planar output: equal to the packed one on a real
        frame (checked once per file and process), and only for widths that are a multiple of
        16. PyAV 18's swscale (FFmpeg 8.1) fills the columns past the last multiple of 16 with
        garbage in planar ``gbrp`` at FAST_BILINEAR (e.g. width 56: columns 48-55 off by up to
        250), while packed ``rgb24`` is right there; a file that fails either test keeps the
        packed path, so the pixels never change."""
        table = self._open_planar
        ok = table.get(path)
        if ok is None:
            ok = frame.width % 16 == 0
            if ok:
                packed = np.empty((frame.height, frame.width, 3), np.uint8)
                planar = np.empty((3, frame.height, frame.width), np.uint8)
                self._rgb_into(frame, packed, False)
                self._rgb_into(frame, planar, True)
                ok = bool(np.array_equal(planar, packed.transpose(2, 0, 1)))
            table[path] = ok
        return ok

    @property
    def _open_planar(self) -> dict[str, bool]:
        self._open  # noqa: B018 (resets the thread-local table after a fork)
        table = getattr(self._local, "planar", None)
        if table is None:
            table = self._local.planar = {}
        return table

    def _decode_group(
        self,
        container: Any,
        stream: Any,
        group: list[float],
        found: dict[float, Any],
        path: str,
    ) -> None:
        tb = float(stream.time_base)
        first, last = group[0], group[-1]
        container.seek(max(0, int((first - self.tolerance_s) / tb)), stream=stream, backward=True)
        pending = list(group)
        closest: dict[float, float] = {}
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            t = frame.pts * tb
            if t < first - self.tolerance_s:
                continue
            while pending and abs(pending[0] - t) <= self.tolerance_s:
                found[pending.pop(0)] = frame  # converted to RGB by the caller, once
            for p in pending:
                if abs(t - p) < abs(closest.get(p, np.inf) - p):
                    closest[p] = t
            if not pending or t > last + self.tolerance_s:
                break
        if pending:
            p = pending[0]
            near = closest.get(p)
            where = f"nearest frame at {near:.6f} s" if near is not None else "no frame decoded"
            raise DataError(
                f"{path}: no frame at t={p:.6f} s within tolerance_s={self.tolerance_s} "
                f"({where}); the video has fewer frames than the episode metadata says or its "
                "timestamps are off: re-encode the camera or raise tolerance_s"
            )


VIDEO_BACKENDS = ("pyav", "torchcodec")


def make_video_decoder(backend: str, tolerance_s: float = 1e-4) -> Any:
    """The frame decoder for ``backend`` (LeRobot's name for the option, ``video_backend``):
    ``pyav`` (``VideoDecoder``, the default) or ``torchcodec`` (opt-in, the optional extra
    ``vlastack[torchcodec]``; ``video_torchcodec.TorchCodecDecoder``, same frames and checks)."""
    if backend == "pyav":
        return VideoDecoder(tolerance_s=tolerance_s)
    if backend == "torchcodec":
        from vlastack.data.video_torchcodec import TorchCodecDecoder

        return TorchCodecDecoder(tolerance_s=tolerance_s)
    raise DataError(
        f"video_backend={backend!r} is not supported; use one of {', '.join(VIDEO_BACKENDS)} "
        "(e.g. --video_backend=torchcodec)"
    )


class PngCodec:
    """Lossless PNG encode/decode of single uint8 images through PyAV (no Pillow needed).

    Used for cameras stored with ``dtype='image'``: LeRobot embeds such frames as PNG bytes in
    the data parquet (a ``struct<bytes, path>`` column, HF ``Image`` feature).
    """

    _FORMATS = {1: "gray", 3: "rgb24", 4: "rgba"}

    def encode(self, image: np.ndarray) -> bytes:
        import av

        h, w, c = image.shape
        ctx = av.CodecContext.create("png", "w")
        ctx.width, ctx.height, ctx.pix_fmt = w, h, self._FORMATS[c]
        arr = image[..., 0] if c == 1 else image
        packets = ctx.encode(
            av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format=ctx.pix_fmt)
        )
        packets += ctx.encode(None)
        return b"".join(bytes(p) for p in packets)

    def decode(self, data: bytes, channels: int = 3, source: str = "png") -> np.ndarray:
        import av

        # A fresh context per image (~50 us): a reused PNG decoder blends each image onto the
        # previous one (its APNG path), which corrupts every frame after the first.
        try:
            frames = av.CodecContext.create("png", "r").decode(av.packet.Packet(data))
        except av.error.FFmpegError as exc:
            raise DataError(
                f"{source}: PNG image is corrupt ({exc}); re-record that frame"
            ) from None
        if not frames:
            raise DataError(f"{source}: PNG image is empty or truncated; re-record that frame")
        fmt = self._FORMATS.get(channels, "rgb24")
        out = frames[0].to_ndarray(format=fmt)
        return out[..., None] if out.ndim == 2 else out
