"""Read and write episode datasets in the LeRobot v3.0 on-disk layout.

The layout (REFERENCE.md §6, matched against a dataset written by LeRobot 0.6.1): ``meta/info.json``,
``meta/stats.json``, ``meta/tasks.parquet``, ``meta/episodes/chunk-XXX/file-XXX.parquet`` (one row
per episode with per-episode stats), ``data/chunk-XXX/file-XXX.parquet`` (one row per frame) and
``videos/<camera>/chunk-XXX/file-XXX.mp4`` (episodes concatenated; an episode is a time range).

Crash safety: every ``save_episode`` writes complete new files under temporary names and renames
them into place, ``meta/info.json`` last. info.json's ``total_episodes``/``total_frames`` are the
commit point: the reader ignores episode rows, data rows and video time beyond them, so a process
killed at any moment leaves every earlier episode readable (a crash between the renames can leave
an uncommitted tail that ``DatasetWriter.resume`` trims; the reader also drops tasks beyond
``total_tasks`` and replaces a ``stats.json`` that counts uncommitted frames by the committed
episodes' stats). This guards against process death, not power loss (no fsync).
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vlastack.data import stats as S
from vlastack.data.video import (
    CODEC_FAMILY,
    PngCodec,
    VideoDecoder,
    VideoSettings,
    concat_videos,
    encode_video,
    pick_video_encoder,
    probe_video,
)
from vlastack.embodiment import EmbodimentSpec
from vlastack.errors import DataError

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
DTYPES = ("video", "image", "float32", "float64", "int64", "int32", "bool", "string")
CAMERA_DTYPES = ("video", "image")
_MB = 1024 * 1024


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


def _arrow_type(f: Feature) -> pa.DataType:
    if f.dtype == "image":
        return _IMAGE_TYPE
    base = _ARROW_SCALAR[f.dtype]
    if f.shape == (1,) or f.dtype == "string":
        return base
    return pa.list_(base, f.shape[0])


def _hf_feature(f: Feature) -> dict[str, Any]:
    # The `huggingface` schema metadata LeRobot's writer puts on data parquet files.
    if f.dtype == "image":
        return {"_type": "Image"}
    value = {"dtype": f.dtype, "_type": "Value"}
    if f.shape == (1,) or f.dtype == "string":
        return value
    return {"feature": value, "length": f.shape[0], "_type": "List"}


def _np_dtype(f: Feature) -> np.dtype:
    return np.dtype(
        {
            "float32": np.float32,
            "float64": np.float64,
            "int64": np.int64,
            "int32": np.int32,
            "bool": np.bool_,
        }[f.dtype]
    )


def _stats_type(f: Feature, stat: str) -> pa.DataType:
    if stat == "count":
        return pa.list_(pa.int64())
    if f.is_camera:
        return pa.list_(pa.list_(pa.list_(pa.float64())))
    return pa.list_(pa.float64())


def _read_parquet(path: Path, columns: list[str] | None = None) -> pa.Table:
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


def _atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path.tmp`` and return that temp path (caller renames it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    return tmp


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=4) + "\n").encode()


def _tasks_table(tasks: list[str]) -> pa.Table:
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


def _next_file(chunk: int, file: int, chunks_size: int) -> tuple[int, int]:
    file += 1
    if file >= chunks_size:
        return chunk + 1, 0
    return chunk, file


def _read_info(root: Path) -> dict[str, Any]:
    path = root / "meta" / "info.json"
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


def _load_episode_rows(root: Path, total_episodes: int) -> list[dict[str, Any]]:
    files = sorted((root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
    if not files and total_episodes:
        raise DataError(
            f"{root / 'meta' / 'episodes'}: no episode metadata files but info.json says "
            f"{total_episodes} episodes; restore meta/episodes"
        )
    rows: list[dict[str, Any]] = []
    for f in files:
        rows.extend(_read_parquet(f).to_pylist())
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


def _episode_from_row(
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


def _stats_from_row(r: dict[str, Any], features: dict[str, Feature]) -> dict[str, S.Stats]:
    out: dict[str, S.Stats] = {}
    for key in features:
        if f"stats/{key}/mean" not in r or r[f"stats/{key}/mean"] is None:
            continue
        out[key] = {
            s: np.asarray(r[f"stats/{key}/{s}"]) for s in S.STAT_NAMES if f"stats/{key}/{s}" in r
        }
    return out


# ---------------------------------------------------------------------------------------------
# Writer
# ---------------------------------------------------------------------------------------------
class DatasetWriter:
    """Appends episodes frame by frame to a LeRobot v3 dataset; each episode commits atomically."""

    def __init__(
        self,
        root: Path,
        info: dict[str, Any],
        tasks: list[str],
        episode_rows: list[dict[str, Any]],
        embodiment: EmbodimentSpec | None,
    ) -> None:
        self.root = root
        self.info = info
        self.fps = float(info["fps"])
        self.features = {k: Feature.from_json(v) for k, v in info["features"].items()}
        self.user_keys = [k for k in self.features if k not in DEFAULT_FEATURES]
        self.camera_keys = [k for k in self.user_keys if self.features[k].is_camera]
        self.video_keys = [k for k in self.camera_keys if self.features[k].dtype == "video"]
        self.tasks = list(tasks)
        self._task_index = {t: i for i, t in enumerate(self.tasks)}
        self._rows = episode_rows
        self._ep_stats = [_stats_from_row(r, self.features) for r in episode_rows]
        self.embodiment = embodiment
        codec = None
        for k in self.video_keys:
            codec = (self.features[k].info or {}).get("video.codec", codec)
        preferred = {"av1": "libsvtav1", "h264": "libx264", "mpeg4": "mpeg4"}.get(
            codec or "av1", codec
        )
        self.video = (
            VideoSettings(encoder=pick_video_encoder(preferred)) if self.video_keys else None
        )
        if self.video and codec and CODEC_FAMILY.get(self.video.encoder) != codec:
            raise DataError(
                f"{root}/meta/info.json: videos use codec {codec!r} but this PyAV has no encoder for "
                "it, so new episodes cannot be appended to the same files; install an av wheel "
                "with that encoder"
            )
        self._png = PngCodec()
        self._buffer: dict[str, list[np.ndarray]] = {k: [] for k in self.user_keys}
        self._frame_tasks: list[str] = []
        self._closed = False

    # ---- construction ---------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        root: str | Path,
        *,
        fps: float,
        features: dict[str, Feature],
        robot_type: str = "unknown",
        embodiment: EmbodimentSpec | None = None,
        use_videos: bool = True,
        data_files_size_in_mb: float = 100,
        video_files_size_in_mb: float = 200,
        video_codec: str = "libsvtav1",
    ) -> DatasetWriter:
        """Create an empty dataset at ``root`` (which must not hold one already)."""
        root = Path(root)
        if (root / "meta" / "info.json").exists():
            raise DataError(
                f"{root}: a dataset already exists here; use DatasetWriter.resume({str(root)!r}) "
                "to append episodes, or choose a new folder"
            )
        if fps <= 0:
            raise DataError(f"{root}: fps must be positive, got {fps}")
        settings = VideoSettings(encoder=pick_video_encoder(video_codec))
        feats: dict[str, Any] = {}
        for key, f in features.items():
            if not isinstance(f, Feature):
                raise DataError(
                    f"features[{key!r}] must be a vlastack.data.format.Feature, got {type(f).__name__}"
                )
            if key in DEFAULT_FEATURES or key == "task":
                raise DataError(
                    f"features[{key!r}]: {key!r} is added automatically; remove it from the features "
                    "(pass the language instruction as add_frame(..., task=...))"
                )
            if f.dtype not in DTYPES:
                raise DataError(f"features[{key!r}].dtype={f.dtype!r}; expected one of {DTYPES}")
            f = Feature(f.dtype, f.shape, f.names, f.info)
            if f.is_camera:
                if len(f.shape) != 3 or f.shape[2] not in (1, 3, 4):
                    raise DataError(
                        f"features[{key!r}].shape={f.shape}; camera shapes are (height, width, "
                        "channels) with channels 1, 3 or 4"
                    )
                if f.dtype == "video" and not use_videos:
                    f.dtype = "image"
                if f.dtype == "video" and f.shape[2] != 3:
                    raise DataError(
                        f"features[{key!r}]: video cameras must have 3 channels; use dtype='image'"
                    )
                f.names = f.names or ["height", "width", "channels"]
                if f.dtype == "video":
                    f.info = settings.info_block(f.shape[0], f.shape[1], f.shape[2], fps)
            else:
                if f.dtype != "string" and len(f.shape) != 1:
                    raise DataError(
                        f"features[{key!r}].shape={f.shape}; non-image features must be 1-D, "
                        "flatten it and list the dimension names"
                    )
                if f.names is not None and len(f.names) != f.shape[0]:
                    raise DataError(
                        f"features[{key!r}].names has {len(f.names)} entries for shape {f.shape}; "
                        "give one name per dimension"
                    )
            feats[key] = f.to_json()
        for key, f in DEFAULT_FEATURES.items():
            feats[key] = f.to_json()
        info = {
            "codebase_version": CODEBASE_VERSION,
            "fps": int(fps) if float(fps).is_integer() else float(fps),
            "features": feats,
            "total_episodes": 0,
            "total_frames": 0,
            "total_tasks": 0,
            "chunks_size": CHUNKS_SIZE,
            "data_files_size_in_mb": data_files_size_in_mb,
            "video_files_size_in_mb": video_files_size_in_mb,
            "data_path": DATA_PATH,
            "video_path": VIDEO_PATH
            if any(f["dtype"] == "video" for f in feats.values())
            else None,
            "robot_type": embodiment.robot_type
            if embodiment and robot_type == "unknown"
            else robot_type,
            "splits": {},
        }
        (root / "meta").mkdir(parents=True, exist_ok=True)
        if embodiment is not None:
            embodiment.validate(str(root / "meta" / "embodiment.json"))
            embodiment.save(root / "meta" / "embodiment.json")
        writer = cls(root, info, [], [], embodiment)
        os.replace(
            _atomic_write_bytes(root / "meta" / "info.json", _json_bytes(info)),
            root / "meta" / "info.json",
        )
        return writer

    @classmethod
    def resume(cls, root: str | Path) -> DatasetWriter:
        """Reopen a dataset to append episodes; trims anything a crash left uncommitted."""
        root = Path(root)
        info = _read_info(root)
        reader = DatasetReader(root, verify_videos=False)
        rows = _load_episode_rows(root, int(info["total_episodes"]))
        for tmp in list(root.rglob("*.tmp")):
            tmp.unlink()
        shutil.rmtree(root / ".staging", ignore_errors=True)
        return cls(root, info, reader.tasks, rows, reader.embodiment)

    # ---- frames ---------------------------------------------------------------------------
    @property
    def num_episodes(self) -> int:
        return len(self._rows)

    @property
    def num_frames(self) -> int:
        return int(self.info["total_frames"])

    @property
    def episode_length(self) -> int:
        """Frames buffered for the episode being recorded."""
        return len(self._frame_tasks)

    def add_frame(self, frame: dict[str, Any], task: str) -> None:
        """Buffer one frame: every declared feature (images uint8 (H, W, C)) and its task string."""
        if self._closed:
            raise DataError(
                f"{self.root}: the writer is finalized; reopen with DatasetWriter.resume"
            )
        if not isinstance(task, str) or not task:
            raise DataError(f"{self.root}: add_frame needs a non-empty task string, got {task!r}")
        unknown = [k for k in frame if k not in self._buffer and k != "task"]
        if unknown:
            raise DataError(
                f"{self.root}: add_frame got unknown feature(s) {unknown}; declared features are "
                f"{self.user_keys}. Declare them in DatasetWriter.create(features=...) or drop them"
            )
        missing = [k for k in self._buffer if k not in frame]
        if missing:
            raise DataError(
                f"{self.root}: add_frame is missing feature(s) {missing}; every frame needs all of {self.user_keys}"
            )
        checked = {k: self._check_value(k, frame[k]) for k in self._buffer}
        for k, v in checked.items():
            self._buffer[k].append(v)
        self._frame_tasks.append(task)

    def _check_value(self, key: str, value: Any) -> np.ndarray:
        f = self.features[key]
        where = f"{self.root}: add_frame feature {key!r}"
        if f.is_camera:
            if not isinstance(value, np.ndarray) or value.dtype != np.uint8:
                got = value.dtype if isinstance(value, np.ndarray) else type(value).__name__
                raise DataError(
                    f"{where} must be a uint8 numpy array (H, W, C), got {got}; convert floats in "
                    "[0, 1] with (img * 255).round().astype(np.uint8)"
                )
            if value.ndim == 2 and f.shape[2] == 1:
                value = value[..., None]
            if value.shape != f.shape:
                fix = (
                    " (looks channel-first: use img.transpose(1, 2, 0))"
                    if value.shape == (f.shape[2], f.shape[0], f.shape[1])
                    else ""
                )
                raise DataError(f"{where} has shape {value.shape}, declared {f.shape}{fix}")
            return value
        if f.dtype == "string":
            if not isinstance(value, str):
                raise DataError(f"{where} must be a str, got {type(value).__name__}")
            return np.asarray(value, dtype=object)
        arr = np.asarray(value)
        if arr.shape == () and f.shape == (1,):
            arr = arr.reshape(1)
        if arr.shape != f.shape:
            raise DataError(
                f"{where} has shape {arr.shape}, declared {f.shape}; pass a vector of that shape"
            )
        want = _np_dtype(f)
        if want.kind in "iu" and arr.dtype.kind not in "iub":
            raise DataError(f"{where} has dtype {arr.dtype}, declared {f.dtype}; pass integers")
        if want.kind == "b" and arr.dtype.kind != "b":
            raise DataError(f"{where} has dtype {arr.dtype}, declared bool; pass booleans")
        if want.kind == "f" and arr.dtype.kind not in "fiub":
            raise DataError(f"{where} has dtype {arr.dtype}, declared {f.dtype}; pass numbers")
        return arr.astype(want, copy=False)

    def clear_episode(self) -> None:
        """Drop the frames buffered for the current episode."""
        self._buffer = {k: [] for k in self.user_keys}
        self._frame_tasks = []

    # ---- commit ---------------------------------------------------------------------------
    def save_episode(self, extra: dict[str, Any] | None = None) -> int:
        """Write the buffered frames as a new episode, atomically; returns its episode index."""
        length = len(self._frame_tasks)
        if length == 0:
            raise DataError(
                f"{self.root}: save_episode called with no frames; call add_frame first"
            )
        ep_index = len(self._rows)
        start = int(self.info["total_frames"])
        for t in self._frame_tasks:
            if t not in self._task_index:
                self._task_index[t] = len(self.tasks)
                self.tasks.append(t)
        frame_index = np.arange(length, dtype=np.int64)
        columns: dict[str, np.ndarray] = {
            k: np.stack(self._buffer[k]) for k in self.user_keys if not self.features[k].is_camera
        }
        columns["timestamp"] = (frame_index / self.fps).astype(np.float32)
        columns["frame_index"] = frame_index
        columns["episode_index"] = np.full(length, ep_index, dtype=np.int64)
        columns["index"] = start + frame_index
        columns["task_index"] = np.array(
            [self._task_index[t] for t in self._frame_tasks], dtype=np.int64
        )

        ep_stats: dict[str, S.Stats] = {}
        images = {k: np.stack(self._buffer[k]) for k in self.camera_keys}
        for k in self.features:
            if self.features[k].is_camera:
                ep_stats[k] = S.image_stats(images[k][S.image_sample_indices(length)])
            elif self.features[k].dtype != "string":
                ep_stats[k] = S.vector_stats(columns[k])

        renames: list[tuple[Path, Path]] = []
        staging = self.root / ".staging"
        staging.mkdir(exist_ok=True)
        prev = self._rows[-1] if self._rows else None
        row: dict[str, Any] = {
            "episode_index": ep_index,
            "tasks": list(dict.fromkeys(self._frame_tasks)),
            "length": length,
        }
        # -- data parquet: append to the last file (rewritten whole) or roll over to a new one
        table = self._episode_table(columns, images)
        data_limit = float(self.info["data_files_size_in_mb"]) * _MB
        chunk, file = (prev["data/chunk_index"], prev["data/file_index"]) if prev else (0, 0)
        path = self.root / DATA_PATH.format(chunk_index=chunk, file_index=file)
        if prev and path.exists() and path.stat().st_size + table.nbytes >= data_limit:
            chunk, file = _next_file(chunk, file, int(self.info["chunks_size"]))
            path = self.root / DATA_PATH.format(chunk_index=chunk, file_index=file)
        renames.append((self._write_data_file(path, table, start), path))
        row.update(
            {
                "data/chunk_index": chunk,
                "data/file_index": file,
                "dataset_from_index": start,
                "dataset_to_index": start + length,
            }
        )
        # -- videos: encode the episode alone, then remux it after the committed part of the file
        video_limit = float(self.info["video_files_size_in_mb"]) * _MB
        duration_s = length / self.fps
        for k in self.video_keys:
            assert self.video is not None
            ep_mp4 = staging / f"{k}.mp4"
            encode_video(ep_mp4, images[k], self.fps, self.video)
            chunk, file, from_ts = 0, 0, 0.0
            if prev:
                chunk, file = prev[f"videos/{k}/chunk_index"], prev[f"videos/{k}/file_index"]
                from_ts = float(prev[f"videos/{k}/to_timestamp"])
            target = self.root / VIDEO_PATH.format(video_key=k, chunk_index=chunk, file_index=file)
            if (
                prev
                and target.exists()
                and target.stat().st_size + ep_mp4.stat().st_size >= video_limit
            ):
                chunk, file = _next_file(chunk, file, int(self.info["chunks_size"]))
                target = self.root / VIDEO_PATH.format(
                    video_key=k, chunk_index=chunk, file_index=file
                )
                from_ts = 0.0
            target.parent.mkdir(parents=True, exist_ok=True)
            if prev and target.exists() and from_ts > 0:
                tmp = target.with_name(target.name + ".tmp")
                concat_videos([(target, from_ts), (ep_mp4, duration_s)], tmp, self.fps)
            else:
                from_ts = 0.0
                tmp = ep_mp4
            renames.append((tmp, target))
            row.update(
                {
                    f"videos/{k}/chunk_index": chunk,
                    f"videos/{k}/file_index": file,
                    f"videos/{k}/from_timestamp": from_ts,
                    f"videos/{k}/to_timestamp": from_ts + duration_s,
                }
            )
        for k in self.features:
            if k in ep_stats:
                for s in S.STAT_NAMES:
                    row[f"stats/{k}/{s}"] = np.asarray(ep_stats[k][s]).tolist()
        row["vlastack/extra"] = json.dumps(extra, default=_json_default) if extra else None
        # -- episodes metadata
        ep_chunk, ep_file = (
            (prev["meta/episodes/chunk_index"], prev["meta/episodes/file_index"])
            if prev
            else (0, 0)
        )
        ep_path = self.root / EPISODES_PATH.format(chunk_index=ep_chunk, file_index=ep_file)
        if prev and ep_path.exists() and ep_path.stat().st_size >= data_limit:
            ep_chunk, ep_file = _next_file(ep_chunk, ep_file, int(self.info["chunks_size"]))
            ep_path = self.root / EPISODES_PATH.format(chunk_index=ep_chunk, file_index=ep_file)
        row["meta/episodes/chunk_index"] = ep_chunk
        row["meta/episodes/file_index"] = ep_file
        same_file = [
            r
            for r in self._rows
            if (r["meta/episodes/chunk_index"], r["meta/episodes/file_index"])
            == (ep_chunk, ep_file)
        ]
        renames.append((self._write_episodes_file(ep_path, [*same_file, row]), ep_path))
        # -- tasks, stats, info (info last: it is the commit point)
        tasks_path = self.root / "meta" / "tasks.parquet"
        renames.append((self._write_table(tasks_path, _tasks_table(self.tasks)), tasks_path))
        all_stats = S.aggregate_stats([*self._ep_stats, ep_stats])
        stats_path = self.root / "meta" / "stats.json"
        renames.append(
            (_atomic_write_bytes(stats_path, _json_bytes(S.stats_to_json(all_stats))), stats_path)
        )
        info = dict(self.info)
        info.update(
            total_episodes=ep_index + 1,
            total_frames=start + length,
            total_tasks=len(self.tasks),
            splits={"train": f"0:{ep_index + 1}"},
        )
        info_path = self.root / "meta" / "info.json"
        renames.append((_atomic_write_bytes(info_path, _json_bytes(info)), info_path))
        for tmp, final in renames:
            os.replace(tmp, final)
        self.info = info
        self._rows.append(row)
        self._ep_stats.append(ep_stats)
        self.clear_episode()
        return ep_index

    def _episode_table(
        self, columns: dict[str, np.ndarray], images: dict[str, np.ndarray]
    ) -> pa.Table:
        arrays: dict[str, pa.Array] = {}
        for k, f in self.features.items():
            if f.dtype == "video":
                continue
            typ = _arrow_type(f)
            if f.dtype == "image":
                png = [self._png.encode(im) for im in images[k]]
                arrays[k] = pa.array([{"bytes": b, "path": None} for b in png], typ)
            elif f.dtype == "string":
                arrays[k] = pa.array([str(x) for x in columns[k]], typ)
            elif pa.types.is_fixed_size_list(typ):
                flat = pa.array(np.ascontiguousarray(columns[k]).reshape(-1), typ.value_type)
                arrays[k] = pa.FixedSizeListArray.from_arrays(flat, f.shape[0])
            else:
                arrays[k] = pa.array(columns[k].reshape(-1), typ)
        hf = {"info": {"features": {k: _hf_feature(self.features[k]) for k in arrays}}}
        return pa.table(arrays).replace_schema_metadata({"huggingface": json.dumps(hf)})

    def _write_data_file(self, path: Path, table: pa.Table, committed_frames: int) -> Path:
        """Temp file = committed rows already in ``path`` (one row group per episode) + ``table``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with pq.ParquetWriter(tmp, table.schema) as w:
            if path.exists():
                pf = pq.ParquetFile(path)
                for i in range(pf.num_row_groups):
                    rg = pf.read_row_group(i)
                    keep = pc.less(rg["index"], committed_frames)
                    rg = rg.filter(keep)
                    if rg.num_rows:
                        w.write_table(rg.replace_schema_metadata(table.schema.metadata))
            w.write_table(table)
        return tmp

    def _write_episodes_file(self, path: Path, rows: list[dict[str, Any]]) -> Path:
        fields: list[tuple[str, pa.DataType]] = [
            ("episode_index", pa.int64()),
            ("tasks", pa.list_(pa.string())),
            ("length", pa.int64()),
            ("data/chunk_index", pa.int64()),
            ("data/file_index", pa.int64()),
            ("dataset_from_index", pa.int64()),
            ("dataset_to_index", pa.int64()),
        ]
        for k in self.video_keys:
            fields += [
                (f"videos/{k}/chunk_index", pa.int64()),
                (f"videos/{k}/file_index", pa.int64()),
                (f"videos/{k}/from_timestamp", pa.float64()),
                (f"videos/{k}/to_timestamp", pa.float64()),
            ]
        for k, f in self.features.items():
            if f.dtype != "string":
                fields += [(f"stats/{k}/{s}", _stats_type(f, s)) for s in S.STAT_NAMES]
        fields += [
            ("meta/episodes/chunk_index", pa.int64()),
            ("meta/episodes/file_index", pa.int64()),
            ("vlastack/extra", pa.string()),
        ]
        schema = pa.schema(fields)
        table = pa.table(
            {name: pa.array([r.get(name) for r in rows], typ) for name, typ in fields},
            schema=schema,
        )
        return self._write_table(path, table)

    @staticmethod
    def _write_table(path: Path, table: pa.Table) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        pq.write_table(table, tmp)
        return tmp

    # ---- finish ---------------------------------------------------------------------------
    def finalize(self) -> None:
        """Refresh meta/stats.json and meta/info.json; drops (with a warning) unsaved frames."""
        if self._frame_tasks:
            warnings.warn(
                f"{self.root}: dropping {len(self._frame_tasks)} frames that were never saved "
                "(call save_episode before finalize to keep them)",
                stacklevel=2,
            )
            self.clear_episode()
        meta = self.root / "meta"
        if self._ep_stats:
            stats = S.aggregate_stats(self._ep_stats)
            os.replace(
                _atomic_write_bytes(meta / "stats.json", _json_bytes(S.stats_to_json(stats))),
                meta / "stats.json",
            )
        os.replace(
            _atomic_write_bytes(meta / "info.json", _json_bytes(self.info)), meta / "info.json"
        )
        shutil.rmtree(self.root / ".staging", ignore_errors=True)
        self._closed = True

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._frame_tasks:
            self.clear_episode()
        if not self._closed:
            self.finalize()


