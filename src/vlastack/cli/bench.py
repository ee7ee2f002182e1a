"""``vlastack bench {backbone,heads,stress,transfer,runtime,chain,latency}``: the survey's proposed
experiments, one command each, and a per-stage latency profile of a checkpoint.

Each suite writes results folders that ``vlastack report DIR...`` renders and a results page in its
--out folder (``section.md`` with Wilson intervals and the spread across --seeds, the command, the
machine and the date, plus PNG plots); see ``vlastack.experiments`` for what each measures.
"""

from __future__ import annotations

import argparse
from typing import Any

from vlastack.cli.runner_option import add_runner_option
from vlastack.image_size import DEFAULT_IMAGE_SIZE


def _image_size(text: str) -> tuple[int, int]:
    from vlastack.cli.eval import _image_size as parse

    return parse(text)


def _seeds(text: str) -> list[int]:
    from vlastack.errors import ConfigError
    from vlastack.experiments.prepare import parse_seeds

    try:
        return parse_seeds(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give numbers separated by commas, e.g. 0,100,200"
        ) from None


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give integers separated by commas, e.g. 5,20"
        ) from None


_TRAINED = "camera size, H or HxW (default: the size the checkpoint was trained at)"
_COLLECT = "camera size of the collected data and of the evaluations, H or HxW"


def _common(
    p: argparse.ArgumentParser, out: str, runs_checkpoint: bool = False, trains: bool = False
) -> None:
    p.add_argument("--episodes-per-task", type=int, default=10)
    p.add_argument("--seed", type=int, default=0, help="evaluation (episode) seed base")
    if trains:
        p.add_argument(
            "--seeds",
            type=_seeds,
            default=[0],
            help="training seeds, comma-separated; one run per seed (use >= 3 for a page: 0,1,2)",
        )
    p.add_argument(
        "--image-size",
        type=_image_size,
        default=None if runs_checkpoint else DEFAULT_IMAGE_SIZE,
        help=_TRAINED if runs_checkpoint else _COLLECT,
    )
    p.add_argument("--out", default=out, help="results folder")
    p.add_argument("--no-progress", action="store_true")


def _suite_args(p: argparse.ArgumentParser, max_steps_help: str | None = None) -> None:
    """--max-steps, --workers and the executor options of the suites that run evaluations."""
    from vlastack.cli.eval import add_executor_args

    p.add_argument("--max-steps", type=int, default=None, help=max_steps_help)
    p.add_argument("--workers", type=int, default=1)
    add_executor_args(p)


