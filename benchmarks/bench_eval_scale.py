"""Episodes per hour of ``vlastack eval`` with the process pool and with Ray, same checkpoint.

For each env (Meta-World reach-v3 + push-v3, PushT) a tiny random vlastack VLA checkpoint is
built for that env's embodiment (small CNN, L1 head, 8-action chunks; the same checkpoint for
both executors), then ``evaluate`` runs the same episodes (same tasks, seeds, max steps) with
``executor="pool"`` and ``executor="ray"`` (a local Ray instance started on demand with
``num_cpus=workers``). Reported per run: end-to-end episodes/hour (wall time including starting
workers, Ray itself and building the policy and envs: what a user waits for), steady-state
episodes/hour (episodes / summed episode time x workers: the rate once everything is up), the
success rate and whether the per-episode outcomes of both executors are identical. Prints a
table and a last-line JSON.

A random policy rarely succeeds and runs to ``--max-steps``, so the rates are those of full-length
episodes.

``--lerobot PYTHON_DIR`` (a venv's bin/ with LeRobot 0.6.1 and gym-pusht, e.g. .venv-lerobot/bin)
adds PushT with one LeRobot-format ACT folder (ResNet-18 backbone, random weights seeded, 96x96
camera, chunk 10 executed whole) run three ways: ``lerobot-eval`` (its vectorized env in one
process, ``batch_size`` = workers, ``use_async_envs=false`` since its default async envs fail on
PushT in LeRobot 0.6.1 here, its default videos of up to 10 episodes, at 96x96), and ``vlastack
eval`` on the pool and on Ray (one video per task, 96x96). Success is 0% for all (random weights),
seeds differ between the two harnesses.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")


def tiny_checkpoint(root: Path, task: str) -> Path:
    """A randomly initialised tiny VLA for ``task``'s embodiment (weights seeded)."""
    import numpy as np
    import torch

    from vlastack.data.normalization import Normalizer
    from vlastack.envs import make_env
    from vlastack.models.vla import VLAConfig, build_vla
    from vlastack.training.checkpoint import save_checkpoint

    env = make_env(task, image_size=(128, 128))
    emb = env.embodiment
    env.close()
    torch.manual_seed(0)
    cfg = VLAConfig(
        action_dim=emb.action.dim,
        action_horizon=8,
        obs_horizon=1,
        state_dim=emb.state.dim,
        cameras=[emb.cameras[0].name],
        image_size=(32, 32),
        width=32,
        vision="small_cnn",
        vision_kwargs={"width": 8, "num_blocks": 2, "out_dim": 32},
        vision_pooled=True,
        language="none",
        head="l1",
        head_kwargs={"width": 32, "depth": 1, "num_heads": 2, "resnet_blocks": 1},
    )

    def stats(spec) -> dict:
        lo = np.asarray(spec.low if spec.low is not None else [-1.0] * spec.dim, dtype=float)
        hi = np.asarray(spec.high if spec.high is not None else [1.0] * spec.dim, dtype=float)
        return {
            "mean": ((lo + hi) / 2).tolist(),
            "std": ((hi - lo) / 4).tolist(),
            "min": lo.tolist(),
            "max": hi.tolist(),
        }

    norm = Normalizer(
        {"observation.state": stats(emb.state), "action": stats(emb.action)},
        {"observation.state": "mean_std", "action": "mean_std"},
    )
    return save_checkpoint(
        root,
        1,
        weights=build_vla(cfg).state_dict(),
        config={"model": cfg.to_dict(), "train": {"seed": 0}},
        normalization=norm.to_dict(),
        embodiment=emb,
    )


