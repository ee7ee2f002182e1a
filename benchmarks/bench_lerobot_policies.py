"""LeRobot ACT / Diffusion Policy latency beside vlastack's heads at matched sizes (issue 4).

Run with LeRobot's interpreter (``/work/lerobot-venv/bin/python``); vlastack is imported from
``src/`` so both run in the same process, same torch, same thread count (1). State-only inputs
(observation.state 7-d, observation.environment_state 16-d) so no image encoder is timed.
ACT: dim 256, 4 heads, FFN 1024, 4 decoder layers, 1 encoder layer, chunk 16, latent 32 vs
vlastack ``act`` (width 256, 4 heads, decoder_depth 4) over 3 context tokens (LeRobot ACT's
encoder sees latent + state + env tokens). Diffusion: DDIM 10 steps, horizon 16, 100 train steps;
LeRobot's 1-D conv U-Net with down_dims (128,256,512) and (64,128,256) (its default
(512,1024,2048) has 249M parameters, ~15 s per chunk on the 2-core CI machine) vs vlastack's
transformer denoiser (width 256, depth 4): different architectures, same sampler and steps.
Prints one JSON list on the last line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

S, E, H, A = 7, 16, 16, 7


def timed(fn, iters: int) -> np.ndarray:
    for _ in range(2):
        fn()
    out = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e3)
    return np.array(out)


def row(policy: str, module: torch.nn.Module, ms: np.ndarray, config: str) -> dict:
    return {
        "policy": policy,
        "params_M": sum(p.numel() for p in module.parameters()) / 1e6,
        "latency_b1_p50_ms": float(np.percentile(ms, 50)),
        "latency_b1_p95_ms": float(np.percentile(ms, 95)),
        "config": config,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.act.configuration_act import ACTConfig
    from lerobot.policies.act.modeling_act import ACTPolicy
    from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig
    from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy

    from vlastack.models.action_heads import build_action_head

    feats_in = {
        "observation.state": PolicyFeature(FeatureType.STATE, (S,)),
        "observation.environment_state": PolicyFeature(FeatureType.ENV, (E,)),
    }
    feats_out = {"action": PolicyFeature(FeatureType.ACTION, (A,))}
    rows = []
    torch.manual_seed(0)
    with torch.inference_mode():
        cfg = ACTConfig(
            input_features=feats_in,
            output_features=feats_out,
            chunk_size=H,
            n_action_steps=H,
            dim_model=256,
            n_heads=4,
            dim_feedforward=1024,
            n_encoder_layers=1,
            n_decoder_layers=4,
            latent_dim=32,
            device="cpu",
        )
        pol = ACTPolicy(cfg).eval()
        b = {
            "observation.state": torch.randn(1, S),
            "observation.environment_state": torch.randn(1, E),
        }
        rows.append(
            row(
                "lerobot_act",
                pol,
                timed(lambda: pol.model(b), args.iters),
                "dim 256, heads 4, ffn 1024, enc 1, dec 4, chunk 16",
            )
        )
        ours = build_action_head(
            "act",
            {"width": 256, "num_heads": 4, "decoder_depth": 4},
            context_dim=256,
            action_dim=A,
            action_horizon=H,
        ).eval()
        c, m = torch.randn(1, 3, 256), torch.ones(1, 3, dtype=torch.bool)
        rows.append(
            row(
                "vlastack_act",
                ours,
                timed(lambda: ours.sample_actions(c, m), args.iters),
                "width 256, heads 4, mlp 1024, dec 4, 3 context tokens",
            )
        )
        for dims in ((128, 256, 512), (64, 128, 256)):
            dcfg = DiffusionConfig(
                input_features=feats_in,
                output_features=feats_out,
                horizon=H,
                n_obs_steps=2,
                n_action_steps=8,
                noise_scheduler_type="DDIM",
                num_train_timesteps=100,
                num_inference_steps=10,
                down_dims=dims,
                device="cpu",
            )
            dp = DiffusionPolicy(dcfg).eval()
            db = {
                "observation.state": torch.randn(1, 2, S),
                "observation.environment_state": torch.randn(1, 2, E),
            }
            rows.append(
                row(
                    f"lerobot_dp{dims[0]}",
                    dp,
                    timed(lambda dp=dp, db=db: dp.diffusion.generate_actions(db), args.iters),
                    f"1-D U-Net down_dims {dims}, DDIM 10 steps, horizon 16",
                )
            )
        ours_d = build_action_head(
            "diffusion", None, context_dim=256, action_dim=A, action_horizon=H
        ).eval()
        c, m = torch.randn(1, 2, 256), torch.ones(1, 2, dtype=torch.bool)
        rows.append(
            row(
                "vlastack_diffusion",
                ours_d,
                timed(lambda: ours_d.sample_actions(c, m), args.iters),
                "transformer width 256 depth 4, DDIM 10 steps, 2 context tokens",
            )
        )
    for r in rows:
        print(
            f"{r['policy']:<22} {r['params_M']:8.2f} M  p50 {r['latency_b1_p50_ms']:8.2f} ms  p95 {r['latency_b1_p95_ms']:8.2f} ms  {r['config']}"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
