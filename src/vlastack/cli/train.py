"""``vlastack train RECIPE --data PATH [--key=value ...]``: train a recipe on a dataset.
``vlastack train --init-from CKPT --data PATH [--stats keep|recompute]``: fine-tune an imported
policy (a LeRobot ACT / Diffusion Policy pretrained_model folder) on a dataset instead.

Overrides are ``TrainConfig`` fields (``--steps=500``, ``--lora.rank=8``, ``--freeze=vision``)
or model-config fields under ``model.`` (``--model.action_horizon=8``). Several ``--data`` (or
``--data A:0.7,B:0.3``) train on a weighted mixture of datasets. Under torchrun the same
arguments go to ``python -m vlastack.train``.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vlastack.training.config import TrainConfig

EPILOG = """examples:
  vlastack train cpu_default --data data/pusht --steps=2000
  vlastack train smolvla --data data/libero --freeze=vision --lora.rank=8 --precision=bf16
  vlastack train act --data data/aloha --resume --out_dir=runs/act
  torchrun --nproc_per_node 2 -m vlastack.train cpu_default --data data/pusht --distributed=ddp

fine-tune an imported policy (LeRobot ACT / Diffusion Policy pretrained_model folder or cached id):
  vlastack train --init-from ckpts/act/pretrained_model --data data/mine --steps=2000
  vlastack train --init-from lerobot/diffusion_pusht --data data/pusht --stats recompute
  --stats keep|recompute: train with the checkpoint's normalization stats (default) or the
  dataset's meta/stats.json. --camera_map=CKPT_CAM=DATA_CAM maps a checkpoint camera onto a
  dataset camera of another name. --freeze=vision (ACT: vision, vae_encoder, encoder, decoder;
  Diffusion: vision, unet), --lora.rank=8, --resume work as for recipes. The checkpoint loads in
  `vlastack eval/serve` and `vlastack export lerobot RUN/checkpoints/last --out DIR` writes it
  back as a LeRobot folder.

