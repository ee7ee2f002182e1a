"""Dataset doctor and explainer: integrity checks with fixes, and a plain description of I/O.

``diagnose(path)`` checks frame counts against timestamps and videos, NaNs, constant or static
episodes, action jumps, gripper statistics and instruction diversity, and returns findings that
each say what to fix. ``describe(path)`` explains features, units, action semantics, image sizes
and orientation (USERS.md #2-#3: silent data problems are what users lose most time to).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vlastack.errors import DataError

Level = Literal["error", "warning", "info"]
STATE, ACTION = "observation.state", "action"
TIMESTAMP_TOL_S = 1e-4  # LeRobot's default tolerance_s


@dataclass
class Finding:
    level: Level
    check: str
    message: str
    fix: str = ""
    episodes: list[int] = field(default_factory=list)


@dataclass
class DoctorReport:
    path: str
    summary: dict[str, Any] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    checks_run: list[str] = field(default_factory=list)

    def add(
        self, level: Level, check: str, message: str, fix: str = "", episodes: Any = ()
    ) -> None:
        self.findings.append(Finding(level, check, message, fix, [int(e) for e in episodes]))

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "ok": self.ok,
            "num_errors": len(self.errors),
            "num_warnings": len(self.warnings),
            "summary": self.summary,
            "checks_run": self.checks_run,
            "findings": [asdict(f) for f in self.findings],
        }


def _episodes_str(eps: list[int], limit: int = 8) -> str:
    if not eps:
        return ""
    shown = ", ".join(str(e) for e in eps[:limit])
    return f" (episodes {shown}{', …' if len(eps) > limit else ''})"


def _open(path: str | Path) -> Any:
    from vlastack.data.reader import DatasetReader

    return DatasetReader(path)


def _episode_bounds(reader: Any) -> list[tuple[int, int, int]]:
    """[(episode index, from, to)] in global frame rows."""
    out = []
    for i in range(reader.num_episodes):
        ep = reader.episode(i)
        out.append((int(ep.index), int(ep.dataset_from_index), int(ep.dataset_to_index)))
    return out


def _gripper_index(reader: Any) -> int | None:
    spec = reader.embodiment
    if spec is not None and spec.action.gripper_index is not None:
        return int(spec.action.gripper_index)
    feat = reader.features.get(ACTION)
    names = list(getattr(feat, "names", None) or [])
    for i, n in enumerate(names):
        if isinstance(n, str) and "grip" in n.lower():
            return i
    return None


def _norm_task(t: str) -> str:
    return re.sub(r"[^a-z0-9 ]", "", " ".join(t.lower().split()))


def diagnose(
    path: str | Path,
    *,
    jump_k: float = 4.0,
    static_tol: float = 1e-6,
    video_episodes: int = 20,
) -> DoctorReport:
    """Run every check on the dataset at ``path``; never modifies it.

    ``jump_k``: a step change of one action dim larger than ``jump_k`` × that dim's std over the
    dataset is a jump. ``video_episodes``: how many episodes (evenly spread) get their first and
    last video frames decoded per camera.
    """
    report = DoctorReport(str(path))
    try:
        reader = _open(path)
    except DataError as exc:
        report.checks_run.append("load")
        report.add("error", "load", str(exc), "fix the named file, then rerun the doctor")
        return report
    report.checks_run.append("load")
    n_ep, n_frames, fps = int(reader.num_episodes), int(reader.num_frames), float(reader.fps)
    report.summary = {
        "episodes": n_ep,
        "frames": n_frames,
        "fps": fps,
        "duration_s": round(n_frames / fps, 3) if fps else None,
        "cameras": list(reader.camera_keys),
        "robot_type": reader.info.get("robot_type"),
    }
    if n_ep == 0:
        report.add("error", "episodes", "the dataset holds no episodes", "record or convert data")
        return report
    bounds = _episode_bounds(reader)
    _check_frames(reader, report, bounds, fps)
    _check_videos(reader, report, bounds, video_episodes)
    action = _check_vectors(reader, report, bounds, static_tol)
    if action is not None:
        _check_jumps(reader, report, bounds, action, jump_k)
        _check_gripper(reader, report, bounds, action)
    _check_tasks(reader, report, bounds)
    _check_meta(reader, report)
    return report


def _check_frames(reader: Any, report: DoctorReport, bounds: list, fps: float) -> None:
    report.checks_run.append("frame_counts")
    lengths = [to - fr for _, fr, to in bounds]
    declared = int(reader.info.get("total_frames", sum(lengths)))
    if sum(lengths) != declared or reader.num_frames != declared:
        report.add(
            "error",
            "frame_counts",
            f"meta/info.json says total_frames={declared}, the episodes sum to {sum(lengths)} "
            f"and the data files hold {reader.num_frames} rows",
            "the dataset was not finalized or was edited by hand; re-convert or re-record it",
        )
    expected_from = 0
    gaps = []
    for ep, fr, to in bounds:
        if fr != expected_from:
            gaps.append(ep)
        expected_from = to
    if gaps:
        report.add(
            "error",
            "frame_counts",
            "episode row ranges overlap or leave gaps" + _episodes_str(gaps),
            "meta/episodes is inconsistent with the data files; re-convert the dataset",
            gaps,
        )
    features = reader.features
    if "frame_index" not in features or "timestamp" not in features:
        return
    report.checks_run.append("timestamps")
    fi = np.asarray(reader.column("frame_index")).reshape(-1)
    ts = np.asarray(reader.column("timestamp"), dtype=np.float64).reshape(-1)
    bad_fi, bad_ts, worst = [], [], 0.0
    for ep, fr, to in bounds:
        want = np.arange(to - fr)
        if fi[fr:to].shape != want.shape or not np.array_equal(fi[fr:to], want):
            bad_fi.append(ep)
            continue
        err = np.abs(ts[fr:to] - want / fps)
        if err.size and float(err.max()) > TIMESTAMP_TOL_S:
            bad_ts.append(ep)
            worst = max(worst, float(err.max()))
    if bad_fi:
        report.add(
            "error",
            "timestamps",
            "frame_index does not run 0..length-1" + _episodes_str(bad_fi),
            "frames were dropped or reordered; re-record or re-convert these episodes",
            bad_fi,
        )
    if bad_ts:
        report.add(
            "error",
            "timestamps",
            f"timestamps differ from frame_index/fps ({fps:g} Hz) by up to {worst:.4g} s"
            + _episodes_str(bad_ts),
            "the recording dropped frames or fps in meta/info.json is wrong; fix fps or resample",
            bad_ts,
        )


def _check_videos(reader: Any, report: DoctorReport, bounds: list, max_episodes: int) -> None:
    cams = list(reader.camera_keys)
    if not cams:
        return
    report.checks_run.append("videos")
    picks = np.unique(np.linspace(0, len(bounds) - 1, min(max_episodes, len(bounds))).astype(int))
    sizes: dict[str, Any] = {}
    for cam in cams:
        feat = reader.features[cam]
        want = tuple(int(s) for s in feat.shape)
        bad: list[int] = []
        msgs: list[str] = []
        for i in picks.tolist():
            ep, fr, to = bounds[i]
            try:
                frames = reader.decode_frames(cam, i, np.array([0, to - fr - 1]))
            except DataError as exc:
                bad.append(ep)
                msgs.append(str(exc))
                continue
            if tuple(frames.shape[1:]) != want:
                bad.append(ep)
                msgs.append(f"decoded frames are {frames.shape[1:]} but the feature says {want}")
        sizes[cam] = {"shape": list(want), "checked_episodes": len(picks)}
        if bad:
            report.add(
                "error",
                "videos",
                f"{cam}: frames cannot be decoded at the episode's timestamps"
                + _episodes_str(bad)
                + f": {msgs[0]}",
                "the video is missing, truncated or shorter than the episode; restore it or "
                "re-encode this camera",
                bad,
            )
    report.summary["images"] = sizes


def _check_vectors(
    reader: Any, report: DoctorReport, bounds: list, static_tol: float
) -> np.ndarray | None:
    report.checks_run.append("finite_values")
    action: np.ndarray | None = None
    for key in (STATE, ACTION):
        if key not in reader.features:
            if key == ACTION:
                report.add(
                    "error",
                    "features",
                    f"no {key!r} feature; features: {sorted(reader.features)}",
                    "a policy dataset needs actions; re-convert with --action-key",
                )
            continue
        x = np.asarray(reader.column(key), dtype=np.float64)
        x = x.reshape(len(x), -1)
        if key == ACTION:
            action = x
        nonfinite = ~np.isfinite(x)
        if nonfinite.any():
            eps = [ep for ep, fr, to in bounds if nonfinite[fr:to].any()]
            dims = sorted(set(np.nonzero(nonfinite)[1].tolist()))
            report.add(
                "error",
                "finite_values",
                f"{key}: {int(nonfinite.sum())} NaN/inf values in dims {dims}" + _episodes_str(eps),
                "drop these episodes or fix the source data, then recompute stats "
                "(`vlastack data stats PATH --write`)",
                eps,
            )
    report.checks_run.append("static_episodes")
    if action is not None:
        const = []
        for ep, fr, to in bounds:
            seg = action[fr:to]
            if (
                to - fr > 1
                and np.all(np.isfinite(seg))
                and np.all(np.ptp(seg, axis=0) <= static_tol)
            ):
                const.append(ep)
        if const:
            report.add(
                "warning",
                "static_episodes",
                "action is constant over the whole episode" + _episodes_str(const),
                "these are usually idle or failed recordings; drop them or check the recorder",
                const,
            )
        all_dims = np.ptp(action[np.all(np.isfinite(action), axis=1)], axis=0)
        dead = [int(i) for i in np.flatnonzero(all_dims <= static_tol)]
        if dead and len(dead) < action.shape[1]:
            report.add(
                "info",
                "static_dims",
                f"action dims {dead} never change in the whole dataset",
                "normalization gives them scale 1; drop them if they are unused",
            )
    if STATE in reader.features:
        state = np.asarray(reader.column(STATE), dtype=np.float64)
        state = state.reshape(len(state), -1)
        still = [
            ep
            for ep, fr, to in bounds
            if to - fr > 1
            and np.all(np.isfinite(state[fr:to]))
            and np.all(np.ptp(state[fr:to], axis=0) <= static_tol)
        ]
        if still:
            report.add(
                "warning",
                "static_episodes",
                "observation.state never changes (the robot did not move)" + _episodes_str(still),
                "drop these episodes or check that state is recorded from the robot",
                still,
            )
    return action


def _check_jumps(
    reader: Any, report: DoctorReport, bounds: list, action: np.ndarray, jump_k: float
) -> None:
    report.checks_run.append("action_jumps")
    finite = np.all(np.isfinite(action), axis=1)
    std = action[finite].std(axis=0) if finite.any() else np.zeros(action.shape[1])
    grip = _gripper_index(reader)
    dims = [d for d in range(action.shape[1]) if d != grip and std[d] > 0]
    if not dims:
        return
    hits: list[int] = []
    worst = (0.0, -1, -1, -1)  # (size in std, episode, frame, dim)
    n_jumps = 0
    for ep, fr, to in bounds:
        seg = action[fr:to][:, dims]
        if len(seg) < 2 or not np.all(np.isfinite(seg)):
            continue
        step = np.abs(np.diff(seg, axis=0)) / std[dims]
        mask = step > jump_k
        if mask.any():
            hits.append(ep)
            n_jumps += int(mask.sum())
            t, j = np.unravel_index(int(np.argmax(step)), step.shape)
            if step[t, j] > worst[0]:
                worst = (float(step[t, j]), ep, int(t) + 1, dims[j])
    report.summary["action_jumps"] = {"count": n_jumps, "k_std": jump_k}
    if hits:
        report.add(
            "warning",
            "action_jumps",
            f"{n_jumps} one-step action changes larger than {jump_k:g}x the dim's std"
            + _episodes_str(hits)
            + f"; largest {worst[0]:.1f} std at episode {worst[1]} frame {worst[2]} dim {worst[3]}",
            "look at these frames: teleoperation glitches or wrapped angles; fix, drop or smooth "
            "them (raise --jump-k if the motion is meant to be abrupt)",
            hits,
        )


def _check_gripper(reader: Any, report: DoctorReport, bounds: list, action: np.ndarray) -> None:
    g = _gripper_index(reader)
    if g is None or g >= action.shape[1]:
        return
    report.checks_run.append("gripper")
    x = action[:, g]
    x = x[np.isfinite(x)]
    if x.size == 0:
        return
    lo, hi = float(x.min()), float(x.max())
    mid = (lo + hi) / 2
    closed = action[:, g] > mid
    toggles = [int(np.count_nonzero(np.diff(closed[fr:to]))) for _, fr, to in bounds]
    near_binary = (
        float(np.mean((np.abs(x - lo) < 0.05 * (hi - lo)) | (np.abs(x - hi) < 0.05 * (hi - lo))))
        if hi > lo
        else 1.0
    )
    report.summary["gripper"] = {
        "dim": g,
        "min": lo,
        "max": hi,
        "fraction_high": float(np.mean(closed)),
        "mean_toggles_per_episode": float(np.mean(toggles)),
        "fraction_near_binary": near_binary,
    }
    if hi - lo <= 1e-6:
        report.add(
            "warning",
            "gripper",
            f"gripper action (dim {g}) is constant {lo:g} in every episode",
            "the gripper command was not recorded; check the recorder or the gripper_index",
        )
        return
    never = [ep for (ep, _, _), t in zip(bounds, toggles) if t == 0]
    if never and len(never) == len(bounds):
        report.add(
            "warning",
            "gripper",
            f"the gripper (dim {g}) never opens or closes inside an episode",
            "check the gripper_index in meta/embodiment.json",
        )
    elif never and len(never) > len(bounds) // 2:
        report.add(
            "info",
            "gripper",
            f"the gripper (dim {g}) does not change in {len(never)} of {len(bounds)} episodes"
            + _episodes_str(never),
            "fine for tasks without grasping; otherwise check these episodes",
            never,
        )


def _check_tasks(reader: Any, report: DoctorReport, bounds: list) -> None:
    report.checks_run.append("instructions")
    per_ep: list[str] = []
    for i in range(len(bounds)):
        tasks = list(reader.episode(i).tasks or [])
        per_ep.append(tasks[0] if tasks else "")
    counts = Counter(per_ep)
    report.summary["tasks"] = {
        "unique": len(counts),
        "episodes_per_task": dict(counts.most_common()),
    }
    empty = [bounds[i][0] for i, t in enumerate(per_ep) if not t.strip()]
    if empty:
        report.add(
            "warning",
            "instructions",
            "episodes without a language instruction" + _episodes_str(empty),
            "give every episode a task string (converters take --task)",
            empty,
        )
    groups: dict[str, set[str]] = {}
    for t in counts:
        groups.setdefault(_norm_task(t), set()).add(t)
    dupes = [sorted(v) for v in groups.values() if len(v) > 1]
    if dupes:
        report.add(
            "warning",
            "instructions",
            f"instructions that differ only in case, spacing or punctuation: {dupes[:3]}",
            "normalize them so one task is not split into several",
        )
    if len(counts) == 1 and len(bounds) > 1:
        report.add(
            "info",
            "instructions",
            f"one instruction for all {len(bounds)} episodes: {per_ep[0]!r}",
            "a policy trained on this cannot learn to follow language; fine for single-task training",
        )


def _check_meta(reader: Any, report: DoctorReport) -> None:
    report.checks_run.append("stats")
    stats = reader.stats or {}
    if getattr(reader, "stats_stale", False):
        report.add(
            "warning",
            "stats",
            "meta/stats.json counts frames that meta/info.json never committed (a writer was "
            "killed while saving an episode); readers use the committed episodes' stats instead",
            "rewrite it: `DatasetWriter.resume(PATH).finalize()` (or append an episode)",
        )
    for key in (STATE, ACTION):
        if key not in reader.features:
            continue
        if key not in stats:
            report.add(
                "error",
                "stats",
                f"meta/stats.json has no entry for {key!r}",
                "recompute them: `vlastack data stats PATH --write`",
            )
            continue
        bad = [s for s, v in stats[key].items() if not np.all(np.isfinite(np.asarray(v, float)))]
        if bad:
            report.add(
                "error",
                "stats",
                f"meta/stats.json {key!r} has non-finite {bad}",
                "fix the NaN frames, then `vlastack data stats PATH --write`",
            )
    report.checks_run.append("embodiment")
    if reader.embodiment is None:
        report.add(
            "warning",
            "embodiment",
            "no meta/embodiment.json: units, action kind and gripper dim are unknown",
            "write one with vlastack.embodiment.EmbodimentSpec(...).save(PATH/'meta/embodiment.json')",
        )


# ---- info --------------------------------------------------------------------------------
def describe(path: str | Path) -> dict[str, Any]:
    """A JSON-able explanation of the dataset's inputs and outputs."""
    reader = _open(path)
    feats = {}
    for key, f in reader.features.items():
        feats[key] = {
            "dtype": f.dtype,
            "shape": list(f.shape),
            "names": list(f.names) if f.names is not None else None,
        }
    spec = reader.embodiment
    tasks: Counter[str] = Counter()
    for i in range(reader.num_episodes):
        for t in reader.episode(i).tasks or []:
            tasks[t] += 1
    fps = float(reader.fps)
    lengths = [int(reader.episode(i).length) for i in range(reader.num_episodes)]
    out: dict[str, Any] = {
        "path": str(path),
        "codebase_version": reader.info.get("codebase_version"),
        "robot_type": reader.info.get("robot_type"),
        "fps": fps,
        "episodes": int(reader.num_episodes),
        "frames": int(reader.num_frames),
        "duration_s": round(reader.num_frames / fps, 3) if fps else None,
        "episode_length": {
            "min": min(lengths, default=0),
            "mean": float(np.mean(lengths)) if lengths else 0.0,
            "max": max(lengths, default=0),
        },
        "features": feats,
        "cameras": {},
        "tasks": dict(tasks.most_common()),
        "embodiment": spec.to_dict() if spec is not None else None,
        "embodiment_text": spec.describe() if spec is not None else None,
    }
    for cam in reader.camera_keys:
        f = reader.features[cam]
        name = cam.removeprefix("observation.images.")
        orientation = "unknown (no embodiment spec)"
        if spec is not None:
            try:
                orientation = spec.camera(name).orientation
            except DataError:
                orientation = "not in embodiment spec"
        h, w = (int(f.shape[0]), int(f.shape[1])) if len(f.shape) >= 2 else (0, 0)
        out["cameras"][cam] = {
            "height": h,
            "width": w,
            "storage": f.dtype,
            "orientation": orientation,
        }
    stats = reader.stats or {}
    for key in (STATE, ACTION):
        if key in stats:
            out.setdefault("stats", {})[key] = {
                s: np.asarray(stats[key][s]).reshape(-1).tolist()
                for s in ("mean", "std", "min", "max")
                if s in stats[key]
            }
    return out
