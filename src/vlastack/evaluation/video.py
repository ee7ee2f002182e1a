"""Rollout videos: annotate frames with the instruction and outcome, encode a browser-playable mp4.

Chromium plays H.264 (and VP9/AV1) in mp4 but not MPEG-4 Part 2, so the encoder is the first
available of libx264, libopenh264, libvpx-vp9, libaom-av1 in the installed PyAV, with yuv420p
pixels (the only chroma layout browsers decode for these codecs) and even frame sizes.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

# (PyAV encoder name, short codec label), best browser support first.
_BROWSER_CODECS = [
    ("libx264", "h264"),
    ("h264", "h264"),
    ("libopenh264", "h264"),
    ("libvpx-vp9", "vp9"),
    ("libaom-av1", "av1"),
]


def pick_codec() -> str:
    """The best encoder PyAV can open here; warns when only a non-browser codec is left."""
    import av

    available = av.codecs_available
    for name, _label in _BROWSER_CODECS:
        if name in available:
            try:
                av.codec.Codec(name, "w")
            except Exception:
                continue
            return name
    warnings.warn(
        "no browser-playable video encoder (H.264/VP9/AV1) in this PyAV build; writing MPEG-4 "
        "Part 2, which Chromium will not play. Install a PyAV wheel with libx264.",
        stacklevel=2,
    )
    return "mpeg4"


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has a fixed-size default font only
        return ImageFont.load_default()


def _wrap(text: str, draw, font, width_px: int) -> list[str]:
    lines: list[str] = []
    cur = ""
    for word in text.split():
        cand = f"{cur} {word}".strip()
        if cur and draw.textlength(cand, font=font) > width_px:
            lines.append(cur)
            cur = word
        else:
            cur = cand
    if cur:
        lines.append(cur)
    return lines or [""]


def annotate_frames(
    frames: Sequence[np.ndarray],
    instruction: str,
    outcome: str | None = None,
    min_width_px: int = 320,
) -> list[np.ndarray]:
    """Upscale (H, W, 3) uint8 frames and draw the instruction above, step and outcome below.

    The outcome (e.g. "SUCCESS at step 57") is drawn in green or red on every frame so that a
    thumbnail already says how the episode ended. Returns frames of one even size.
    """
    from PIL import Image, ImageDraw

    if not frames:
        return []
    h, w = frames[0].shape[:2]
    scale = max(1, int(np.ceil(min_width_px / w)))
    out_w = w * scale
    font = _font(max(12, out_w // 26))
    probe = ImageDraw.Draw(Image.new("RGB", (out_w, 10)))
    text_lines = _wrap(instruction, probe, font, out_w - 12)[:3]
    line_h = int(font.size * 1.3) if hasattr(font, "size") else 14
    top = line_h * len(text_lines) + 8
    bottom = line_h + 8
    out_h = h * scale + top + bottom
    out_w += out_w % 2
    out_h += out_h % 2
    colour = (40, 200, 80) if outcome and outcome.lower().startswith("success") else (230, 60, 60)
    annotated = []
    for t, frame in enumerate(frames):
        canvas = Image.new("RGB", (out_w, out_h), (20, 20, 20))
        img = Image.fromarray(np.ascontiguousarray(frame[..., :3]).astype(np.uint8))
        canvas.paste(img.resize((w * scale, h * scale), Image.Resampling.NEAREST), (0, top))
        d = ImageDraw.Draw(canvas)
        for i, line in enumerate(text_lines):
            d.text((6, 4 + i * line_h), line, fill=(255, 255, 255), font=font)
        y = top + h * scale + 4
        d.text((6, y), f"step {t}", fill=(200, 200, 200), font=font)
        if outcome:
            tw = d.textlength(outcome, font=font)
            d.text((out_w - tw - 6, y), outcome, fill=colour, font=font)
        annotated.append(np.asarray(canvas))
    return annotated


def write_mp4(path: str | Path, frames: Sequence[np.ndarray], fps: float = 20.0) -> Path:
    """Encode (H, W, 3) uint8 frames to ``path`` (written to a temp name, then renamed)."""
    import av

    path = Path(path)
    if not frames:
        raise ValueError(f"{path}: no frames to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.mp4")
    codec = pick_codec()
    h, w = frames[0].shape[:2]
    rate = Fraction(fps).limit_denominator(1000)
    # faststart puts the index first so a browser can start playing from a server without
    # range requests (python -m http.server has none).
    with av.open(str(tmp), mode="w", format="mp4", options={"movflags": "faststart"}) as container:
        stream: Any = container.add_stream(codec, rate=rate)
        stream.width = w - w % 2
        stream.height = h - h % 2
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "23", "preset": "veryfast"}
        for frame in frames:
            f = np.ascontiguousarray(np.asarray(frame)[: stream.height, : stream.width, :3])
            f = f.astype(np.uint8, copy=False)
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.replace(path)
    return path
