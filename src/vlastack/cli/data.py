"""``vlastack data``: info, doctor, convert and stats for episode datasets.

``info`` explains a dataset's inputs and outputs, ``doctor`` checks its integrity and says what to
fix (exit code 1 on errors), ``convert`` imports HDF5 / zarr / RLDS episodes, ``stats`` recomputes
the normalization statistics.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from vlastack import atomic


def _keys(value: str | None) -> list[str] | None:
    """'a,b' -> ['a', 'b']; 'none' -> [] (no images); unset -> None (auto-detect)."""
    if value is None:
        return None
    if value.strip().lower() in ("", "none"):
        return []
    return [k.strip() for k in value.split(",") if k.strip()]


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "data",
        help="inspect, check, convert and recompute stats of episode datasets",
        description=__doc__,
    )
    sub = p.add_subparsers(dest="data_command", metavar="ACTION")
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])

    info = sub.add_parser("info", help="explain a dataset's features, units, cameras and tasks")
    info.add_argument("path", help="dataset root (the folder holding meta/info.json)")
    info.add_argument("--json", action="store_true", help="print JSON instead of tables")
    info.set_defaults(func=cmd_info)

    doc = sub.add_parser("doctor", help="check a dataset's integrity and say what to fix")
    doc.add_argument("path", help="dataset root")
    doc.add_argument("--json", action="store_true", help="print the report as JSON")
    doc.add_argument(
        "--jump-k",
        type=float,
        default=4.0,
        help="flag one-step action changes above K x the dim's std (default 4)",
    )
    doc.add_argument(
        "--video-episodes",
        type=int,
        default=20,
        help="episodes per camera whose first/last frames are decoded (default 20)",
    )
    doc.add_argument("--strict", action="store_true", help="exit non-zero on warnings too")
    doc.set_defaults(func=cmd_doctor)

    st = sub.add_parser("stats", help="recompute normalization statistics from the stored data")
    st.add_argument("path", help="dataset root")
    st.add_argument(
        "--write", action="store_true", help="replace meta/stats.json (otherwise only compare)"
    )
    st.add_argument(
        "--exact-quantiles",
        action="store_true",
        help="exact global quantiles for vectors instead of the per-episode aggregate",
    )
    st.add_argument("--json", action="store_true", help="print the stats as JSON")
    st.set_defaults(func=cmd_stats)

    conv = sub.add_parser("convert", help="import episodes from HDF5, zarr or RLDS")
    csub = conv.add_subparsers(dest="convert_format", metavar="FORMAT")
    conv.set_defaults(func=lambda args: (conv.print_help(), 0)[1])

    def common(c: argparse.ArgumentParser) -> None:
        c.add_argument("src", help="source file or folder")
        c.add_argument("dst", help="new dataset folder")
        c.add_argument("--fps", type=float, default=None, help="control rate of the recording")
        c.add_argument("--robot-type", default=None, help="robot name stored in the dataset")
        c.add_argument("--task", default=None, help="language instruction for every episode")
        c.add_argument(
            "--image-keys", default=None, help="comma-separated cameras; 'none' for no images"
        )
        c.add_argument(
            "--action-kind",
            choices=["absolute", "delta", "velocity"],
            default="absolute",
            help="what an action means (stored in the embodiment spec)",
        )
        c.add_argument("--images", choices=["video", "png"], default="video")
        c.add_argument("--overwrite", action="store_true", help="replace DST if it is a dataset")
        c.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    h5 = csub.add_parser("hdf5", help="robomimic / LIBERO file or ALOHA episode_*.hdf5 folder")
    common(h5)
    h5.add_argument("--layout", choices=["auto", "robomimic", "aloha"], default="auto")
    h5.add_argument("--state-keys", default=None, help="robomimic obs keys concatenated as state")
    h5.add_argument(
        "--action-key", default=None, help="default: actions (robomimic), action (ALOHA)"
    )
    h5.add_argument(
        "--filter-key", default=None, help="robomimic mask/<key> demo subset, e.g. train"
    )
    h5.set_defaults(func=cmd_convert_hdf5)

    zr = csub.add_parser("zarr", help="Diffusion Policy replay buffer (data/*, meta/episode_ends)")
    common(zr)
    zr.add_argument("--state-key", default="state")
    zr.add_argument("--action-key", default="action")
    zr.set_defaults(func=cmd_convert_zarr)

    rl = csub.add_parser("rlds", help="RLDS / Open X-Embodiment dataset folder (needs [rlds])")
    common(rl)
    rl.add_argument("--split", default="train")
    rl.add_argument("--state-key", default=None, help="observation key used as state")
    rl.add_argument("--max-episodes", type=int, default=None)
    rl.set_defaults(func=cmd_convert_rlds)


# ---- commands ----------------------------------------------------------------------------
def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False, width=110)


def cmd_info(args: argparse.Namespace) -> int:
    from vlastack.data.doctor import describe

    d = describe(args.path)
    if args.json:
        print(json.dumps(d, indent=2, default=str))
        return 0
    from rich.table import Table

    con = _console()
    con.print(f"[bold]{d['path']}[/bold]  (LeRobot {d['codebase_version']})")
    el = d["episode_length"]
    con.print(
        f"robot {d['robot_type']}  ·  {d['fps']:g} fps  ·  {d['episodes']} episodes  ·  "
        f"{d['frames']} frames ({d['duration_s']} s)  ·  episode length "
        f"{el['min']}–{el['max']} (mean {el['mean']:.1f})"
    )
    t = Table(title="features", title_justify="left")
    for col in ("key", "dtype", "shape", "names"):
        t.add_column(col)
    for key, f in d["features"].items():
        names = ", ".join(map(str, f["names"])) if f["names"] else ""
        t.add_row(key, f["dtype"], str(tuple(f["shape"])), names[:60])
    con.print(t)
    if d["cameras"]:
        t = Table(title="cameras", title_justify="left")
        for col in ("key", "height×width", "stored as", "orientation"):
            t.add_column(col)
        for key, c in d["cameras"].items():
            t.add_row(key, f"{c['height']}×{c['width']}", c["storage"], str(c["orientation"]))
        con.print(t)
    if d["embodiment_text"]:
        con.print("[bold]embodiment[/bold] (meta/embodiment.json)")
        con.print(d["embodiment_text"])
    else:
        con.print(
            "[yellow]no meta/embodiment.json[/yellow]: units, action kind (absolute/delta) "
            "and gripper dim are unknown"
        )
    if d.get("stats"):
        t = Table(title="normalization stats", title_justify="left")
        for col in ("feature", "stat", "values"):
            t.add_column(col)
        for key, st in d["stats"].items():
            for s, v in st.items():
                t.add_row(
                    key, s, " ".join(f"{x:.3g}" for x in v[:10]) + (" …" if len(v) > 10 else "")
                )
        con.print(t)
    t = Table(title=f"tasks ({len(d['tasks'])})", title_justify="left")
    t.add_column("episodes", justify="right")
    t.add_column("instruction")
    for task, n in list(d["tasks"].items())[:20]:
        t.add_row(str(n), task)
    con.print(t)
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from vlastack.data.doctor import diagnose

    report = diagnose(args.path, jump_k=args.jump_k, video_episodes=args.video_episodes)
    failed = not report.ok or (args.strict and bool(report.warnings))
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
        return 1 if failed else 0
    from rich.table import Table

    con = _console()
    s = report.summary
    con.print(f"[bold]doctor[/bold] {report.path}")
    if s:
        con.print(
            f"{s.get('episodes')} episodes · {s.get('frames')} frames · {s.get('fps')} fps · "
            f"cameras {', '.join(s.get('cameras', [])) or 'none'}"
        )
    con.print("checks: " + ", ".join(report.checks_run))
    if report.findings:
        t = Table(show_lines=True)
        t.add_column("level")
        t.add_column("check")
        t.add_column("problem", ratio=3, overflow="fold")
        t.add_column("what to do", ratio=2, overflow="fold")
        style = {"error": "[red]error[/red]", "warning": "[yellow]warning[/yellow]", "info": "info"}
        order = {"error": 0, "warning": 1, "info": 2}
        for f in sorted(report.findings, key=lambda f: order[f.level]):
            t.add_row(style[f.level], f.check, f.message, f.fix)
        con.print(t)
    if "gripper" in s:
        g = s["gripper"]
        con.print(
            f"gripper dim {g['dim']}: range [{g['min']:.3g}, {g['max']:.3g}], high "
            f"{100 * g['fraction_high']:.0f}% of frames, {g['mean_toggles_per_episode']:.1f} "
            "toggles per episode"
        )
    if "tasks" in s:
        con.print(f"{s['tasks']['unique']} distinct instructions")
    verdict = "[green]OK[/green]" if report.ok else f"[red]{len(report.errors)} error(s)[/red]"
    con.print(f"{verdict}, {len(report.warnings)} warning(s)")
    return 1 if failed else 0


def cmd_stats(args: argparse.Namespace) -> int:
    from vlastack.data.normalization import check_stats_match
    from vlastack.data.reader import DatasetReader
    from vlastack.data.stats import compute_stats, stats_to_json

    reader = DatasetReader(args.path)
    stats = compute_stats(reader, exact_quantiles=args.exact_quantiles)
    diffs = check_stats_match(
        stats, reader.stats or {}, names=("recomputed", "meta/stats.json"), rtol=1e-3, atol=1e-5
    )
    if args.write:
        path = Path(args.path) / "meta" / "stats.json"
        atomic.write_text(path, json.dumps(stats_to_json(stats), indent=4))
    if args.json:
        print(
            json.dumps({"stats": stats_to_json(stats), "differences": diffs, "written": args.write})
        )
        return 0
    con = _console()
    for key, st in stats.items():
        if key in ("observation.state", "action"):
            for s in ("mean", "std", "min", "max", "q01", "q99"):
                if s in st:
                    vals = " ".join(f"{x:.4g}" for x in st[s].reshape(-1)[:10])
                    con.print(f"{key}.{s}: {vals}")
    if diffs:
        con.print(f"[yellow]{len(diffs)} difference(s) from meta/stats.json:[/yellow]")
        for d in diffs[:30]:
            con.print(f"  {d}")
    else:
        con.print("recomputed stats match meta/stats.json")
    con.print(
        "wrote meta/stats.json"
        if args.write
        else "(not written; pass --write to replace meta/stats.json)"
    )
    return 0


def cmd_convert_hdf5(args: argparse.Namespace) -> int:
    from vlastack.data.convert.hdf5 import convert_hdf5

    dst = convert_hdf5(
        args.src,
        args.dst,
        layout=args.layout,
        fps=args.fps,
        robot_type=args.robot_type,
        state_keys=_keys(args.state_keys),
        image_keys=_keys(args.image_keys),
        action_key=args.action_key,
        filter_key=args.filter_key,
        task=args.task,
        action_kind=args.action_kind,
        use_videos=args.images == "video",
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    print(f"wrote {dst}; check it with: vlastack data doctor {dst}")
    return 0


def cmd_convert_zarr(args: argparse.Namespace) -> int:
    from vlastack.data.convert.zarr import convert_zarr

    dst = convert_zarr(
        args.src,
        args.dst,
        fps=args.fps or 10.0,
        robot_type=args.robot_type or "diffusion_policy",
        state_key=args.state_key,
        action_key=args.action_key,
        image_keys=_keys(args.image_keys),
        task=args.task or "",
        action_kind=args.action_kind,
        use_videos=args.images == "video",
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    print(f"wrote {dst}; check it with: vlastack data doctor {dst}")
    return 0


def cmd_convert_rlds(args: argparse.Namespace) -> int:
    from vlastack.data.convert.rlds import convert_rlds

    dst = convert_rlds(
        args.src,
        args.dst,
        split=args.split,
        fps=args.fps,
        robot_type=args.robot_type,
        state_key=args.state_key,
        image_keys=_keys(args.image_keys),
        task=args.task,
        action_kind=args.action_kind,
        max_episodes=args.max_episodes,
        use_videos=args.images == "video",
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    print(f"wrote {dst}; check it with: vlastack data doctor {dst}")
    return 0