def _suite_kwargs(args: argparse.Namespace, executor: Any) -> dict[str, Any]:
    """The keyword arguments every evaluating suite takes from its shared options."""
    return {
        "episodes_per_task": args.episodes_per_task,
        "seed": args.seed,
        "workers": args.workers,
        "image_size": args.image_size,
        "max_steps": args.max_steps,
        "out_dir": args.out,
        "progress": not args.no_progress,
        "executor": executor,
    }


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "bench",
        help="benchmark suites: action heads, generalization stress, transfer, long-horizon",
        description=__doc__,
    )
    sub = p.add_subparsers(dest="suite", required=True)
    fmt = argparse.ArgumentDefaultsHelpFormatter

    h = sub.add_parser("heads", help="train + evaluate each action head", formatter_class=fmt)
    h.add_argument(
        "--env", default="metaworld/reach-v3", help="env or suite; several: comma-separated"
    )
    h.add_argument(
        "--heads",
        default="l1,act,diffusion,diffusion_unet,flow_matching,bins,fast",
        help="action heads (diffusion_unet: diffusion with the 1-D U-Net denoiser)",
    )
    h.add_argument("--recipe", default="demo", help="backbone (vision, language, projector)")
    h.add_argument("--data", default=None, help="dataset to reuse (default: collect one)")
    h.add_argument("--collect-episodes", type=int, default=20)
    h.add_argument("--steps", type=int, default=500, help="training steps per head")
    h.add_argument("--max-minutes", type=float, default=None, help="or a time budget per head")
    _suite_args(h, "episode step limit")
    _common(h, "results/heads", trains=True)
    h.set_defaults(func=run_heads)

    b = sub.add_parser(
        "backbone",
        help="frozen / fine-tuned / LoRA / from-scratch pretrained encoders",
        formatter_class=fmt,
    )
    b.add_argument("--env", default="metaworld/mt10", help="env or suite; several: comma-separated")
    b.add_argument("--conditions", default="frozen,finetuned,lora,scratch")
    b.add_argument("--recipe", default="demo", help="recipe with pretrained encoders")
    b.add_argument("--data", default=None, help="dataset to reuse (default: collect one)")
    b.add_argument("--collect-episodes", type=int, default=20)
    b.add_argument("--steps", type=int, default=2000, help="training steps per run")
    b.add_argument("--max-minutes", type=float, default=None, help="or a time budget per run")
    b.add_argument("--lora-rank", type=int, default=8)
    _suite_args(b, "episode step limit")
    _common(b, "results/backbone", trains=True)
    b.set_defaults(func=run_backbone)

    s = sub.add_parser("stress", help="evaluation-time perturbations", formatter_class=fmt)
    s.add_argument("checkpoint", nargs="+", help="one or more (one per training seed)")
    s.add_argument("--env", default="metaworld/reach-v3")
    s.add_argument("--conditions", default=None, help="comma list (default: all)")
    _suite_args(s)
    s.add_argument("--videos-per-task", type=int, default=0)
    _common(s, "results/stress", runs_checkpoint=True)
    s.set_defaults(func=run_stress)

    t = sub.add_parser("transfer", help="native Sawyer -> 7-d Sawyer", formatter_class=fmt)
    t.add_argument("--task", default="reach-v3")
    t.add_argument("--recipe", default="demo")
    t.add_argument("--source-checkpoint", default=None, help="skip source training")
    t.add_argument("--source-data", default=None)
    t.add_argument("--target-data", default=None)
    t.add_argument("--collect-episodes", type=int, default=20)
    t.add_argument(
        "--finetune-episodes", type=_ints, default=[5, 20], help="k target demos, comma list"
    )
    t.add_argument("--steps", type=int, default=500)
    t.add_argument("--finetune-steps", type=int, default=100)
    _suite_args(t)
    _common(t, "results/transfer", trains=True)
    t.set_defaults(func=run_transfer)

    r = sub.add_parser(
        "runtime",
        help="sync/ensemble/async/RTC x inference delays x policies, virtual time",
        formatter_class=fmt,
    )
    r.add_argument(
        "policy",
        nargs="+",
        help="[LABEL=]CHECKPOINT; repeat a LABEL for its training seeds (e.g. l1=a l1=b fm=c)",
    )
    r.add_argument("--env", default="metaworld/reach-v3", help="env or suite")
    r.add_argument("--delays", type=_floats, default=[0.0, 100.0, 200.0, 400.0], help="ms")
    r.add_argument("--control-hz", type=float, default=20.0)
    r.add_argument("--strategies", default="sync,ensemble,async,async_latest,rtc")
    r.add_argument("--max-ticks", type=int, default=250, help="episode length cap (ticks)")
    r.add_argument("--episodes-per-task", type=int, default=10)
    r.add_argument("--seed", type=int, default=0, help="evaluation (episode) seed base")
    r.add_argument("--threads", type=int, default=1, help="torch threads (virtual time)")
    r.add_argument("--out", default="results/runtime")
    r.add_argument("--no-progress", action="store_true")
    r.set_defaults(func=run_runtime)

    c = sub.add_parser("chain", help="10-subtask chains vs a modular baseline", formatter_class=fmt)
    c.add_argument(
        "checkpoint",
        nargs="*",
        default=[],
        help="VLA checkpoint(s), one per training seed (omit: modular only)",
    )
    c.add_argument("--task", default="reach-v3")
    c.add_argument("--subtasks", type=int, default=10)
    c.add_argument("--steps-per-subtask", type=int, default=150)
    c.add_argument("--episodes", type=int, default=10)
    c.add_argument("--no-modular", action="store_true")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument(
        "--image-size",
        type=_image_size,
        default=None,
        help=_TRAINED + f"; the modular baseline alone: {DEFAULT_IMAGE_SIZE[0]}",
    )
    c.add_argument("--out", default="results/chain")
    c.add_argument("--no-progress", action="store_true")
    c.set_defaults(func=run_chain)

    lat = sub.add_parser(
        "latency",
        help="per-stage latency of one policy call (vision, language, backbone, head, ...)",
        formatter_class=fmt,
    )
    lat.add_argument(
        "checkpoint", help="vlastack checkpoint folder or a LeRobot pretrained_model folder"
    )
    lat.add_argument("--iters", type=int, default=50, help="timed calls")
    lat.add_argument("--warmup", type=int, default=5, help="untimed first calls")
    lat.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch intra-op threads (0 = the fastest of 1 / half / all cores, timed first, as "
        "`vlastack serve` picks them)",
    )
    lat.add_argument("--device", default="cpu")
    lat.add_argument(
        "--cuda-graphs",
        action="store_true",
        help="replay the action head's sampler as CUDA graphs (GPU only; = --runner cuda_graphs)",
    )
    add_runner_option(lat)
    lat.add_argument("--embodiment", default=None, help="mixture checkpoints: the member to act as")
    lat.add_argument("--json", action="store_true", help="print one JSON object instead")
    lat.set_defaults(func=run_latency)


