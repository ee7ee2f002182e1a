"""``vlastack eval CHECKPOINT --env metaworld/mt10``: closed-loop evaluation with a manifest.

Writes a results folder (manifest.json, episodes.jsonl, summary.json, videos/) and prints the
success table; ``--manifest FILE`` repeats a previous run's exact protocol. A checkpoint trained
on a mixture of robots acts as the member matching the environment (``--embodiment`` forces one).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from vlastack.cli.runner_option import add_runner_option
from vlastack.cli.two_rate import add_two_rate_args, two_rate_options


def _image_size(text: str) -> tuple[int, int]:
    parts = text.lower().replace("x", ",").split(",")
    try:
        if len(parts) == 1:
            return int(parts[0]), int(parts[0])
        h, w = (int(p) for p in parts)
        return h, w
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"image size {text!r}: give one number (128) or HxW (128x160)"
        ) from None


def add_executor_args(p: argparse.ArgumentParser) -> None:
    """``--executor`` and ``--ray-address``, shared by eval, collect and the suites."""
    p.add_argument(
        "--executor",
        choices=["pool", "ray"],
        default="pool",
        help="where episodes run: local worker processes (pool) or Ray tasks (ray: a local Ray "
        "instance with --workers CPUs, or the cluster at --ray-address; pip install "
        "'vlastack[ray]')",
    )
    p.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="an existing Ray cluster (host:6379 or ray://host:10001) for --executor ray",
    )


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "eval",
        help="evaluate a checkpoint in simulation (success ± 95%% CI, smoothness, latency, videos)",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("checkpoint", nargs="?", help="checkpoint folder (optional with --manifest)")
    p.add_argument("--env", help="task or suite, e.g. metaworld/mt10 or metaworld/reach-v3")
    p.add_argument("--episodes-per-task", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes (0 = in-process); aloha/* and libero/*: 1 = one simulator "
        "client runs every episode, more (or --executor ray) = one episode per worker job",
    )
    add_runner_option(p)
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="torch threads per policy (default: the cores shared out among the workers); "
        "latency on a loaded machine depends on it, so it is recorded in the manifest",
    )
    add_executor_args(p)
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run in --out: keep the episodes its episodes.jsonl holds "
        "and run the rest (same protocol and checkpoint only)",
    )
    p.add_argument(
        "--execute-horizon",
        type=int,
        default=None,
        help="actions executed per predicted chunk (default: the checkpoint's recommendation)",
    )
    p.add_argument("--ensemble", action="store_true", help="ACT temporal ensembling")
    add_two_rate_args(p, "the env's control rate (one env step = one tick)")
    p.add_argument("--max-steps", type=int, default=None, help="default: the env's limit")
    p.add_argument(
        "--image-size",
        type=_image_size,
        default=None,
        help="camera size, H or HxW (default: the size the checkpoint was trained at; another "
        "size warns; --manifest replays the recorded size)",
    )
    p.add_argument("--camera", default=None, help="default: the env's default camera")
    p.add_argument("--videos-per-task", type=int, default=1, help="episodes filmed per task")
    p.add_argument(
        "--action-remap",
        choices=["strict", "pad"],
        default="strict",
        help="on an embodiment mismatch: fail (strict) or zero-pad/truncate actions and state",
    )
    p.add_argument(
        "--allow-mismatch",
        action="store_true",
        help="alias of --action-remap pad",
    )
    p.add_argument(
        "--embodiment",
        default=None,
        metavar="NAME",
        help="mixture checkpoints: the member (name or robot_type) to act as "
        "(default: the one matching the environment)",
    )
    p.add_argument("--episode-timeout", type=float, default=None, help="seconds per episode")
    p.add_argument("--out", default=None, help="results folder (default results/<checkpoint>)")
    p.add_argument("--label", default=None, help="name of this run in reports")
    p.add_argument("--manifest", default=None, help="re-run the exact protocol of this manifest")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


REMOTE_FAMILIES = ("aloha", "libero")


def run(args: argparse.Namespace) -> int:
    """``--runner`` travels to the policy (here and in the workers it starts) as the
    ``VLASTACK_RUNNER`` environment variable, set for this command only."""
    if args.runner == "auto":
        return _run(args)
    previous = os.environ.get("VLASTACK_RUNNER")
    os.environ["VLASTACK_RUNNER"] = args.runner
    try:
        return _run(args)
    finally:
        if previous is None:
            os.environ.pop("VLASTACK_RUNNER", None)
        else:
            os.environ["VLASTACK_RUNNER"] = previous


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from vlastack.errors import ConfigError
    from vlastack.evaluation.reproduce import evaluate_manifest

    high_level = two_rate_options(args) or {}
    if args.manifest and high_level:
        raise ConfigError(
            "--manifest repeats the manifest's protocol, its rates included; drop --high-level-hz"
        )
    if args.manifest and args.resume:
        raise ConfigError("--resume continues a run in --out; drop --manifest, or --resume")
    if args.manifest:
        if args.embodiment is not None:
            raise ConfigError(
                "--manifest repeats the manifest's protocol, embodiment included; drop --embodiment"
            )
        if args.image_size is not None:
            raise ConfigError(
                "--manifest replays the image size the manifest recorded (protocol.image_size); "
                "drop --image-size"
            )
        out = args.out or str(Path(args.manifest).resolve().parent) + "-rerun"
        results = evaluate_manifest(
            args.manifest,
            out_dir=out,
            checkpoint=args.checkpoint,
            workers=args.workers,
            progress=not args.no_progress,
            executor=args.executor,
            ray_address=args.ray_address,
        )
    else:
        if not args.checkpoint or not args.env:
            raise ConfigError("vlastack eval needs CHECKPOINT and --env (or --manifest FILE)")
        name = Path(args.checkpoint).resolve().name
        if not Path(args.checkpoint).exists():
            from vlastack.policy_formats import resolve_checkpoint_arg

            name = str(args.checkpoint).replace("/", "_").replace("@", "_")
            args.checkpoint = str(resolve_checkpoint_arg(args.checkpoint))  # hub id: cache
            args.label = args.label or name
        out = args.out or str(Path("results") / name)
        if args.env.split("/")[0] in REMOTE_FAMILIES:
            if high_level:
                raise ConfigError(
                    f"--env {args.env} runs through the remote runner, which has no two-rate "
                    "loop yet; drop --high-level-hz"
                )
            if args.resume:
                raise ConfigError(
                    f"--env {args.env} runs in its own venv through the remote runner, which "
                    "does not take --resume yet; drop it"
                )
            results = _evaluate_remote(args, out)
            print_summary(results.summary)
            print(f"results: {out}  (vlastack report {out} --out {out}/report.html)")
            return exit_code(results.records)
        try:
            results = _evaluate(args, out, high_level)
        except KeyboardInterrupt:
            print(
                f"the finished episodes are in {out}/episodes.jsonl; the same command with "
                "--resume continues the run",
                file=sys.stderr,
            )
            raise
    print_summary(results.summary)
    print(f"results: {out}  (vlastack report {out} --out {out}/report.html)")
    return exit_code(results.records)


def exit_code(records: list[Any]) -> int:
    """1 (with the first error on stderr) when every episode errored: nothing was evaluated."""
    errored = [r for r in records if r.status == "error"]
    if not records or len(errored) < len(records):
        return 0
    last = (errored[0].error or "no error text").strip().splitlines()
    print(
        f"error: every episode errored ({len(errored)} of {len(records)}), so nothing was "
        f"evaluated; the first one: {last[-1] if last else '?'} (details in episodes.jsonl)",
        file=sys.stderr,
    )
    return 1


def _evaluate_remote(args: argparse.Namespace, out: str) -> Any:
    """ALOHA and LIBERO pin their own MuJoCo: they run in their own venv and reach the policy
    over the policy-server protocol (vlastack.envs.remote). With ``--executor ray`` or
    ``--workers`` > 1 each episode is a job of the executor (``remote_sharded``); else one client
    runs them all in order (``remote.evaluate_remote``)."""
    if args.embodiment is not None:  # the label keeps the checkpoint's name
        from vlastack.evaluation.rollout import (
            check_embodiment_name,
            checkpoint_label,
            resolve_checkpoint_dir,
        )

        ckpt = resolve_checkpoint_dir(args.checkpoint)
        check_embodiment_name(ckpt, args.embodiment)
        args.label = args.label or f"{checkpoint_label(ckpt)}[{args.embodiment}]"
    if args.executor == "ray" or args.workers > 1:
        from vlastack.evaluation.remote_sharded import evaluate_remote_sharded

        return evaluate_remote_sharded(
            args.checkpoint,
            args.env,
            episodes=args.episodes_per_task,
            seed=args.seed,
            workers=max(1, args.workers),
            executor=args.executor,
            ray_address=args.ray_address,
            out_dir=out,
            max_steps=args.max_steps,
            execute_horizon=args.execute_horizon,
            embodiment=args.embodiment,
            episode_timeout_s=args.episode_timeout,
            label=args.label,
            progress=not args.no_progress,
        )
    from vlastack.evaluation.remote import evaluate_remote

    policy: Any = args.checkpoint
    if args.embodiment is not None:
        # evaluate_remote takes a loaded policy; the label keeps the checkpoint's name.
        from vlastack.evaluation.rollout import load_policy, resolve_checkpoint_dir

        policy = load_policy(resolve_checkpoint_dir(args.checkpoint), embodiment=args.embodiment)
    return evaluate_remote(
        policy,
        args.env,
        episodes=args.episodes_per_task,
        seed=args.seed,
        out_dir=out,
        max_steps=args.max_steps,
        execute_horizon=args.execute_horizon,
        label=args.label,
        progress=not args.no_progress,
    )


def _evaluate(args: argparse.Namespace, out: str, high_level: dict[str, Any]) -> Any:
    from vlastack.evaluation.rollout import evaluate

    return evaluate(
        args.checkpoint,
        args.env,
        episodes_per_task=args.episodes_per_task,
        seed=args.seed,
        workers=args.workers,
        execute_horizon=args.execute_horizon,
        ensemble=args.ensemble,
        max_steps=args.max_steps,
        image_size=args.image_size,
        camera=args.camera,
        video_episodes_per_task=args.videos_per_task,
        out_dir=out,
        action_remap="pad" if args.allow_mismatch else args.action_remap,
        label=args.label,
        episode_timeout_s=args.episode_timeout,
        progress=not args.no_progress,
        embodiment=args.embodiment,
        executor=args.executor,
        ray_address=args.ray_address,
        resume=args.resume,
        threads=args.threads,
        **high_level,
    )


def _fmt(x: Any, pct: bool = False, nd: int = 1) -> str:
    if x is None:
        return "-"
    return f"{100 * x:.{nd}f}" if pct else f"{x:.{nd}f}"


def print_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{summary['run']['label']} on {summary['run']['env']}")
    for col in (
        "task",
        "success %",
        "95% CI",
        "n",
        "errors",
        "success % of completed",
        "steps→success",
        "jerk (u/s³)²",
        "jump",
    ):
        table.add_column(col, justify="left" if col == "task" else "right", no_wrap=col == "task")
    rows = list(summary["per_task"].items()) + [("overall", summary["overall"])]
    for name, a in rows:
        # headline: an errored episode counts as a failure (errors shown beside it)
        head = "headline_success_rate" in a
        rate, lo, hi = (
            ("headline_success_rate", "headline_ci95_low", "headline_ci95_high")
            if head
            else ("success_rate", "ci95_low", "ci95_high")
        )
        table.add_row(
            name,
            _fmt(a[rate], pct=True),
            f"{_fmt(a[lo], True)}–{_fmt(a[hi], True)}",
            str(a["episodes"] if head else a["completed"]),
            str(a["errors"]),
            _fmt(a["success_rate"], pct=True),
            _fmt(a["steps_to_success_mean"]),
            "-" if a["mean_squared_jerk"] is None else f"{a['mean_squared_jerk']:.3g}",
            _fmt(a["chunk_jump"], nd=3),
        )
    import sys

    console = Console(width=None if sys.stdout.isatty() else 140)  # logs: do not truncate
    console.print(table)
    lat = summary["overall"]["latency"]
    mem = summary["overall"]
    console.print(
        f"latency per chunk p50/p95/p99: {_fmt(lat['p50_ms'])}/{_fmt(lat['p95_ms'])}/"
        f"{_fmt(lat['p99_ms'])} ms · peak RSS {_fmt(mem['peak_rss_mb'], nd=0)} MB · "
        f"{_fmt(summary['timing']['steps_per_s'], nd=0)} env steps/s"
    )
    two = summary.get("two_rate")
    if two:
        mode = "in the background" if two["high_level_async"] else "synchronously"
        console.print(
            f"two rates: System 2 at {two['high_level_hz']:g} Hz ({mode}), System 1 at "
            f"{two['control_hz']:g} Hz; System 2 ran {two['high_level_runs']} time(s) "
            f"({two['high_level_runs_per_episode']:g} per episode, {two['high_level_skipped']} "
            f"skipped); per tick p50/p99: {_fmt(two['tick_ms_p50'])}/{_fmt(two['tick_ms_p99'])} ms"
        )