mixtures of datasets (several robots in one model):
  vlastack train cpu_default --data data/pusht --data data/aloha     (or --data data/pusht,data/aloha)
  vlastack train cpu_default --data data/pusht:0.7,data/aloha:0.3
  --data PATH[:WEIGHT]: repeat it or join entries with commas. WEIGHT is the share of training
  samples drawn from that dataset (normalized to sum to 1). Without weights every window is
  equally likely, so datasets are sampled in proportion to their size. Give weights to all
  datasets or to none. Each dataset is normalized with its own stats; state/action are zero-padded
  to the largest size (padded dims masked in the loss) and a camera a dataset lacks is fed as a
  zero image. Validation runs per dataset (val/<name>/...). The checkpoint stores every dataset's
  stats and embodiment: Policy.from_checkpoint(path, embodiment=NAME) picks one (NAME = the
  dataset's folder name or its robot_type; default: the first dataset).
"""


def _known_parser(prog: str = "vlastack train") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "recipe", nargs="?", default="", help="recipe name (see `vlastack list recipes`)"
    )
    p.add_argument(
        "--init-from",
        default="",
        metavar="CKPT",
        help="fine-tune this imported policy (LeRobot ACT / Diffusion folder) instead of a recipe",
    )
    p.add_argument(
        "--stats",
        choices=["keep", "recompute"],
        default=None,
        help="with --init-from: the checkpoint's normalization stats (keep, default) or the "
        "dataset's (recompute)",
    )
    p.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="PATH[:WEIGHT]",
        help="dataset folder; repeat or join with commas to train on a mixture (see below)",
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out_dir")
    p.add_argument("--print-config", action="store_true", help="print the config and exit")
    return p


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    known = _known_parser()
    p = subparsers.add_parser(
        "train",
        help="train a recipe on a dataset (checkpoints, validation plots, TensorBoard logs)",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage=known.format_usage().removeprefix("usage: ").strip() + " [--key=value ...]",
    )
    p.add_argument("recipe", help="recipe name (see `vlastack list recipes`)")
    # Everything after the recipe: --data/--resume plus free-form --key=value overrides.
    p.add_argument(
        "rest", nargs=argparse.REMAINDER, help="--data PATH[:WEIGHT], --resume, --key=value"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return main([args.recipe, *args.rest])


def run_training(
    recipe: str,
    data: list[str],
    resume: bool,
    overrides: list[str],
    print_config: bool = False,
    init_from: str = "",
    stats: str | None = None,
) -> int:
    import json

    from vlastack.errors import ConfigError
    from vlastack.training.config import TrainConfig
    from vlastack.training.loop import train

    extra = [f"--data={d}" for d in data] if data else []
    if init_from:
        cfg = fine_tune_config(recipe, init_from, stats, [*overrides, *extra])
    elif not recipe:
        raise ConfigError(
            "vlastack train needs a recipe (see `vlastack list recipes`) or --init-from CKPT"
        )
    elif stats is not None:
        raise ConfigError("--stats applies to --init-from only; a recipe uses the dataset's stats")
    else:
        cfg = TrainConfig.from_recipe(recipe, [*overrides, *extra])
    if data:
        cfg.data = list(data)
    if resume:
        cfg.resume = True
    if print_config:
        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    result = train(cfg)
    if result.stopped_by == "SIGTERM":
        return 143
    if result.stopped_by == "SIGINT":
        return 130
    print(f"done: step {result.step}, last checkpoint {result.last_checkpoint}")
    return 0


def fine_tune_config(
    recipe: str, init_from: str, stats: str | None, overrides: list[str]
) -> TrainConfig:
    """LeRobot's hyperparameters for the folder (``init_from.init_defaults``) < overrides."""
    from pathlib import Path

    from vlastack.errors import ConfigError
    from vlastack.policy_formats import resolve_checkpoint_arg
    from vlastack.training.config import TrainConfig, apply_overrides
    from vlastack.training.init_from import init_defaults

    if recipe:
        raise ConfigError(
            f"--init-from trains the imported policy; drop the recipe name {recipe!r}"
        )
    folder = resolve_checkpoint_arg(init_from)
    if not Path(folder).is_dir():
        raise ConfigError(f"--init-from {init_from}: no such folder")
    # runs/finetune-<name>: the hub id's last part, or the folder's (its parent's for the
    # usual .../<name>/pretrained_model)
    where = Path(folder).resolve()
    name = where.parent.name if where.name == "pretrained_model" else where.name
    if not Path(init_from).exists():
        name = str(init_from).split("@")[0].rstrip("/").rsplit("/", 1)[-1]
    cfg = TrainConfig(out_dir=f"runs/finetune-{name or 'policy'}")
    for k, v in init_defaults(Path(folder)).items():
        setattr(cfg, k, v)
    apply_overrides(cfg, overrides)
    cfg.init_from = str(init_from)
    if stats is not None:
        cfg.stats = stats  # type: ignore[assignment]
    return cfg


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """Separate ``--key=value`` overrides from the arguments argparse knows."""
    known = ("--data", "--resume", "--print-config", "--init-from", "--stats", "-h", "--help")
    rest, overrides = [], []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("--") and "=" in a and not a.startswith(known):
            overrides.append(a)
        elif a.startswith("--") and a not in known and "=" not in a and not a.startswith(known):
            # `--key value` form
            if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                overrides.append(f"{a}={argv[i + 1]}")
                i += 1
            else:
                overrides.append(f"{a}=true")
        else:
            rest.append(a)
        i += 1
    return rest, overrides


def main(argv: list[str] | None = None, prog: str = "vlastack train") -> int:
    """Parse ``RECIPE --data PATH [--resume] [--key=value ...]`` and train."""
    argv = list(sys.argv[1:] if argv is None else argv)
    rest, overrides = split_overrides(argv)
    args = _known_parser(prog).parse_args(rest)
    return run_training(
        args.recipe,
        args.data,
        args.resume,
        overrides,
        args.print_config,
        args.init_from,
        args.stats,
    )
