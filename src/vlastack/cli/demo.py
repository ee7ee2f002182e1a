"""``vlastack demo``: collect → train → evaluate → report on Meta-World (see vlastack.demo)."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    from vlastack.demo import DEMO_TASKS, DemoConfig

    d = DemoConfig()
    p = sub.add_parser(
        "demo",
        help="collect, train, evaluate and report a VLA on Meta-World (the main job)",
        description=(
            "Run the whole VLA pipeline from nothing: scripted Meta-World demonstrations with "
            "language instructions, training a VLA with pretrained offline vision and language "
            "encoders, evaluation on held-out seeds, and an HTML report. The defaults (4 easy "
            "tasks) fit about 10 minutes on a 2-core CPU; `make demo` runs MT10 (--tasks "
            "metaworld/mt10 --episodes-per-task 25 --steps 3000 --train-minutes 9: ~14 minutes "
            "on 2 cores); --tasks metaworld/mt50 runs the whole benchmark."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--tasks", nargs="+", default=DEMO_TASKS, help="Meta-World tasks or a suite")
    p.add_argument("--episodes-per-task", type=int, default=d.episodes_per_task)
    p.add_argument("--eval-episodes-per-task", type=int, default=d.eval_episodes_per_task)
    p.add_argument("--recipe", default=d.recipe, help="a recipe from `vlastack list`")
    p.add_argument("--train-minutes", type=float, default=d.train_minutes, help="training budget")
    p.add_argument("--steps", type=int, default=d.steps, help="max training steps")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--image-size", type=int, default=d.image_size, help="square camera resolution")
    p.add_argument("--camera", default=d.camera)
    p.add_argument("--workers", type=int, default=d.workers, help="collection/eval processes")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--out", default=d.out, help="output folder (data, run, eval, report.html)")
    p.add_argument("--videos-per-task", type=int, default=d.videos_per_task)
    p.add_argument("--max-steps", type=int, default=None, help="eval episode cap (default 500)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--groups",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="write the per-difficulty-group table (groups.md/.json/.png) beside the published "
        "MT50 rows (default: when --tasks names a suite such as metaworld/mt10)",
    )
    p.add_argument(
        "--groups-only",
        action="store_true",
        help="only (re)write the per-group table of the finished demo in --out; run nothing",
    )
    p.add_argument(
        "overrides", nargs="*", default=[], help="training overrides, e.g. --lr=3e-4 (after --)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vlastack.demo import DemoConfig, run_demo, write_groups

    if args.groups_only:
        write_groups(args.out)
        return 0
    cfg = DemoConfig(
        tasks=list(args.tasks),
        episodes_per_task=args.episodes_per_task,
        eval_episodes_per_task=args.eval_episodes_per_task,
        recipe=args.recipe,
        train_minutes=args.train_minutes,
        steps=args.steps,
        batch_size=args.batch_size,
        image_size=args.image_size,
        camera=args.camera,
        workers=args.workers,
        seed=args.seed,
        out=args.out,
        videos_per_task=args.videos_per_task,
        max_steps=args.max_steps,
        overrides=list(args.overrides),
        progress=not args.no_progress,
        group_table=args.groups,
    )
    run_demo(cfg)
    return 0