def _json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(
        f"save_episode(extra=...) value of type {type(x).__name__} is not JSON-serialisable"
    )


# ---------------------------------------------------------------------------------------------
# Reader
# ---------------------------------------------------------------------------------------------
class DatasetReader:
    """Random access to a LeRobot v3 dataset; trusts only what meta/info.json has committed.

    Non-image columns are loaded into memory as numpy arrays (row i = global frame index i);
    camera frames are decoded on demand. Reading never writes anything under ``root``.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        video_backend: str = "pyav",
        tolerance_s: float = 1e-4,
        verify_videos: bool = True,
    ) -> None:
        if video_backend != "pyav":
            raise DataError(f"video_backend={video_backend!r} is not supported; use 'pyav'")
        self.root = Path(root)
        self.info = _read_info(self.root)
        self.fps = float(self.info["fps"])
        self.tolerance_s = tolerance_s
        self.features = {
            k: Feature.from_json(v, f"{self.root}/meta/info.json features[{k!r}]")
            for k, v in self.info["features"].items()
        }
        self.camera_keys = [k for k, f in self.features.items() if f.is_camera]
        self.video_keys = [k for k in self.camera_keys if self.features[k].dtype == "video"]
        self.num_episodes = int(self.info["total_episodes"])
        self.num_frames = int(self.info["total_frames"])
        self.tasks = self._load_tasks()
        rows = _load_episode_rows(self.root, self.num_episodes)
        self._episodes = [_episode_from_row(r, self.camera_keys, self.video_keys) for r in rows]
        self._ep_stats_rows = rows
        self.embodiment: EmbodimentSpec | None = None
        self.stats_stale = False  # meta/stats.json counted uncommitted frames (see _load_stats)
        emb = self.root / "meta" / "embodiment.json"
        if emb.exists():
            self.embodiment = EmbodimentSpec.load(emb)
        self.stats = self._load_stats()
        self._columns: dict[str, np.ndarray] = {}
        self._images: dict[str, pa.ChunkedArray] = {}
        self._load_data()
        # (N,) episode index of every frame, for O(1) lookups.
        self.frame_episode = np.empty(self.num_frames, dtype=np.int64)
        for ep in self._episodes:
            self.frame_episode[ep.dataset_from_index : ep.dataset_to_index] = ep.index
        self._decoder = VideoDecoder(tolerance_s=tolerance_s)
        self._png = PngCodec()
        if verify_videos:
            self._verify_videos()

    # ---- loading --------------------------------------------------------------------------
    def _load_tasks(self) -> list[str]:
        path = self.root / "meta" / "tasks.parquet"
        if not path.exists() and self.num_episodes == 0:
            return []
        tasks = self._read_tasks(path)
        # Tasks only grow; ones beyond info.json's total_tasks belong to an uncommitted episode.
        committed = self.info.get("total_tasks")
        if isinstance(committed, int) and 0 <= committed < len(tasks):
            tasks = tasks[:committed]
        return tasks

    def _read_tasks(self, path: Path) -> list[str]:
        t = _read_parquet(path)
        if "task_index" not in t.column_names or "task" not in t.column_names:
            raise DataError(
                f"{path}: expected columns task_index and task, got {t.column_names}; restore it"
            )
        pairs = sorted(zip(t["task_index"].to_pylist(), t["task"].to_pylist()))
        if [i for i, _ in pairs] != list(range(len(pairs))):
            raise DataError(f"{path}: task_index values are not 0..{len(pairs) - 1}; restore it")
        return [s for _, s in pairs]

    def _load_stats(self) -> dict[str, S.Stats]:
        path = self.root / "meta" / "stats.json"
        if not path.exists():
            return {}
        try:
            stats = S.stats_from_json(json.loads(path.read_text()), str(path))
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{path}: not valid JSON ({exc}); recompute with vlastack.data.stats.compute_stats"
            ) from None
        return self._committed_stats(stats)

    def _committed_stats(self, stats: dict[str, S.Stats]) -> dict[str, S.Stats]:
        """stats.json is renamed into place just before info.json commits an episode, so a
        writer killed between the two leaves stats that count frames info.json never committed.
        Those are replaced by the aggregate of the committed episodes' own stats (what the
        writer would have written); ``stats_stale`` says so (the doctor reports it)."""
        keys = [
            k
            for k, f in self.features.items()
            if not f.is_camera and f.dtype != "string" and "count" in stats.get(k, {})
        ]
        counts = {int(np.asarray(stats[k]["count"]).reshape(-1)[0]) for k in keys}
        if not counts or counts == {self.num_frames}:
            return stats
        per_episode = [_stats_from_row(r, self.features) for r in self._ep_stats_rows]
        agg = S.aggregate_stats(per_episode) if all(per_episode) else {}
        if not all(
            int(np.asarray(agg[k]["count"]).reshape(-1)[0]) == self.num_frames
            for k in keys
            if k in agg
        ):
            return stats  # not the crash signature (stats computed some other way): keep them
        self.stats_stale = True
        return agg

    def _load_data(self) -> None:
        files = sorted({ep.data_file for ep in self._episodes})
        tables = []
        for chunk, file in files:
            path = self.root / DATA_PATH.format(chunk_index=chunk, file_index=file)
            t = _read_parquet(path)
            for k, f in self.features.items():
                if f.dtype != "video" and k not in t.column_names:
                    raise DataError(
                        f"{path}: column {k!r} declared in meta/info.json is missing; restore the file"
                    )
            t = t.filter(pc.less(t["index"], self.num_frames))
            tables.append(t.select([k for k, f in self.features.items() if f.dtype != "video"]))
        if not tables:
            for k, f in self.features.items():
                if not f.is_camera and f.dtype != "string":
                    self._columns[k] = np.zeros((0, *f.shape), dtype=_np_dtype(f))
            return
        data = pa.concat_tables(tables)
        index = data["index"].to_numpy()
        if len(index) != self.num_frames or not np.array_equal(
            np.sort(index), np.arange(self.num_frames)
        ):
            raise DataError(
                f"{self.root / 'data'}: holds {len(index)} frames with index values that are not "
                f"0..{self.num_frames - 1} as meta/info.json total_frames={self.num_frames} says; the "
                "data files and metadata disagree, restore them or re-record"
            )
        order = np.argsort(index, kind="stable")
        if not np.array_equal(order, np.arange(len(order))):
            data = data.take(pa.array(order))
        ep_col = data["episode_index"].to_numpy()
        for ep in self._episodes:
            got = ep_col[ep.dataset_from_index : ep.dataset_to_index]
            if ep.dataset_to_index - ep.dataset_from_index != ep.length or not np.all(
                got == ep.index
            ):
                raise DataError(
                    f"{self.root}: episode {ep.index} has length {ep.length} in meta/episodes but its "
                    f"data rows {ep.dataset_from_index}..{ep.dataset_to_index} do not all belong to it "
                    "(mismatched frame counts); restore the data files or re-record the episode"
                )
        for k, f in self.features.items():
            if f.dtype == "video":
                continue
            col = data[k]
            if f.dtype == "image":
                self._images[k] = col.combine_chunks().field("bytes")
            elif f.dtype == "string":
                self._columns[k] = np.asarray(col.to_pylist(), dtype=object)
            elif pa.types.is_fixed_size_list(col.type) or pa.types.is_list(col.type):
                flat = pc.list_flatten(col).to_numpy()
                self._columns[k] = flat.reshape(len(data), *f.shape).astype(
                    _np_dtype(f), copy=False
                )
            else:
                self._columns[k] = col.to_numpy().astype(_np_dtype(f), copy=False)

    def _verify_videos(self) -> None:
        ends: dict[Path, tuple[str, float]] = {}
        for ep in self._episodes:
            for k in self.video_keys:
                p = self.video_path(k, ep.index)
                end = ep.video_to_timestamp[k]
                if end > ends.get(p, ("", -1.0))[1]:
                    ends[p] = (k, end)
        for p, (k, end) in ends.items():
            _, _, duration_s = probe_video(p)
            # The last frame starts at end - 1/fps; a shorter video cannot serve it.
            if duration_s + 0.5 / self.fps < end:
                raise DataError(
                    f"{p}: video of {k!r} lasts {duration_s:.3f} s but meta/episodes says episodes "
                    f"run to {end:.3f} s (mismatched frame counts or a truncated file); restore or "
                    "re-encode it"
                )

    # ---- access ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.num_frames

    def episode(self, i: int) -> EpisodeInfo:
        if not 0 <= i < self.num_episodes:
            raise DataError(
                f"{self.root}: episode {i} does not exist; valid episodes are 0..{self.num_episodes - 1}"
            )
        return self._episodes[i]

    @property
    def episodes(self) -> list[EpisodeInfo]:
        return list(self._episodes)

    def episode_stats(self, i: int) -> dict[str, S.Stats]:
        self.episode(i)
        return _stats_from_row(self._ep_stats_rows[i], self.features)

    def column(self, key: str) -> np.ndarray:
        """All frames of a non-image feature, shape (N, *shape) (scalars (N,))."""
        if key not in self._columns:
            raise DataError(
                f"{self.root}: no non-image feature {key!r}; available: {sorted(self._columns)}"
            )
        col = self._columns[key]
        return col.reshape(-1) if self.features[key].shape == (1,) else col

    def task_of(self, global_index: int) -> str:
        return self.tasks[int(self._columns["task_index"][global_index])]

    def video_path(self, camera_key: str, episode_index: int) -> Path:
        ep = self._episodes[episode_index]
        chunk, file = ep.video_file[camera_key]
        return self.root / VIDEO_PATH.format(
            video_key=camera_key, chunk_index=chunk, file_index=file
        )

    def frame(self, global_index: int) -> dict[str, Any]:
        """Non-image features as numpy, images uint8 (H, W, C) and the task string."""
        if not 0 <= global_index < self.num_frames:
            raise DataError(
                f"{self.root}: frame {global_index} does not exist; valid 0..{self.num_frames - 1}"
            )
        out: dict[str, Any] = {}
        for k in self._columns:
            out[k] = self.column(k)[global_index]
        ep = int(self.frame_episode[global_index])
        fi = global_index - self._episodes[ep].dataset_from_index
        for k in self.camera_keys:
            out[k] = self.decode_frames(k, ep, [fi])[0]
        out["task"] = self.task_of(global_index)
        return out

    def decode_frames(self, camera_key: str, episode_index: int, frame_indices: Any) -> np.ndarray:
        """Frames (N, H, W, C) uint8 of one camera at frame indices within an episode."""
        if camera_key not in self.camera_keys:
            raise DataError(
                f"{self.root}: {camera_key!r} is not a camera; cameras: {self.camera_keys}"
            )
        ep = self.episode(episode_index)
        idx = np.asarray(frame_indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= ep.length):
            raise DataError(
                f"{self.root}: frame indices {idx.tolist()} outside episode {episode_index} (length {ep.length})"
            )
        rows = ep.dataset_from_index + idx
        if self.features[camera_key].dtype == "image":
            c = self.features[camera_key].shape[2]
            col = self._images[camera_key]
            return np.stack(
                [
                    self._png.decode(
                        col[int(r)].as_py(), c, f"{self.root} {camera_key} frame {int(r)}"
                    )
                    for r in rows
                ]
            )
        ts = ep.video_from_timestamp[camera_key] + self._columns["timestamp"][rows].astype(
            np.float64
        )
        return self._decoder.decode(self.video_path(camera_key, episode_index), ts)
