"""``vlastack collect``: scripted-expert demonstrations from a simulator into a LeRobot v3 dataset.

Thin wrapper over ``vlastack.envs.collect.collect``; re-running the same command on an existing
output resumes it. Prints a per-task summary (episodes, frames, expert success rate, time).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from vlastack.cli.eval import add_executor_args
from vlastack.image_size import DEFAULT_IMAGE_SIZE


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "collect",
        help="record scripted-expert demonstrations from a simulator (Meta-World, PushT)",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--env",
        required=True,
        help="env or suite, or a comma list of them (one simulator), e.g. metaworld/mt10, pusht, "
        "metaworld/reach-v3,metaworld/push-v3",
    )
    p.add_argument("--out", required=True, help="dataset folder (created, or resumed)")
    p.add_argument("--episodes-per-task", type=int, default=20)
    p.add_argument("--workers", type=int, default=1, help="episode worker processes")
    add_executor_args(p)
    p.add_argument(
        "--image-size",
        type=int,
        default=DEFAULT_IMAGE_SIZE[0],
        help="square image side in pixels (the default is vlastack demo's and the demo "
        "recipe's; vlastack eval renders at the size a checkpoint was trained at)",
    )
    p.add_argument("--camera", default=None, help="camera name (Meta-World default corner2)")
    p.add_argument("--noise", type=float, default=0.1, help="std of Gaussian action noise")
    p.add_argument("--keep-failures", action="store_true", help="also keep failed episodes")
    p.add_argument("--seed", type=int, default=0, help="base of the per-episode seed schedule")
    p.add_argument(
        "--state",
        choices=["agent_pos", "full"],
        default=None,
        help="Meta-World state: 4-d hand+gripper (default) or full 39-d (privileged)",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from vlastack.envs.collect import collect

    env_kwargs = {"state": args.state} if args.state else {}
    summary = collect(
        args.env,
        args.out,
        episodes_per_task=args.episodes_per_task,
        workers=args.workers,
        image_size=(args.image_size, args.image_size),
        camera=args.camera,
        noise=args.noise,
        keep_failures=args.keep_failures,
        seed=args.seed,
        env_kwargs=env_kwargs,
        progress=not args.json,
        executor=args.executor,
        ray_address=args.ray_address,
    )
    if args.json:
        print(json.dumps(summary.to_dict(), default=float))
        return 0
    table = Table(title=f"collected into {summary.out}")
    for col in ("task", "episodes", "frames", "attempts", "expert success", "errors"):
        table.add_column(col, justify="left" if col == "task" else "right")
    for name, st in summary.tasks.items():
        table.add_row(
            name,
            str(st.kept),
            str(st.frames),
            str(st.attempts),
            f"{st.success_rate:.0%}" if st.attempts else "-",
            str(st.errors),
        )
    console = Console()
    console.print(table)
    console.print(
        f"{summary.new_episodes} new episodes, {summary.new_frames} new frames in "
        f"{summary.wall_s:.1f} s ({summary.frames_per_s:.0f} frames/s, {summary.workers} workers)"
    )
    for msg in summary.messages:
        console.print(f"[yellow]note:[/yellow] {msg}")
    return 0
