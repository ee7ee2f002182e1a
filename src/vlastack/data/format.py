"""Read and write episode datasets in the LeRobot v3.0 on-disk layout.

The names every caller imports, in one place: ``Feature`` and the layout constants
(``vlastack.data.layout``), ``DatasetWriter`` (``vlastack.data.writer``) and ``DatasetReader``
(``vlastack.data.reader``).
"""

from __future__ import annotations

from vlastack.data.layout import (
    CAMERA_DTYPES,
    CHUNKS_SIZE,
    CODEBASE_VERSION,
    DATA_PATH,
    DEFAULT_FEATURES,
    DTYPES,
    EPISODES_PATH,
    VIDEO_PATH,
    EpisodeInfo,
    Feature,
)
from vlastack.data.reader import DatasetReader
from vlastack.data.writer import DatasetWriter

__all__ = [
    "CAMERA_DTYPES",
    "CHUNKS_SIZE",
    "CODEBASE_VERSION",
    "DATA_PATH",
    "DEFAULT_FEATURES",
    "DTYPES",
    "EPISODES_PATH",
    "VIDEO_PATH",
    "DatasetReader",
    "DatasetWriter",
    "EpisodeInfo",
    "Feature",
]
