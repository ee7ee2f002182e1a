"""Training throughput (samples/s, data loading included) and peak memory, vlastack vs LeRobot.

Each vlastack recipe trains in its own subprocess (so peak RSS is its own) through
``training.loop.train`` on a real dataset at the recipe's CPU-default model size, with the
loop's automatic data workers and intra-op threads. samples/s is measured over the steps after
``--warmup`` (worker start and first decodes excluded), from the loop's per-step times.
LeRobot 0.4.4 (``--lerobot-python``, default /work/lerobot-venv/bin/python) trains ACT and
Diffusion Policy on the same dataset files with the same batch size, image size, horizons,
data-worker count and thread count, head widths matched to vlastack's ``act`` and
``diffusion_policy`` (dim 64, 4 heads, FFN 256, CVAE encoder 1 / decoder 2 layers; U-Net
down_dims (64, 128, 256), 100 DDPM steps). The vision backbones cannot be matched: LeRobot builds
a torchvision ResNet-18 (random init here, no download), vlastack MobileNetV2 (act) and a 16-wide
CNN (diffusion_policy); the parameter counts are printed beside the ratios.

    .venv/bin/python benchmarks/bench_train.py [--data /tmp/exp/data] [--steps 30] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "fixtures" / "lerobot_v3_tiny_two_cam"
RECIPES = ["cpu_default", "diffusion_policy", "act"]
LEROBOT_OF = {"act": "act", "diffusion_policy": "diffusion"}
# torchvision ResNet-18's shape as a transformers ResNetConfig (11.41M params with ACT's head vs
# LeRobot ACT's 11.44M): ``--same-arch`` compares the two loops on the same network, BatchNorm
# frozen on both sides (LeRobot builds its ResNet with torchvision's FrozenBatchNorm2d).
RESNET18_SHAPED = json.dumps(
    {
        "config": {
            "embedding_size": 64,
            "hidden_sizes": [64, 128, 256, 512],
            "depths": [2, 2, 2, 2],
            "layer_type": "basic",
        },
        "freeze_bn": True,
    }
)

# One LeRobot training step as lerobot_train.update_policy does it: preprocessor (normalize),
# policy.forward -> loss, backward, grad clip, AdamW step. Run with LeRobot's interpreter.
LEROBOT_SCRIPT = r"""
import json, os, resource, sys, time
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch
from lerobot.configs.types import FeatureType
from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata
from lerobot.datasets.utils import dataset_to_policy_features
from lerobot.datasets.factory import resolve_delta_timestamps
from lerobot.policies.factory import make_pre_post_processors

policy_name, root, steps, warmup, batch_size, workers, threads, camera, precision, device = sys.argv[1:11]
steps, warmup, batch_size, workers, threads = map(int, (steps, warmup, batch_size, workers, threads))
cuda = device == "cuda"


