"""Random access to a LeRobot v3.0 dataset (layout in ``vlastack.data.layout``).

The reader trusts only what ``meta/info.json`` has committed (``DatasetWriter`` renames it into
place last): episode rows, data rows, video time and tasks beyond its totals are ignored, and a
``stats.json`` that counts uncommitted frames is replaced by the committed episodes' stats.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vlastack.data import stats as S
from vlastack.data.layout import (
    DATA_PATH,
    VIDEO_PATH,
    EpisodeInfo,
    Feature,
    episode_from_row,
    load_episode_rows,
    np_dtype,
    read_info,
    read_parquet,
    stats_from_row,
)
from vlastack.data.video import PngCodec, make_video_decoder, probe_video
from vlastack.embodiment import EmbodimentSpec
from vlastack.errors import DataError


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
        """``video_backend``: ``pyav`` (default) or ``torchcodec`` (opt-in, needs the
        ``vlastack[torchcodec]`` extra); both give the same frames (``data/video_torchcodec.py``)."""
        self.root = Path(root)
        # first, so a missing torchcodec is reported before any file is read
        self._decoder = make_video_decoder(video_backend, tolerance_s)
        self.video_backend = video_backend
        self.info = read_info(self.root)
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
        rows = load_episode_rows(self.root, self.num_episodes)
        self._episodes = [episode_from_row(r, self.camera_keys, self.video_keys) for r in rows]
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
        t = read_parquet(path)
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
        per_episode = [stats_from_row(r, self.features) for r in self._ep_stats_rows]
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
            t = read_parquet(path)
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
                    self._columns[k] = np.zeros((0, *f.shape), dtype=np_dtype(f))
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
                per_row = int(np.prod(f.shape)) if f.shape else 1
                if flat.size != len(data) * per_row:
                    raise DataError(
                        f"{self.root}/meta/info.json: feature {k!r} declares shape "
                        f"{list(f.shape)} ({per_row} values per frame), but the data files hold "
                        f"{flat.size / max(1, len(data)):g} per frame; fix the shape in "
                        "info.json (or re-record the dataset)"
                    )
                self._columns[k] = flat.reshape(len(data), *f.shape).astype(np_dtype(f), copy=False)
            else:
                self._columns[k] = col.to_numpy().astype(np_dtype(f), copy=False)

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
        return stats_from_row(self._ep_stats_rows[i], self.features)

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

    def decode_frames(
        self,
        camera_key: str,
        episode_index: int,
        frame_indices: Any,
        *,
        channels_first: bool = False,
    ) -> np.ndarray:
        """Frames (N, H, W, C) uint8 of one camera at frame indices within an episode;
        ``channels_first``: (N, C, H, W), contiguous or a strided view."""
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
            imgs = np.stack(
                [
                    self._png.decode(
                        col[int(r)].as_py(), c, f"{self.root} {camera_key} frame {int(r)}"
                    )
                    for r in rows
                ]
            )
            return imgs.transpose(0, 3, 1, 2) if channels_first else imgs
        ts = ep.video_from_timestamp[camera_key] + self._columns["timestamp"][rows].astype(
            np.float64
        )
        return self._decoder.decode(
            self.video_path(camera_key, episode_index), ts, channels_first=channels_first
        )