def lerobot_act_folder(dst: Path) -> Path:
    """A LeRobot 0.6.1 ACT ``pretrained_model`` folder for PushT: config from LeRobot's defaults
    (ResNet-18, chunk 10), weights of vlastack's key-for-key network (seeded), processors and
    stats in LeRobot's layout. LeRobot's env image key is renamed to the policy's camera."""
    import torch
    from safetensors.torch import save_file

    from vlastack.pretrained.lerobot.act import ACTNetwork, ACTSpec

    dst.mkdir(parents=True)
    inputs = {
        "observation.images.top": {"type": "VISUAL", "shape": [3, 96, 96]},
        "observation.state": {"type": "STATE", "shape": [2]},
    }
    outputs = {"action": {"type": "ACTION", "shape": [2]}}
    norm_map = {"VISUAL": "MEAN_STD", "STATE": "MEAN_STD", "ACTION": "MEAN_STD"}
    cfg = {
        "type": "act",
        "n_obs_steps": 1,
        "input_features": inputs,
        "output_features": outputs,
        "device": "cpu",
        "chunk_size": 10,
        "n_action_steps": 10,
        "normalization_mapping": norm_map,
        "vision_backbone": "resnet18",
        "pretrained_backbone_weights": None,
        "use_vae": True,
    }
    (dst / "config.json").write_text(json.dumps(cfg))
    torch.manual_seed(0)
    net = ACTNetwork(ACTSpec.from_config(cfg))
    weights = {k: v.contiguous() for k, v in net.state_dict().items()}
    save_file(weights, str(dst / "model.safetensors"))
    stats = {
        "observation.images.top.mean": torch.full((3, 1, 1), 0.5),
        "observation.images.top.std": torch.full((3, 1, 1), 0.25),
        "observation.state.mean": torch.full((2,), 256.0),
        "observation.state.std": torch.full((2,), 100.0),
        "action.mean": torch.full((2,), 256.0),
        "action.std": torch.full((2,), 100.0),
    }
    pre_stats = "policy_preprocessor_step_3_normalizer_processor.safetensors"
    post_stats = "policy_postprocessor_step_0_unnormalizer_processor.safetensors"
    save_file(stats, str(dst / pre_stats))
    save_file({k: v for k, v in stats.items() if k.startswith("action")}, str(dst / post_stats))
    norm = {"eps": 1e-8, "features": {**inputs, **outputs}, "norm_map": norm_map}
    device = {"registry_name": "device_processor", "config": {"device": "cpu", "float_dtype": None}}
    rename = {"observation.image": "observation.images.top"}
    pre = [
        {"registry_name": "rename_observations_processor", "config": {"rename_map": rename}},
        {"registry_name": "to_batch_processor", "config": {}},
        device,
        {"registry_name": "normalizer_processor", "config": norm, "state_file": pre_stats},
    ]
    unnorm = {**norm, "features": outputs}
    post = [
        {"registry_name": "unnormalizer_processor", "config": unnorm, "state_file": post_stats},
        device,
    ]
    (dst / "policy_preprocessor.json").write_text(json.dumps({"steps": pre}))
    (dst / "policy_postprocessor.json").write_text(json.dumps({"steps": post}))
    return dst


def run_lerobot(bin_dir: Path, folder: Path, out: Path, args: argparse.Namespace) -> dict:
    """``lerobot-eval`` on PushT with the same folder and episode length; wall time of the
    command (interpreter start and imports included, as for vlastack's end-to-end rate)."""
    import re
    import subprocess

    n = args.episodes_per_task
    cmd = [
        str(bin_dir / "lerobot-eval"),
        f"--policy.path={folder}",
        "--policy.device=cpu",
        "--env.type=pusht",
        "--env.observation_height=96",
        "--env.observation_width=96",
        "--env.visualization_height=96",
        "--env.visualization_width=96",
        f"--env.episode_length={args.max_steps}",
        f"--eval.n_episodes={n}",
        f"--eval.batch_size={args.workers}",
        # its default async (subprocess) envs fail here: the subprocesses never import gym_pusht
        "--eval.use_async_envs=false",
        f"--output_dir={out}",
        '--rename_map={"observation.image": "observation.images.top"}',
    ]
    t0 = time.perf_counter()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # its own venv only
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"lerobot-eval failed:\n{proc.stderr[-3000:]}")
    found = re.findall(
        r"'pc_success': ([0-9.]+), 'n_episodes': (\d+), 'eval_s': ([0-9.]+)", proc.stderr
    )
    pc, n_done, eval_s = found[-1]
    return {
        "env": "pusht (LeRobot ACT)",
        "executor": "lerobot-eval",
        "workers": args.workers,
        "episodes": int(n_done),
        "errors": 0,
        "steps": None,
        "success_rate": float(pc) / 100,
        "wall_s": round(wall, 2),
        "episodes_per_hour": round(int(n_done) / wall * 3600, 1),
        "steady_episodes_per_hour": round(int(n_done) / float(eval_s) * 3600, 1),
        "outcomes": None,
    }


