"""``vlastack serve CHECKPOINT``: serve a trained policy over openpi's websocket protocol.

Binds 127.0.0.1 unless ``--host`` says otherwise; ``--api-key`` (or $VLASTACK_API_KEY) makes the
server reject connections without ``Authorization: Api-Key <key>``. ``--toy STYLE`` serves the
deterministic test policy instead of a checkpoint (for trying a robot client end to end).
A checkpoint trained on a mixture of robots serves one of them: ``--embodiment NAME`` (default:
the first member); the metadata frame names it (``embodiment_name``, ``robot_type``).
A LeRobot ``pretrained_model`` folder (ACT, Diffusion Policy: ``vlastack.policy_formats``)
serves the same way, on ``--device``.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from vlastack.cli.runner_option import add_runner_option, apply_runner
from vlastack.errors import ConfigError, VlastackError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve a policy over openpi's websocket protocol",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "checkpoint",
        nargs="?",
        help="checkpoint folder written by `vlastack train`, or a LeRobot pretrained_model folder",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="interface to bind (0.0.0.0 = all; default loopback)"
    )
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--api-key",
        default=None,
        help="require 'Authorization: Api-Key <key>' (default $VLASTACK_API_KEY)",
    )
    p.add_argument(
        "--max-frame-mb",
        type=float,
        default=None,
        help="reject frames larger than this (default: no cap, as openpi)",
    )
    p.add_argument(
        "--batch-window-ms",
        type=float,
        default=0.0,
        help="group concurrent clients' requests arriving within this window",
    )
    p.add_argument(
        "--embodiment",
        default=None,
        metavar="NAME",
        help="mixture checkpoints: the member (name or robot_type) to act as (default: the first)",
    )
    p.add_argument(
        "--toy",
        choices=["libero", "aloha", "droid"],
        default=None,
        help="serve the deterministic toy policy",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch intra-op threads for inference on the CPU; 0 = time 1, half and all cores "
        "on a synthetic observation at startup and keep the fastest",
    )
    p.add_argument(
        "--device",
        default="auto",
        help="where the policy runs: auto (cuda when available, else cpu), cpu, cuda, cuda:N",
    )
    p.add_argument(
        "--cuda-graphs",
        action="store_true",
        help="replay the action head's sampler as CUDA graphs (GPU only; same actions, fewer "
        "kernel launches at batch 1; = --runner cuda_graphs)",
    )
    p.add_argument(
        "--max-prompt-chars",
        type=int,
        default=None,
        metavar="N",
        help="refuse instructions longer than N characters (default 1000; bounds the server's "
        "memory: the language encoder caches each distinct instruction, at most 256 of them)",
    )
    p.add_argument(
        "--high-level-hz",
        type=float,
        default=None,
        metavar="HZ",
        help="hierarchical checkpoints (recipe 'hierarchy'): run the slow high level (System 2, "
        "the subtask) at most HZ times a second per client and the low level on every request "
        "with the latest subtask; replies add 'subtask' and 'high_level_ran'. Default: both on "
        "every request",
    )
    p.add_argument(
        "--control-hz",
        type=float,
        default=None,
        metavar="HZ",
        help="with --high-level-hz: the client's control rate, checked (>= --high-level-hz) and "
        "sent in the metadata",
    )
    add_runner_option(p)
    p.add_argument("--log-level", default="INFO")
    p.set_defaults(func=run)


def _load_policy(args: argparse.Namespace):
    if args.toy:
        from vlastack.serving.toy import ToyPolicy

        if args.embodiment is not None:
            raise ConfigError(
                "--embodiment picks a member of a mixture checkpoint; drop it with --toy"
            )
        if args.cuda_graphs:
            raise ConfigError("--cuda-graphs applies to checkpoints; drop it with --toy")
        return ToyPolicy(args.toy)
    if not args.checkpoint:
        raise ConfigError(
            "vlastack serve needs a CHECKPOINT folder (or --toy STYLE to try the protocol)"
        )
    from vlastack.policy_formats import resolve_checkpoint_arg

    args.checkpoint = str(resolve_checkpoint_arg(args.checkpoint))  # a hub id: its cached copy
    if not os.path.isdir(args.checkpoint):
        raise ConfigError(
            f"{args.checkpoint}: no such checkpoint folder; pass the folder written by `vlastack train`"
        )
    imported = _load_registered(args)
    if imported is not None:
        _set_threads(imported, args.threads)
        return imported
    try:
        from vlastack.policy import Policy
    except ImportError as exc:
        raise ConfigError(
            f"cannot import vlastack.policy ({exc}); this install cannot load checkpoints"
        ) from None
    try:
        from vlastack.training.distributed import pick_device

        policy = Policy.from_checkpoint(
            args.checkpoint, embodiment=args.embodiment, device=str(pick_device(args.device))
        )
    except VlastackError:
        raise
    except Exception as exc:
        raise ConfigError(
            f"{args.checkpoint}: could not load the policy ({type(exc).__name__}: {exc}); "
            "check that the folder is a complete vlastack checkpoint (config.json, weights, stats)"
        ) from None
    policy.use_runner("cuda_graphs" if args.cuda_graphs else args.runner)
    _set_threads(policy, args.threads)
    if policy.embodiment_name:
        logging.getLogger("vlastack.serving").info(
            "%s: acting as %r (robot_type %s) of the mixture %s; --embodiment NAME picks another",
            args.checkpoint,
            policy.embodiment_name,
            policy.metadata.get("robot_type"),
            policy.mixture_members,
        )
    return policy


def _load_registered(args: argparse.Namespace):
    """A checkpoint of a registered non-native format (a LeRobot ``pretrained_model`` folder,
    ``vlastack.policy_formats``) loaded on ``--device``; None for a native checkpoint."""
    from vlastack.policy_formats import detect_policy_format

    fmt = detect_policy_format(args.checkpoint)
    if fmt is None:
        return None
    if args.cuda_graphs:
        raise ConfigError(
            f"--cuda-graphs replays a vlastack action head; {args.checkpoint} is a "
            f"{fmt.name} checkpoint: drop --cuda-graphs"
        )
    from vlastack.training.distributed import pick_device

    device = str(pick_device(args.device))
    try:
        policy = fmt.obj.load(Path(args.checkpoint), embodiment=args.embodiment, device=device)
    except VlastackError:
        raise
    except Exception as exc:
        raise ConfigError(
            f"{args.checkpoint}: could not load the {fmt.name} checkpoint "
            f"({type(exc).__name__}: {exc})"
        ) from None
    runner = apply_runner(policy, getattr(args, "runner", "auto"), args.checkpoint, fmt.name)
    logging.getLogger("vlastack.serving").info(
        "%s: %s checkpoint on %s (runner %s)", args.checkpoint, fmt.name, device, runner
    )
    return policy


def _set_threads(policy, threads: int) -> None:
    import torch

    log = logging.getLogger("vlastack.serving")
    if threads < 0:
        raise ConfigError(f"--threads must be >= 0 (0 = pick by timing), got {threads}")
    if threads > 0:
        torch.set_num_threads(threads)
        log.info("inference threads: %d (--threads)", threads)
        return
    if getattr(getattr(policy, "device", None), "type", "cpu") != "cpu":
        return
    from vlastack.profiling import pick_inference_threads

    best, p50 = pick_inference_threads(policy)
    timings = ", ".join(f"{n}: {ms:.1f} ms" for n, ms in p50.items())
    log.info("inference threads: %d (timed at startup, p50 per call by threads: %s)", best, timings)


def run(args: argparse.Namespace) -> int:
    from vlastack.errors import require

    require("websockets", "serve", "the policy server")
    require("msgpack", "serve", "the policy server")
    from vlastack.serving.server import run_server

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("vlastack.serving.ws").setLevel(logging.WARNING)  # per-connection chatter
    api_key = args.api_key or os.environ.get("VLASTACK_API_KEY") or None
    if args.host not in ("127.0.0.1", "localhost", "::1") and api_key is None:
        logging.getLogger("vlastack.serving").warning(
            "serving on %s without an API key: anyone who can reach this port can drive the robot",
            args.host,
        )
    policy = _load_policy(args)
    if args.max_prompt_chars is not None:
        if args.max_prompt_chars < 1:
            raise ConfigError(f"--max-prompt-chars must be >= 1, got {args.max_prompt_chars}")
        if not hasattr(policy, "max_prompt_chars"):
            raise ConfigError(
                "--max-prompt-chars applies to vlastack checkpoints; this policy reads no "
                "instruction cap: drop the flag"
            )
        policy.max_prompt_chars = args.max_prompt_chars
    if args.high_level_hz is not None:
        from vlastack.serving.hierarchy import TwoRatePolicy

        if args.batch_window_ms:
            raise ConfigError(
                "--high-level-hz serves each client on its own: drop --batch-window-ms"
            )
        policy = TwoRatePolicy(policy, args.high_level_hz, args.control_hz)
    elif args.control_hz is not None:
        raise ConfigError("--control-hz goes with --high-level-hz (two rates); drop it")
    max_frame = None if args.max_frame_mb is None else int(args.max_frame_mb * 1024 * 1024)
    try:
        run_server(
            policy,
            host=args.host,
            port=args.port,
            api_key=api_key,
            max_frame_bytes=max_frame,
            batch_window_ms=args.batch_window_ms,
        )
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {args.host}:{args.port} ({exc.strerror}); pick another --port"
        ) from None
    return 0
