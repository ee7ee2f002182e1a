"""Append episodes to a LeRobot v3.0 dataset (layout in ``vlastack.data.layout``).

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
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vlastack.atomic import staged_path
from vlastack.data import stats as S
from vlastack.data.layout import (
    CHUNKS_SIZE,
    CODEBASE_VERSION,
    DATA_PATH,
    DEFAULT_FEATURES,
    DTYPES,
    EPISODES_PATH,
    VIDEO_PATH,
    Feature,
    arrow_type,
    hf_feature,
    json_bytes,
    load_episode_rows,
    next_file,
    np_dtype,
    read_info,
    stats_from_row,
    stats_type,
    tasks_table,
)
from vlastack.data.reader import DatasetReader
from vlastack.data.video import (
    CODEC_FAMILY,
    PngCodec,
    VideoSettings,
    concat_videos,
    encode_video,
    pick_video_encoder,
)
from vlastack.embodiment import EmbodimentSpec
from vlastack.errors import DataError

_MB = 1024 * 1024


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
        self._ep_stats = [stats_from_row(r, self.features) for r in episode_rows]
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
        _replace_bytes(root / "meta" / "info.json", json_bytes(info))
        return writer

    @classmethod
    def resume(cls, root: str | Path) -> DatasetWriter:
        """Reopen a dataset to append episodes; trims anything a crash left uncommitted."""
        root = Path(root)
        info = read_info(root)
        reader = DatasetReader(root, verify_videos=False)
        rows = load_episode_rows(root, int(info["total_episodes"]))
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
        want = np_dtype(f)
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
            chunk, file = next_file(chunk, file, int(self.info["chunks_size"]))
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
                chunk, file = next_file(chunk, file, int(self.info["chunks_size"]))
                target = self.root / VIDEO_PATH.format(
                    video_key=k, chunk_index=chunk, file_index=file
                )
                from_ts = 0.0
            target.parent.mkdir(parents=True, exist_ok=True)
            if prev and target.exists() and from_ts > 0:
                tmp = staged_path(target)
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
            ep_chunk, ep_file = next_file(ep_chunk, ep_file, int(self.info["chunks_size"]))
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
        renames.append((self._write_table(tasks_path, tasks_table(self.tasks)), tasks_path))
        all_stats = S.aggregate_stats([*self._ep_stats, ep_stats])
        stats_path = self.root / "meta" / "stats.json"
        renames.append(
            (_stage_bytes(stats_path, json_bytes(S.stats_to_json(all_stats))), stats_path)
        )
        info = dict(self.info)
        info.update(
            total_episodes=ep_index + 1,
            total_frames=start + length,
            total_tasks=len(self.tasks),
            splits={"train": f"0:{ep_index + 1}"},
        )
        info_path = self.root / "meta" / "info.json"
        renames.append((_stage_bytes(info_path, json_bytes(info)), info_path))
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
            typ = arrow_type(f)
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
        hf = {"info": {"features": {k: hf_feature(self.features[k]) for k in arrays}}}
        return pa.table(arrays).replace_schema_metadata({"huggingface": json.dumps(hf)})

    def _write_data_file(self, path: Path, table: pa.Table, committed_frames: int) -> Path:
        """Temp file = committed rows already in ``path`` (one row group per episode) + ``table``."""
        tmp = staged_path(path)
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
                fields += [(f"stats/{k}/{s}", stats_type(f, s)) for s in S.STAT_NAMES]
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
        tmp = staged_path(path)
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
            _replace_bytes(meta / "stats.json", json_bytes(S.stats_to_json(stats)))
        _replace_bytes(meta / "info.json", json_bytes(self.info))
        shutil.rmtree(self.root / ".staging", ignore_errors=True)
        self._closed = True

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._frame_tasks:
            self.clear_episode()
        if not self._closed:
            self.finalize()


def _stage_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to a fresh temporary sibling of ``path`` and return it (the caller renames
    it into place, in the writer's commit order)."""
    tmp = staged_path(path)
    tmp.write_bytes(data)
    return tmp


def _replace_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` whole (one staged file, renamed)."""
    os.replace(_stage_bytes(path, data), path)


def _json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(
        f"save_episode(extra=...) value of type {type(x).__name__} is not JSON-serialisable"
    )
