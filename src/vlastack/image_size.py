"""The camera size a command renders at: one default, and a checkpoint's own trained size.

``DEFAULT_IMAGE_SIZE`` (96x96) is what ``vlastack collect`` and ``vlastack demo`` record at, the
``demo`` recipe's and ``VLAConfig``'s image size, and the size every number of the main job in
BENCHMARKS.md was measured at (the demo's four tasks were picked because their targets are
visible from corner2 at 96x96); a 128x128 frame costs 1.8x the pixels and the demo's model
resizes it back to 96 anyway.

A command that runs a checkpoint (``eval``, ``robot``, ``bench stress|chain``) renders by default
at the size the checkpoint was trained at (``trained_image_size``), so a policy is never
evaluated at a size it has not seen; an explicit ``--image-size`` still wins, with an
``ImageSizeWarning`` when it differs from the trained size (``choose_image_size``). This module
reads JSON files only (no torch), so every layer can use it.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

DEFAULT_IMAGE_SIZE: tuple[int, int] = (96, 96)


class ImageSizeWarning(UserWarning):
    """An explicit image size differs from the one the checkpoint was trained at."""


def _pair(value: Any) -> tuple[int, int] | None:
    try:
        h, w = (int(v) for v in value)
    except (TypeError, ValueError):
        return None
    return (h, w) if h > 0 and w > 0 else None


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def trained_image_size(checkpoint: str | Path) -> tuple[int, int] | None:
    """(H, W) the checkpoint's cameras were trained at, from its JSON files; None if unknown.

    A vlastack checkpoint: ``config.json["model"]["image_size"]`` (the size the network saw; a
    single-robot checkpoint's equals its dataset's camera size), else ``embodiment.json``'s
    cameras when they share one size. A LeRobot ``pretrained_model`` folder: the ``[C, H, W]``
    shape of its ``observation.images.*`` input features when they share one size.
    """
    path = Path(checkpoint)
    config = _read(path / "config.json")
    if isinstance(config, Mapping):
        model = config.get("model")
        if isinstance(model, Mapping) and (size := _pair(model.get("image_size"))):
            return size
        feats = config.get("input_features")
        if isinstance(feats, Mapping):
            sizes = {
                _pair(list(f.get("shape", []))[-2:])
                for k, f in feats.items()
                if k.startswith("observation.images") and isinstance(f, Mapping)
            }
            if len(sizes) == 1 and (size := sizes.pop()):
                return size
    emb = _read(path / "embodiment.json")
    if isinstance(emb, Mapping) and isinstance(emb.get("cameras"), list):
        cams = {
            _pair((c.get("height"), c.get("width")))
            for c in emb["cameras"]
            if isinstance(c, Mapping)
        }
        if len(cams) == 1 and (size := cams.pop()):
            return size
    return None


def metadata_image_size(metadata: Mapping[str, Any] | None) -> tuple[int, int] | None:
    """(H, W) from a policy's (or a policy server's) metadata: ``image_size``, else its
    embodiment's cameras when they share one size; None if neither says."""
    if not metadata:
        return None
    if size := _pair(metadata.get("image_size") or ()):
        return size
    emb = metadata.get("embodiment")
    if isinstance(emb, Mapping) and isinstance(emb.get("cameras"), list):
        cams = {
            _pair((c.get("height"), c.get("width")))
            for c in emb["cameras"]
            if isinstance(c, Mapping)
        }
        if len(cams) == 1:
            return cams.pop()
    return None


def choose_image_size(
    explicit: Any, trained: tuple[int, int] | None, *, source: str = "the checkpoint"
) -> tuple[int, int]:
    """The size to render at: ``explicit`` (an int or (H, W)) when given, warning when it differs
    from ``trained``; else ``trained``; else ``DEFAULT_IMAGE_SIZE``."""
    if explicit is None:
        return trained or DEFAULT_IMAGE_SIZE
    if isinstance(explicit, int):
        explicit = (explicit, explicit)
    size = _pair(explicit)
    if size is None:
        from vlastack.errors import ConfigError

        raise ConfigError(f"image size {explicit!r}: give two positive integers (H, W)")
    if trained is not None and size != trained:
        warnings.warn(
            f"rendering at {size[0]}x{size[1]}, but {source} was trained at "
            f"{trained[0]}x{trained[1]}: the policy sees frames of a size it was not trained on "
            f"(the model resizes them) and its success may drop; drop --image-size to use "
            f"{trained[0]}x{trained[1]}",
            ImageSizeWarning,
            stacklevel=2,
        )
    return size


__all__ = [
    "DEFAULT_IMAGE_SIZE",
    "ImageSizeWarning",
    "choose_image_size",
    "metadata_image_size",
    "trained_image_size",
]
