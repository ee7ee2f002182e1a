"""``vlastack robot``: run a policy on a robot (or simulator) with the safety layer on.

The policy is a CHECKPOINT run in this process, or ``--server HOST:PORT`` (a ``vlastack serve``
or any openpi-protocol server). The robot is ``--env NAME`` (a vlastack simulator, one control
tick = one env step, paced at ``--control-hz``; ``aloha/TASK`` runs with .venv-aloha's python and
--server, as gym-aloha lives in its own venv) or ``--lerobot MODULE:FACTORY`` (a function that
returns an object with LeRobot's ``Robot`` API, e.g. an SO-100 follower; LeRobot is not a
dependency of vlastack). Chunks run through the action runtime ``--strategy``; ``rtc`` works
in process and against a server whose metadata advertises guidance (the ``rtc/*`` fields of
``serving.guidance``).

Safety is always on: actions are clamped to the action range (the intersection of what the
checkpoint's and the robot's embodiment declare, else the checkpoint's action stats), limited in
change per tick and velocity, and a non-finite action, a chunk older than ``--stale-after-s`` or
a lost server holds the robot where it is. ``--limits FILE`` (YAML or JSON: low, high, max_delta,
max_velocity, safe_action, stale_after_s) overrides any of them. ``--record DIR`` writes every
rollout (observations, commands, the policy's raw actions, interventions) as a LeRobot v3
dataset. ``--teleop MODULE:FACTORY`` (a function returning an object with LeRobot's
``Teleoperator`` API, or a ``vlastack.robot.intervention.TeleopIntervention``) lets a person take
over while it reports an intervention (its ``get_teleop_events()`` ``is_intervention``, as
LeRobot's gamepad and keyboard teleops do); those ticks send the teleop's action, through the
same safety layer, and are recorded with ``intervention`` True. A teleop that cannot say when a
person intervenes (a leader arm) gets a switch: ``--intervene-key SPACE`` (a key in this
terminal toggles it; the terminal's settings are restored on exit, Ctrl-C included; off, with a
message, when stdin is not a terminal) and/or ``--intervene-pedal /dev/input/eventN`` (a foot
pedal or any Linux input device: held down = a person drives; ``--pedal-mode toggle``,
``--pedal-code N`` for one key). Either overrides the teleop's own events.

A hierarchical checkpoint (recipe ``hierarchy``) runs at two rates with ``--high-level-hz``: System
2 names the subtask every ``--control-hz / --high-level-hz`` ticks, System 1 acts on it every tick
(``--high-level-async``: System 2 in a background thread, so it never stalls a tick).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
from collections.abc import Callable
from typing import Any

from vlastack.cli.two_rate import add_two_rate_args, two_rate_options
from vlastack.errors import ConfigError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "robot",
        help="run a policy on a robot or simulator, safety layer on",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", nargs="?", help="checkpoint folder to run in this process")
    p.add_argument("--server", metavar="HOST:PORT", help="policy server to ask for chunks")
    p.add_argument("--api-key", default=None, help="the server's API key")
    robot = p.add_mutually_exclusive_group(required=True)
    robot.add_argument("--env", help="vlastack simulator to drive (metaworld/reach-v3, pusht ...)")
    robot.add_argument(
        "--lerobot", metavar="MODULE:FACTORY", help="function returning a LeRobot-API robot"
    )
    p.add_argument("--strategy", default="sync", choices=["sync", "ensemble", "async", "rtc"])
    p.add_argument("--execute-horizon", type=int, default=None, help="sync: actions per chunk")
    p.add_argument("--threshold", type=float, default=None, help="async/rtc: request threshold")
    p.add_argument("--control-hz", type=float, default=None, help="default: the robot's rate")
    add_two_rate_args(p, "the control rate (--control-hz, default the robot's)")
    p.add_argument("--episodes", type=int, default=1)
    p.add_argument("--max-ticks", type=int, default=200, help="control ticks per episode")
    p.add_argument("--seed", type=int, default=0, help="first episode's seed (simulators)")
    p.add_argument("--task", default="", help="prompt when the robot's observation has none")
    p.add_argument("--limits", metavar="FILE", help="safety limits override (YAML or JSON)")
    p.add_argument(
        "--stale-after-s",
        type=float,
        default=None,
        help="hold when the newest chunk is older (default: 1.5x its executed part)",
    )
    p.add_argument(
        "--abort-after-s",
        type=float,
        default=5.0,
        help="end an episode after this long without a usable action",
    )
    p.add_argument(
        "--obs-key",
        action="append",
        default=[],
        metavar="OURS=THEIRS",
        help="rename an observation key for the server (repeatable), e.g. "
        "observation.images.front=observation/image",
    )
    p.add_argument(
        "--teleop",
        metavar="MODULE:FACTORY",
        help="function returning a LeRobot-API teleoperator a person takes over with",
    )
    p.add_argument(
        "--intervene-key",
        metavar="KEY",
        help="with --teleop: a key in this terminal (SPACE, ENTER, TAB or one character) "
        "toggles who drives: press to take over, again to hand back",
    )
    p.add_argument(
        "--intervene-pedal",
        metavar="DEVICE",
        help="with --teleop: a foot pedal (a Linux input device, /dev/input/eventN or "
        "/dev/input/by-id/...): a person drives while it is held down",
    )
    p.add_argument(
        "--pedal-mode",
        choices=["hold", "toggle"],
        default="hold",
        help="hold: drive while held (default); toggle: each press toggles",
    )
    p.add_argument(
        "--pedal-code",
        type=int,
        default=None,
        metavar="N",
        help="react to this Linux key code only (default: any key of the device)",
    )
    p.add_argument("--record", metavar="DIR", help="record rollouts as a LeRobot v3 dataset")
    p.add_argument("--record-images", choices=["video", "png"], default="video")
    p.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        default=None,
        metavar=("H", "W"),
        help="simulator camera size (default: the size the policy was trained at, from its "
        "metadata; another size warns)",
    )
    p.add_argument(
        "--device", default="auto", help="in-process policy: auto (cuda if any), cpu, cuda:N"
    )
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    p.set_defaults(func=run)


def _policy(args: argparse.Namespace) -> tuple[Any, dict[str, Any], Any, Any]:
    """(policy, metadata, checkpoint embodiment or None, action stats dict or None)."""
    from vlastack.embodiment import EmbodimentSpec

    if args.server and args.checkpoint:
        raise ConfigError("give a CHECKPOINT or --server HOST:PORT, not both")
    if args.server:
        if args.high_level_hz is not None:
            raise ConfigError(
                "--high-level-hz runs System 2 in this process; a server runs its own rates: "
                "start it with `vlastack serve CHECKPOINT --high-level-hz H --control-hz C` and "
                "drop --high-level-hz here"
            )
        from vlastack.errors import require
        from vlastack.robot.sources import PolicyLostError, RemotePolicy

        require("websockets", "serve", "talking to a policy server")
        host, _, port = args.server.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"--server {args.server!r}: expected HOST:PORT, e.g. 127.0.0.1:8000")
        remote = RemotePolicy(host, int(port), api_key=args.api_key)
        try:
            meta = remote.connect(timeout_s=30.0)
        except PolicyLostError as exc:
            raise ConfigError(f"{exc}; start it with `vlastack serve CHECKPOINT`") from None
        if args.strategy == "rtc" and not remote.supports_guided_sampling:
            raise ConfigError(
                f"--strategy rtc: the server at {args.server} does not advertise real-time-"
                "chunking guidance (no 'rtc' entry in its metadata: an openpi server, an older "
                "vlastack, or a policy without a flow-matching head); use --strategy async"
            )
        emb = meta.get("embodiment")
        spec = EmbodimentSpec.from_dict(emb, source=f"{args.server} metadata") if emb else None
        return remote, meta, spec, None
    if not args.checkpoint:
        raise ConfigError("vlastack robot needs a CHECKPOINT folder or --server HOST:PORT")
    from vlastack.policy import Policy
    from vlastack.training.distributed import pick_device

    policy = Policy.from_checkpoint(
        args.checkpoint, device=str(pick_device(args.device)), execute_horizon=args.execute_horizon
    )
    meta = dict(getattr(policy, "metadata", {}) or {})
    normalizer = getattr(policy, "normalizer", None)
    stats = getattr(normalizer, "stats", None) if normalizer is not None else None
    return policy, meta, getattr(policy, "embodiment", None), stats


def _robot(args: argparse.Namespace, meta: dict[str, Any]) -> Any:
    from vlastack.image_size import choose_image_size, metadata_image_size
    from vlastack.robot.adapters import GymRobot, LeRobotRobot

    if args.env:
        source = args.server or args.checkpoint or "the policy"
        size = choose_image_size(args.image_size, metadata_image_size(meta), source=source)
        args.image_size = list(size)

    # camera names; an imported LeRobot policy lists its input keys (observation.images.top)
    cams = [str(c).removeprefix("observation.images.") for c in meta.get("cameras") or []]
    if args.env and args.env.startswith("aloha/"):
        from vlastack.robot.adapters import aloha_robot

        return aloha_robot(args.env.split("/", 1)[1], cams, args.image_size[0])
    if args.env:
        from vlastack.envs import make_env

        camera = cams[0] if len(cams) == 1 else None
        env = make_env(args.env, camera=camera, image_size=tuple(args.image_size), seed=args.seed)
        return GymRobot(env)
    factory = _load_factory(args.lerobot, "--lerobot")
    if args.control_hz is None:
        raise ConfigError("--lerobot needs --control-hz (the rate the arm is driven at)")
    return LeRobotRobot(factory(), control_hz=args.control_hz)


def _load_factory(text: str, flag: str) -> Any:
    module, _, name = text.partition(":")
    if not module or not name:
        raise ConfigError(f"{flag} {text!r}: expected MODULE:FACTORY, e.g. my_arm:make")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{flag} {text}: cannot load it ({exc})") from None


def _switches(args: argparse.Namespace) -> list[Any]:
    """The --intervene-key / --intervene-pedal switches, not started yet."""
    from vlastack.robot.switches import EvdevPedalSwitch, TerminalKeySwitch, parse_key

    switches: list[Any] = []
    if args.intervene_key or args.intervene_pedal:
        if not args.teleop:
            flag = "--intervene-key" if args.intervene_key else "--intervene-pedal"
            raise ConfigError(
                f"{flag} says when a person takes over, --teleop MODULE:FACTORY with what "
                "(a leader arm, a gamepad): add --teleop"
            )
    elif args.pedal_code is not None or args.pedal_mode != "hold":
        raise ConfigError("--pedal-mode / --pedal-code need --intervene-pedal DEVICE")
    if args.intervene_key:
        parse_key(args.intervene_key, "--intervene-key")
        switches.append(TerminalKeySwitch(args.intervene_key))
    if args.intervene_pedal:
        switches.append(
            EvdevPedalSwitch(
                args.intervene_pedal,
                code=args.pedal_code,
                mode=args.pedal_mode,
                flag="--intervene-pedal",
            )
        )
    return switches


def _intervention(args: argparse.Namespace, action_names: list[str], switches: list[Any]) -> Any:
    from vlastack.robot.intervention import TeleopIntervention

    if not args.teleop:
        return None
    flag: Callable[[], bool] | None = None
    if len(switches) == 1:
        flag = switches[0]
    elif switches:
        flag = lambda: any(s() for s in switches)  # noqa: E731
    made = _load_factory(args.teleop, "--teleop")()
    if isinstance(made, TeleopIntervention):
        if flag is None:
            return made
        made = made.teleop  # the switch decides when, the factory's teleop what
    return TeleopIntervention(made, action_names, intervening=flag)


def _start_switches(switches: list[Any], args: argparse.Namespace) -> None:
    for switch in switches:
        if not switch.start():  # only the key switch declines (no terminal)
            print(
                f"--intervene-key {args.intervene_key} is off: {switch.reason}; the policy "
                "drives throughout. Run in a terminal (in the foreground) or use "
                "--intervene-pedal DEVICE",
                flush=True,
            )


def run(args: argparse.Namespace) -> int:
    from vlastack.robot.record import RolloutRecorder
    from vlastack.robot.runner import RobotRunner, stale_default
    from vlastack.robot.safety import SafetyFilter, limits_for, read_limits_file

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.episodes < 1 or args.max_ticks < 1:
        raise ConfigError("--episodes and --max-ticks must be >= 1")
    high_level = two_rate_options(args)
    switches = _switches(args)  # flag mistakes before anything loads or connects
    policy, meta, ckpt_spec, stats = _policy(args)
    robot = _robot(args, meta)
    spec = robot.embodiment
    if ckpt_spec is not None and ckpt_spec.action.dim != spec.action.dim:
        raise ConfigError(
            f"the policy acts for {ckpt_spec.robot_type!r} with {ckpt_spec.action.dim} actions; "
            f"the robot {spec.robot_type!r} takes {spec.action.dim}: use a checkpoint for it"
        )
    control_hz = float(args.control_hz or spec.control_hz)
    limits = limits_for(
        list(spec.action.names),
        control_hz,
        checkpoint=ckpt_spec,
        robot=spec,
        stats=stats,
        overrides=read_limits_file(args.limits) if args.limits else None,
        overrides_source=args.limits or "",
        stale_after_s=args.stale_after_s or stale_default(meta, control_hz),
    )
    logging.getLogger("vlastack.robot").info("safety: %s", limits.describe())
    rk: dict[str, Any] = {}
    if args.strategy == "sync":
        rk["execute_horizon"] = args.execute_horizon or meta.get("execute_horizon")
    if args.threshold is not None:
        rk["threshold"] = args.threshold
    rename = {}
    for item in args.obs_key:
        ours, sep, theirs = item.partition("=")
        if not sep or not ours or not theirs:
            raise ConfigError(f"--obs-key {item!r}: expected OURS=THEIRS")
        rename[ours] = theirs
    recorder = None
    if args.record:
        recorder = RolloutRecorder(args.record, spec, use_videos=args.record_images == "video")
    runner = RobotRunner(
        robot,
        policy,
        SafetyFilter(limits),
        strategy=args.strategy,
        runtime_kwargs=rk,
        control_hz=control_hz,
        task=args.task,
        abort_after_s=args.abort_after_s,
        recorder=recorder,
        rename=rename,
        intervention=_intervention(args, list(spec.action.names), switches),
        high_level=high_level,
    )
    results = []
    robot.connect()
    if runner.intervention is not None:
        runner.intervention.connect()
    try:
        # after connecting (calibration may ask for Enter); closed first: the terminal's
        # settings come back before anything else is cleaned up, Ctrl-C and SIGTERM included
        with contextlib.ExitStack() as stack:
            for switch in switches:
                stack.callback(switch.close)
            _start_switches(switches, args)
            for ep in range(args.episodes):
                res = runner.run_episode(args.max_ticks, seed=args.seed + ep)
                results.append(res.summary())
                print(f"episode {ep}: {json.dumps(results[-1])}")
    finally:
        runner.close()
        if recorder is not None:
            recorder.close()
        if runner.intervention is not None:
            runner.intervention.disconnect()
        robot.disconnect()
    total = {
        "episodes": len(results),
        "ticks": sum(r["ticks"] for r in results),
        "successes": sum(bool(r["success"]) for r in results),
        "violations": sum(r["violations"] for r in results),
        "human_ticks": sum(r["human_ticks"] for r in results),
        "interventions": {},
    }
    if args.high_level_hz is not None:
        total["high_level_runs"] = sum(r["high_level"]["high_level_runs"] for r in results)
    for r in results:
        for k, v in r["interventions"].items():
            total["interventions"][k] = total["interventions"].get(k, 0) + v
    print(
        f"{total['episodes']} episode(s), {total['ticks']} ticks, {total['successes']} success(es); "
        f"safety interventions {total['interventions'] or 'none'}; "
        f"ticks a person drove: {total['human_ticks']}; "
        f"commands outside the limits: {total['violations']}"
    )
    if args.high_level_hz is not None:
        mode = "in the background" if args.high_level_async else "synchronously"
        print(
            f"two rates: System 2 at {args.high_level_hz:g} Hz ({mode}), System 1 at "
            f"{control_hz:g} Hz; System 2 ran {total['high_level_runs']} time(s)"
        )
    if args.record:
        print(f"recorded to {args.record}")
    if args.json:
        print(json.dumps(total))
    return 1 if total["violations"] else 0
