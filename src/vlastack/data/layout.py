"""The LeRobot v3.0 on-disk layout that ``DatasetWriter`` writes and ``DatasetReader`` reads.

The layout (REFERENCE.md §6, matched against a dataset written by LeRobot 0.6.1): ``meta/info.json``,
``meta/stats.json``, ``meta/tasks.parquet``, ``meta/episodes/chunk-XXX/file-XXX.parquet`` (one row
per episode with per-episode stats), ``data/chunk-XXX/file-XXX.parquet`` (one row per frame) and
``videos/<camera>/chunk-XXX/file-XXX.mp4`` (episodes concatenated; an episode is a time range).

This module holds what both sides share: the path templates and constants, ``Feature`` (one
per-frame feature), ``EpisodeInfo`` (one committed episode), the Arrow schemas of the parquet
files, and the parsing of ``meta/info.json`` and of the ``meta/episodes`` rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vlastack.data import stats as S
from vlastack.errors import DataError

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
DTYPES = ("video", "image", "float32", "float64", "int64", "int32", "bool", "string")
CAMERA_DTYPES = ("video", "image")


@dataclass
class Feature:
    """One per-frame feature: dtype, shape ((H, W, C) for cameras) and optional per-dim names."""

    dtype: str
    shape: tuple[int, ...]
    names: list[str] | None = None
    info: dict[str, Any] | None = None  # the video ``info`` block of info.json

    def __post_init__(self) -> None:
        self.shape = tuple(int(s) for s in self.shape)

    @property
    def is_camera(self) -> bool:
        return self.dtype in CAMERA_DTYPES

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"dtype": self.dtype, "shape": list(self.shape), "names": self.names}
        if self.info is not None:
            d["info"] = self.info
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any], source: str = "features") -> Feature:
        try:
            return cls(str(d["dtype"]), tuple(d["shape"]), d.get("names"), d.get("info"))
        except (KeyError, TypeError) as exc:
            raise DataError(f"{source}: malformed feature entry {d!r} ({exc})") from None


DEFAULT_FEATURES = {
    "timestamp": Feature("float32", (1,)),
    "frame_index": Feature("int64", (1,)),
    "episode_index": Feature("int64", (1,)),
    "index": Feature("int64", (1,)),
    "task_index": Feature("int64", (1,)),
}


@dataclass
class EpisodeInfo:
    """Committed metadata of one episode (one row of ``meta/episodes``)."""

    index: int
    length: int
    tasks: list[str]
    dataset_from_index: int
    dataset_to_index: int
    data_file: tuple[int, int]  # (chunk_index, file_index)
    video_file: dict[str, tuple[int, int]] = field(default_factory=dict)
    video_from_timestamp: dict[str, float] = field(default_factory=dict)
    video_to_timestamp: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Arrow / HF-datasets schema helpers
# ---------------------------------------------------------------------------------------------
_ARROW_SCALAR = {
    "float32": pa.float32(),
    "float64": pa.float64(),
    "int64": pa.int64(),
    "int32": pa.int32(),
    "bool": pa.bool_(),
    "string": pa.string(),
}
_IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def arrow_type(f: Feature) -> pa.DataType:
    if f.dtype == "image":
        return _IMAGE_TYPE
    base = _ARROW_SCALAR[f.dtype]
    if f.shape == (1,) or f.dtype == "string":
        return base
    return pa.list_(base, f.shape[0])


def hf_feature(f: Feature) -> dict[str, Any]:
    # The `huggingface` schema metadata LeRobot's writer puts on data parquet files.
    if f.dtype == "image":
        return {"_type": "Image"}
    value = {"dtype": f.dtype, "_type": "Value"}
    if f.shape == (1,) or f.dtype == "string":
        return value
    return {"feature": value, "length": f.shape[0], "_type": "List"}


def np_dtype(f: Feature) -> np.dtype:
    return np.dtype(
        {
            "float32": np.float32,
            "float64": np.float64,
            "int64": np.int64,
            "int32": np.int32,
            "bool": np.bool_,
        }[f.dtype]
    )


def stats_type(f: Feature, stat: str) -> pa.DataType:
    if stat == "count":
        return pa.list_(pa.int64())
    if f.is_camera:
        return pa.list_(pa.list_(pa.list_(pa.float64())))
    return pa.list_(pa.float64())


def read_parquet(path: Path, columns: list[str] | None = None) -> pa.Table:
    try:
        return pq.read_table(path, columns=columns)
    except FileNotFoundError:
        raise DataError(
            f"{path}: parquet file is missing; restore it or re-record the dataset"
        ) from None
    except (pa.ArrowInvalid, pa.ArrowException, OSError) as exc:
        raise DataError(
            f"{path}: parquet file is corrupt or unreadable ({exc}); restore it from a backup or "
            "re-record the episodes it holds"
        ) from None


def json_bytes(obj: Any) -> bytes:
    """A meta/*.json file's bytes as LeRobot writes them (indent 4, final newline)."""
    return (json.dumps(obj, indent=4) + "\n").encode()


def tasks_table(tasks: list[str]) -> pa.Table:
    # LeRobot stores tasks as a pandas frame indexed by the task string; the pandas metadata makes
    # pd.read_parquet restore that index.
    table = pa.table(
        {
            "task_index": pa.array(range(len(tasks)), pa.int64()),
            "task": pa.array(tasks, pa.string()),
        }
    )
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [
            {
                "name": None,
                "field_name": None,
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": {"encoding": "UTF-8"},
            }
        ],
        "columns": [
            {
                "name": "task_index",
                "field_name": "task_index",
                "pandas_type": "int64",
                "numpy_type": "int64",
                "metadata": None,
            },
            {
                "name": "task",
                "field_name": "task",
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": None,
            },
        ],
        "attributes": {},
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.0",
    }
    return table.replace_schema_metadata({"pandas": json.dumps(pandas_meta)})


def next_file(chunk: int, file: int, chunks_size: int) -> tuple[int, int]:
    file += 1
    if file >= chunks_size:
        return chunk + 1, 0
    return chunk, file


# ---------------------------------------------------------------------------------------------
# Metadata: meta/info.json and the meta/episodes rows
# ---------------------------------------------------------------------------------------------
def read_info(root: Path) -> dict[str, Any]:
    path = root / "meta" / "info.json"
    if root.is_file():
        raise DataError(
            f"{root} is a file, not a dataset folder; pass the LeRobot v3 dataset folder (the one "
            "holding meta/info.json)"
        )
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(
            f"{path}: not found; {root} is not a LeRobot v3 dataset (create one with "
            "DatasetWriter.create or convert it with `vlastack data convert`)"
        ) from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); restore it from a backup") from None
    version = info.get("codebase_version")
    if version != CODEBASE_VERSION:
        raise DataError(
            f"{path}: codebase_version is {version!r}, vlastack reads {CODEBASE_VERSION!r}; convert "
            "older LeRobot datasets with LeRobot's v2.1→v3.0 conversion script"
        )
    for k in ("fps", "features", "total_episodes", "total_frames"):
        if k not in info:
            raise DataError(f"{path}: missing the field {k!r}; the file is incomplete, restore it")
    return info


def load_episode_rows(root: Path, total_episodes: int) -> list[dict[str, Any]]:
    files = sorted((root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
    if not files and total_episodes:
        raise DataError(
            f"{root / 'meta' / 'episodes'}: no episode metadata files but info.json says "
            f"{total_episodes} episodes; restore meta/episodes"
        )
    rows: list[dict[str, Any]] = []
    for f in files:
        rows.extend(read_parquet(f).to_pylist())
    rows = sorted(
        (r for r in rows if r["episode_index"] < total_episodes), key=lambda r: r["episode_index"]
    )
    got = [r["episode_index"] for r in rows]
    if got != list(range(total_episodes)):
        raise DataError(
            f"{root / 'meta' / 'episodes'}: episode_index values {got[:10]}... do not cover "
            f"0..{total_episodes - 1} as meta/info.json total_episodes says; restore meta/episodes"
        )
    return rows


def episode_from_row(
    r: dict[str, Any], camera_keys: list[str], video_keys: list[str]
) -> EpisodeInfo:
    ep = EpisodeInfo(
        index=int(r["episode_index"]),
        length=int(r["length"]),
        tasks=list(r.get("tasks") or []),
        dataset_from_index=int(r["dataset_from_index"]),
        dataset_to_index=int(r["dataset_to_index"]),
        data_file=(int(r["data/chunk_index"]), int(r["data/file_index"])),
        extra=json.loads(r["vlastack/extra"]) if r.get("vlastack/extra") else {},
    )
    for k in video_keys:
        ep.video_file[k] = (int(r[f"videos/{k}/chunk_index"]), int(r[f"videos/{k}/file_index"]))
        ep.video_from_timestamp[k] = float(r[f"videos/{k}/from_timestamp"])
        ep.video_to_timestamp[k] = float(r[f"videos/{k}/to_timestamp"])
    return ep


def stats_from_row(r: dict[str, Any], features: dict[str, Feature]) -> dict[str, S.Stats]:
    out: dict[str, S.Stats] = {}
    for key in features:
        if f"stats/{key}/mean" not in r or r[f"stats/{key}/mean"] is None:
            continue
        out[key] = {
            s: np.asarray(r[f"stats/{key}/{s}"]) for s in S.STAT_NAMES if f"stats/{key}/{s}" in r
        }
    return out