def main():
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    meta = LeRobotDatasetMetadata("local/bench", root=root)
    feats = dataset_to_policy_features(meta.features)
    keep_cam = f"observation.images.{camera}"
    inputs = {k: f for k, f in feats.items() if f.type is not FeatureType.ACTION and (
        f.type is not FeatureType.VISUAL or k == keep_cam)}
    outputs = {k: f for k, f in feats.items() if f.type is FeatureType.ACTION}
    if policy_name == "act":
        from lerobot.policies.act.configuration_act import ACTConfig as C
        from lerobot.policies.act.modeling_act import ACTPolicy as P
        cfg = C(input_features=inputs, output_features=outputs, device=device, chunk_size=20,
                n_action_steps=20, dim_model=64, n_heads=4, dim_feedforward=256,
                n_encoder_layers=1, n_decoder_layers=2, n_vae_encoder_layers=1, latent_dim=32,
                pretrained_backbone_weights=None, kl_weight=10.0)
    else:
        from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig as C
        from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy as P
        cfg = C(input_features=inputs, output_features=outputs, device=device, n_obs_steps=2,
                horizon=16, n_action_steps=8, down_dims=(64, 128, 256),
                diffusion_step_embed_dim=64, num_train_timesteps=100, crop_shape=None,
                pretrained_backbone_weights=None)
    delta = resolve_delta_timestamps(cfg, meta)
    ds = LeRobotDataset("local/bench", root=root, video_backend="pyav", delta_timestamps=delta)
    policy = P(cfg).to(device)
    # LeRobot's preprocessor moves the batch to cfg.device (its DeviceProcessorStep)
    pre, _ = make_pre_post_processors(cfg, dataset_stats=ds.meta.stats)
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-4, weight_decay=1e-4)
    g = torch.Generator(); g.manual_seed(0)
    kw = dict(persistent_workers=True, prefetch_factor=4, multiprocessing_context="forkserver") if workers else {}
    dl = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                                     generator=g, drop_last=True, pin_memory=cuda, **kw)
    it = iter(dl)
    policy.train()
    times = []
    for _ in range(warmup + steps):
        t = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            it = iter(dl); batch = next(it)
        batch = pre(batch)
        # lerobot_train.update_policy's use_amp: autocast around forward (bf16 on a CPU)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss, _ = policy.forward(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 10.0)
        opt.step(); opt.zero_grad()
        loss.item()  # as lerobot_train logs it each step; on a GPU this waits for the step
        times.append(time.perf_counter() - t)
    timed = times[warmup:]
    print(json.dumps({
        "params_M": sum(p.numel() for p in policy.parameters()) / 1e6,
        "samples_per_s": batch_size * len(timed) / sum(timed),
        "peak_rss_MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "threads": torch.get_num_threads(),
        "gpu_peak_MiB": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
    }))


if __name__ == "__main__":
    main()