def _done(paths: list[str]) -> None:
    print("report: vlastack report " + " ".join(paths) + " --out report.html")


def run_heads(args: argparse.Namespace) -> int:
    from vlastack.executors import ExecutorChoice, executor_session
    from vlastack.experiments import heads

    choice = ExecutorChoice(args.executor, args.ray_address)
    with executor_session(choice, args.workers):
        table = heads(
            args.env,
            heads=[x.strip() for x in args.heads.split(",") if x.strip()],
            recipe=args.recipe,
            data=args.data,
            collect_episodes=args.collect_episodes,
            steps=args.steps,
            max_minutes=args.max_minutes,
            seeds=args.seeds,
            **_suite_kwargs(args, choice),
        )
    _done([r["eval_dir"] for r in table["runs"]])
    _page(args.out)
    return 0


def _page(out: str) -> None:
    from pathlib import Path

    print((Path(out) / "section.md").read_text())
    print(f"page: {Path(out) / 'section.md'} (plots beside it)")


def run_backbone(args: argparse.Namespace) -> int:
    from vlastack.executors import ExecutorChoice, executor_session
    from vlastack.experiments.backbone import backbone

    choice = ExecutorChoice(args.executor, args.ray_address)
    with executor_session(choice, args.workers):
        table = backbone(
            args.env,
            conditions=[x.strip() for x in args.conditions.split(",") if x.strip()],
            recipe=args.recipe,
            data=args.data,
            collect_episodes=args.collect_episodes,
            steps=args.steps,
            max_minutes=args.max_minutes,
            lora_rank=args.lora_rank,
            seeds=args.seeds,
            **_suite_kwargs(args, choice),
        )
    _done([r["eval_dir"] for r in table["runs"]])
    _page(args.out)
    return 0


def run_runtime(args: argparse.Namespace) -> int:
    import torch

    from vlastack.experiments.realtime import runtime_suite

    torch.set_num_threads(max(1, args.threads))
    runtime_suite(
        args.policy,
        args.env,
        delays=args.delays,
        control_hz=args.control_hz,
        strategies=[x.strip() for x in args.strategies.split(",") if x.strip()],
        episodes_per_task=args.episodes_per_task,
        seed=args.seed,
        max_ticks=args.max_ticks,
        out_dir=args.out,
        progress=not args.no_progress,
    )
    _page(args.out)
    return 0


def run_stress(args: argparse.Namespace) -> int:
    from vlastack.executors import ExecutorChoice, executor_session
    from vlastack.experiments import stress_suite

    choice = ExecutorChoice(args.executor, args.ray_address)
    with executor_session(choice, args.workers):
        stress_suite(
            args.checkpoint,
            args.env,
            conditions=args.conditions.split(",") if args.conditions else None,
            video_episodes_per_task=args.videos_per_task,
            **_suite_kwargs(args, choice),
        )
    _done([args.out])
    _page(args.out)
    return 0


