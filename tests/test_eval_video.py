"""Rollout videos: annotated frames and a browser-playable (H.264, yuv420p) mp4 that decodes back."""

from __future__ import annotations

import numpy as np
import pytest

av = pytest.importorskip("av")

from vlastack.evaluation.video import annotate_frames, pick_codec, write_mp4  # noqa: E402


def test_annotation_adds_banners_and_even_size():
    frames = [np.full((33, 47, 3), 128, np.uint8) for _ in range(3)]
    out = annotate_frames(frames, "open the drawer " * 6, "SUCCESS at step 2")
    assert len(out) == 3
    h, w, c = out[0].shape
    assert c == 3 and h % 2 == 0 and w % 2 == 0 and w >= 320 and h > 33 * (w // 47)
    top = out[0][:20].reshape(-1, 3)
    assert (top > 200).any()  # white instruction text on the dark banner
    bottom = out[-1][-20:].reshape(-1, 3)
    assert ((bottom[:, 1] > 150) & (bottom[:, 0] < 120)).any()  # green outcome text


def test_mp4_is_h264_and_round_trips(tmp_path):
    if pick_codec() not in ("libx264", "h264", "libopenh264"):
        pytest.skip(f"this PyAV has no H.264 encoder (got {pick_codec()})")
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (64, 80, 3), dtype=np.uint8) for _ in range(12)]
    path = write_mp4(tmp_path / "v.mp4", frames, fps=10)
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264"
        assert (s.codec_context.width, s.codec_context.height) == (80, 64)
        assert s.codec_context.pix_fmt == "yuv420p"
        decoded = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(decoded) == 12
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically
    with pytest.raises(ValueError, match="no frames"):
        write_mp4(tmp_path / "empty.mp4", [])