"""


def one(recipe: str, data: str, steps: int, warmup: int, batch_size: int, extra: list[str]) -> dict:
    import torch

    from vlastack.training.config import TrainConfig
    from vlastack.training.distributed import pick_device
    from vlastack.training.loop import train

    with tempfile.TemporaryDirectory() as tmp:
        overrides = [
            f"--data={data}",
            f"--out_dir={tmp}/run",
            f"--steps={steps + warmup}",
            f"--batch_size={batch_size}",
            "--warmup_steps=1",
            "--log=none",
            "--progress=false",
            "--val_fraction=0",
            *extra,
        ]
        cfg = TrainConfig.from_recipe(recipe, overrides)
        t0 = time.monotonic()
        res = train(cfg)
        wall_s = time.monotonic() - t0
        timed = res.step_s[warmup:]
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    device = pick_device(cfg.device).type
    return {
        "system": "vlastack",
        "recipe": recipe,
        "params_M": res.param_counts["total"][0] / 1e6,
        "batch_size": batch_size,
        "steps": len(timed),
        "samples_per_s": batch_size * len(timed) / sum(timed),
        "peak_rss_MiB": rss_kib / 1024,
        "estimate_MiB": res.memory.total_bytes / 2**20 if res.memory else None,
        "wall_s": wall_s,
        "threads": torch.get_num_threads(),  # restored by train(); the run's own is in stdout
        "image_size": cfg.model.get("image_size"),
        "device": device,
        "gpu_peak_MiB": torch.cuda.max_memory_allocated() / 2**20 if device != "cpu" else None,
    }


def lerobot_row(
    python: str,
    policy: str,
    recipe: str,
    data: str,
    camera: str,
    steps: int,
    warmup: int,
    batch_size: int,
    workers: int,
    threads: int,
    precision: str = "fp32",
    device: str = "cpu",
) -> dict | None:
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(LEROBOT_SCRIPT)
    cmd = [python, f.name, policy, data, str(steps), str(warmup), str(batch_size)]
    cmd += [str(workers), str(threads), camera, precision, device]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    finally:
        os.unlink(f.name)
    if proc.returncode != 0:
        print(f"LeRobot {policy} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
        return None
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    row.update(system="lerobot", recipe=f"{policy} (vs {recipe})", batch_size=batch_size)
    row.update(steps=steps, estimate_MiB=None)
    return row


def run_line(stdout: str, prefix: str) -> str:
    return next((ln for ln in stdout.splitlines() if ln.startswith(prefix)), "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--steps", type=int, default=30, help="timed steps")
    ap.add_argument("--warmup", type=int, default=3, help="untimed first steps")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--recipes", default=",".join(RECIPES))
    ap.add_argument(
        "--lerobot-python",
        default=os.environ.get("VLASTACK_LEROBOT_PYTHON", "/work/lerobot-venv/bin/python"),
    )
    ap.add_argument("--no-lerobot", action="store_true")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="bf16: vlastack --precision=bf16 and LeRobot's use_amp (autocast) on both sides",
    )
    ap.add_argument(
        "--same-arch",
        action="store_true",
        help="act only: swap vlastack's vision for a ResNet-18-shaped hf_resnet (LeRobot's backbone)",
    )
    ap.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="cuda: both systems train on the GPU (vlastack --device=cuda, LeRobot cfg.device)",
    )
    ap.add_argument("extra", nargs="*", help="--key=value training overrides for vlastack")
    args = ap.parse_args()
    if args.one:
        row = one(args.one, args.data, args.steps, args.warmup, args.batch_size, args.extra)
        print(json.dumps(row))
        return
    sys.path.insert(0, str(REPO / "src"))
    from vlastack.data.format import DatasetReader

    reader = DatasetReader(args.data)
    cam_key = reader.camera_keys[0]
    camera = cam_key.removeprefix("observation.images.")
    height, width = reader.features[cam_key].shape[:2]
    rows = []
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    have_lerobot = not args.no_lerobot and Path(args.lerobot_python).exists()
    for recipe in args.recipes.split(","):
        cmd = [sys.executable, __file__, "--one", recipe, "--data", args.data]
        cmd += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
        cmd += ["--batch-size", str(args.batch_size)]
        # one camera at its stored size for every system, so LeRobot reads the same inputs
        cmd += ["--", f'--model.cameras=["{camera}"]', f"--model.image_size=[{height},{width}]"]
        cmd += [f"--precision={args.precision}"] if args.precision != "fp32" else []
        cmd += [f"--device={args.device}"]
        if args.same_arch and recipe == "act":
            cmd += ["--model.vision=hf_resnet", f"--model.vision_kwargs={RESNET18_SHAPED}"]
        cmd += args.extra
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            print(f"{recipe}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        cpu = run_line(proc.stdout, "CPU: ")  # "CPU: N intra-op threads, W data workers"
        words = cpu.split()
        row["threads"] = int(words[1]) if len(words) > 1 else row["threads"]
        row["num_workers"] = int(words[4]) if len(words) > 4 else 0
        rows.append(row)
        policy = LEROBOT_OF.get(recipe)
        if have_lerobot and policy:
            lr = lerobot_row(
                args.lerobot_python,
                policy,
                recipe,
                args.data,
                camera,
                args.steps,
                args.warmup,
                args.batch_size,
                row["num_workers"],
                row["threads"],
                args.precision,
                args.device,
            )
            if lr is not None:
                lr["num_workers"] = row["num_workers"]
                row["lerobot_samples_per_s"] = lr["samples_per_s"]
                row["speedup_vs_lerobot"] = row["samples_per_s"] / lr["samples_per_s"]
                rows.append(lr)
    gpu = ""
    if args.device == "cuda":
        import torch

        gpu = f", GPU {torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    print(
        f"data {args.data}, camera {camera} {height}x{width}, load average "
        f"{os.getloadavg()[0]:.2f}, {os.cpu_count()} cores{gpu}"
    )
    print(
        f"{'system':<10}{'recipe':<34}{'params M':>9}{'batch':>6}{'thr':>4}{'wrk':>4}"
        f"{'samples/s':>11}{'peak RSS MiB':>13}{'GPU MiB':>9}{'vs LeRobot':>11}"
    )
    for r in rows:
        ratio = f"{r['speedup_vs_lerobot']:.2f}x" if "speedup_vs_lerobot" in r else ""
        gpu_mib = f"{r['gpu_peak_MiB']:.0f}" if r.get("gpu_peak_MiB") else ""
        print(
            f"{r['system']:<10}{r['recipe']:<34}{r['params_M']:>9.2f}{r['batch_size']:>6}"
            f"{r.get('threads', 0):>4}{r.get('num_workers', 0):>4}{r['samples_per_s']:>11.1f}"
            f"{r['peak_rss_MiB']:>13.0f}{gpu_mib:>9}{ratio:>11}"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