def run_transfer(args: argparse.Namespace) -> int:
    from vlastack.executors import ExecutorChoice, executor_session
    from vlastack.experiments import transfer

    choice = ExecutorChoice(args.executor, args.ray_address)
    with executor_session(choice, args.workers):
        s = transfer(
            args.task,
            recipe=args.recipe,
            source_data=args.source_data,
            target_data=args.target_data,
            source_checkpoint=args.source_checkpoint,
            collect_episodes=args.collect_episodes,
            finetune_episodes=args.finetune_episodes,
            steps=args.steps,
            finetune_steps=args.finetune_steps,
            seeds=args.seeds,
            **_suite_kwargs(args, choice),
        )
    _done([r["eval_dir"] for r in s["runs"]])
    _page(args.out)
    return 0


def run_chain(args: argparse.Namespace) -> int:
    from pathlib import Path

    from vlastack.experiments import chain

    table = chain(
        list(args.checkpoint) or None,
        task=args.task,
        num_subtasks=args.subtasks,
        steps_per_subtask=args.steps_per_subtask,
        episodes=args.episodes,
        seed=args.seed,
        image_size=args.image_size,
        modular=not args.no_modular,
        out_dir=args.out,
        progress=not args.no_progress,
    )
    _done([str(Path(args.out) / k) for k in table])
    _page(args.out)
    return 0


def run_latency(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import torch

    from vlastack.errors import ConfigError
    from vlastack.policy import Policy
    from vlastack.profiling import profile_policy, synthetic_observation

    if args.iters < 1 or args.warmup < 0:
        raise ConfigError(f"--iters must be >= 1 and --warmup >= 0, got {args.iters}/{args.warmup}")
    if args.threads < 0:
        raise ConfigError(f"--threads must be >= 0 (0 = pick by timing), got {args.threads}")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    from vlastack.policy_formats import detect_policy_format, resolve_checkpoint_arg

    args.checkpoint = str(resolve_checkpoint_arg(args.checkpoint))  # a hub id: its cached copy
    fmt = detect_policy_format(args.checkpoint)
    if fmt is not None:
        # another checkpoint format (a LeRobot folder): SmolVLA and pi0 / pi0.5 mark their
        # stages as native policies do; one whose modules mark none gets end-to-end latency
        # only (per stage: N/A)
        if args.cuda_graphs:
            raise ConfigError(
                f"--cuda-graphs applies to vlastack checkpoints, not {fmt.name} (drop it)"
            )
        from vlastack.cli.runner_option import apply_runner

        policy: Any = fmt.obj.load(
            Path(args.checkpoint), device=args.device, embodiment=args.embodiment
        )
        apply_runner(policy, args.runner, args.checkpoint, fmt.name)
    else:
        policy = Policy.from_checkpoint(
            args.checkpoint, device=args.device, embodiment=args.embodiment
        )
        policy.use_runner("cuda_graphs" if args.cuda_graphs else args.runner)
    if args.threads == 0 and policy.device.type == "cpu":
        from vlastack.profiling import pick_inference_threads

        pick_inference_threads(policy)  # what the server would run with
    result = profile_policy(
        policy, synthetic_observation(policy), iters=args.iters, warmup=args.warmup
    )
    result["checkpoint"] = str(args.checkpoint)
    result["format"] = fmt.name if fmt is not None else "vlastack"
    if fmt is not None and all(r["stage"] == "other" for r in result["stages"]):
        result["stages"] = []  # nothing instrumented: the "other" row would be the total again
        result["stages_note"] = (
            f"per-stage times are N/A for a {fmt.name} checkpoint (its modules are not "
            "instrumented); total is the end-to-end infer() latency"
        )
    if args.json:
        print(json.dumps(result))
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table(
        title=f"{args.checkpoint}: one call, batch 1, {result['device']}, "
        f"{result['threads']} threads, {result['iters']} calls"
    )
    for col in ("stage", "p50 ms", "p95 ms", "mean ms", "share"):
        t.add_column(col, justify="left" if col == "stage" else "right")
    for r in [*result["stages"], result["total"]]:
        t.add_row(
            r["stage"],
            f"{r['p50_ms']:.2f}",
            f"{r['p95_ms']:.2f}",
            f"{r['mean_ms']:.2f}",
            f"{100 * r['share']:.0f}%",
        )
    Console().print(t)
    if "stages_note" in result:
        print(result["stages_note"])
    return 0