def run(
    ckpt: Path,
    env: str,
    tasks: list[str],
    executor: str,
    args: argparse.Namespace,
    videos: int = 0,
    size: int | None = None,
    name: str | None = None,
) -> dict:
    from vlastack.evaluation.rollout import evaluate

    t0 = time.perf_counter()
    res = evaluate(
        ckpt,
        env,
        tasks=tasks,
        episodes_per_task=args.episodes_per_task,
        workers=args.workers,
        max_steps=args.max_steps,
        image_size=(size or args.image_size,) * 2,
        video_episodes_per_task=videos,
        executor=executor,
        progress=False,
    )
    wall = time.perf_counter() - t0  # Ray's start and shutdown included
    recs = res.records
    n = len(recs)
    episode_s = sum(r.wall_s for r in recs)
    return {
        "env": name or env,
        "executor": executor,
        "workers": args.workers,
        "episodes": n,
        "errors": sum(r.status == "error" for r in recs),
        "steps": sum(r.steps for r in recs),
        "success_rate": res.success_rate,
        "wall_s": round(wall, 2),
        "episodes_per_hour": round(n / wall * 3600, 1),
        "steady_episodes_per_hour": round(n / episode_s * args.workers * 3600, 1),
        "outcomes": [(r.task, r.episode, r.seed, r.status, r.steps) for r in recs],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--envs", default="metaworld,pusht", help="metaworld and/or pusht")
    ap.add_argument("--executors", default="pool,ray")
    ap.add_argument("--episodes-per-task", type=int, default=6)
    ap.add_argument("--max-steps", type=int, default=100)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--lerobot", default=None, metavar="BIN_DIR", help="e.g. .venv-lerobot/bin")
    args = ap.parse_args()
    suites = {
        "metaworld": ("metaworld/mt10", ["metaworld/reach-v3", "metaworld/push-v3"]),
        "pusht": ("pusht", ["pusht"]),
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.envs.split(","):
            env, tasks = suites[name]
            ckpt = tiny_checkpoint(Path(tmp) / name, tasks[0])
            for ex in args.executors.split(","):
                rows.append(run(ckpt, env, tasks, ex, args))
        if args.lerobot:
            folder = lerobot_act_folder(Path(tmp) / "lerobot_act")
            rows.append(run_lerobot(Path(args.lerobot), folder, Path(tmp) / "lerobot_out", args))
            for ex in args.executors.split(","):
                label = "pusht (LeRobot ACT)"
                rows.append(run(folder, "pusht", ["pusht"], ex, args, 1, 96, label))
    for env_name in {r["env"] for r in rows}:
        same = [r for r in rows if r["env"] == env_name and r["outcomes"] is not None]
        for r in same:
            r["same_outcomes_as_pool"] = r["outcomes"] == same[0]["outcomes"]
    print(
        f"{args.episodes_per_task} episodes/task, <= {args.max_steps} steps, "
        f"{args.image_size}x{args.image_size}, {args.workers} workers, cpus={os.cpu_count()}"
    )
    print(
        f"{'env':<20}{'executor':<13}{'episodes':>9}{'errors':>7}{'success':>8}{'wall s':>8}"
        f"{'ep/h':>9}{'steady ep/h':>13}{'same':>6}"
    )
    for r in rows:
        print(
            f"{r['env']:<20}{r['executor']:<13}{r['episodes']:>9}{r['errors']:>7}"
            f"{r['success_rate'] or 0:>8.2f}{r['wall_s']:>8.1f}{r['episodes_per_hour']:>9.0f}"
            f"{r['steady_episodes_per_hour']:>13.0f}{str(r.get('same_outcomes_as_pool', '-')):>6}"
        )
    for r in rows:
        del r["outcomes"]
    print(json.dumps({"bench": "eval_scale", "rows": rows}))


if __name__ == "__main__":
    main()
