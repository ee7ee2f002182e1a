"""LeRobot ACT / Diffusion Policy latency beside vlastack's heads at matched sizes (issue 4).

Run with LeRobot's interpreter (``/work/lerobot-venv/bin/python``); vlastack is imported from
``src/`` so both run in the same process, same torch, same thread count (``--threads``, default 1,
set once for both), both under ``torch.inference_mode``. Timings are interleaved: every round runs
each policy in turn, so machine load hits all of them alike. State-only inputs (observation.state
7-d, observation.environment_state 16-d) so no image encoder is timed.
ACT: dim 256, 4 heads, FFN 1024, 4 decoder layers, 1 encoder layer, chunk 16, latent 32 vs
vlastack's policy trunk (``models.trunk``: 1 pre-norm encoder layer, 4 heads, FFN 1024, over 3
tokens, as LeRobot ACT's encoder sees latent + state + env tokens) and ``act`` head (width 256, 4
heads, MLP 1024, decoder_depth 4); both decode with z = 0 and skip the CVAE encoder. The
``vlastack_act`` row is the head alone, without the encoder layer LeRobot runs.
``vlastack_*_reference`` rows run the same heads with the inference fast path off (the pre-fusion
op sequence, same outputs) to show what the fast path buys.
Diffusion: DDIM 10 steps, horizon 16, 100 train steps; LeRobot's 1-D conv U-Net with down_dims
(128,256,512) and (64,128,256) (its default (512,1024,2048) has 249M parameters, ~15 s per chunk
on the 2-core CI machine) vs vlastack's ``diffusion`` head with ``denoiser="unet"`` at the same
layer shapes (same architecture, same sampler and steps), and vs its default transformer denoiser
(width 256, depth 4: a different architecture). Flow matching (π0 expert, width 256, depth 4, 10 Euler
steps) has no LeRobot counterpart without a VLM and is reported alone.
Prints a latency table, a ratio table (ours / LeRobot p50 and min) and one JSON object last.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

S, E, H, A = 7, 16, 16, 7
WIDTH = 256
DEVICE = torch.device("cpu")
RUNNER = "native"  # --runner: what runs the vlastack rows (the "_reference" rows run eager)


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def _on(t: torch.Tensor) -> torch.Tensor:
    return t.to(DEVICE)


def act_pair() -> tuple[torch.nn.Module, torch.nn.Module]:
    """LeRobot's ACTPolicy and vlastack's ``act`` head at the matched size (see the docstring)."""
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.act.configuration_act import ACTConfig
    from lerobot.policies.act.modeling_act import ACTPolicy

    from vlastack.models.action_heads import build_action_head

    cfg = ACTConfig(
        input_features={
            "observation.state": PolicyFeature(FeatureType.STATE, (S,)),
            "observation.environment_state": PolicyFeature(FeatureType.ENV, (E,)),
        },
        output_features={"action": PolicyFeature(FeatureType.ACTION, (A,))},
        chunk_size=H,
        n_action_steps=H,
        dim_model=WIDTH,
        n_heads=4,
        dim_feedforward=4 * WIDTH,
        n_encoder_layers=1,
        n_decoder_layers=4,
        latent_dim=32,
        device=DEVICE.type,
    )
    ours = build_action_head(
        "act",
        # ReLU feed-forward as LeRobot's ACT (feedforward_activation="relu"): the same network
        {"width": WIDTH, "num_heads": 4, "decoder_depth": 4, "activation": "relu"},
        context_dim=WIDTH,
        action_dim=A,
        action_horizon=H,
    )
    return ACTPolicy(cfg).to(DEVICE).eval(), ours.to(DEVICE).eval()


def build_policies() -> list[tuple[str, torch.nn.Module, Callable[[], object], str]]:
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig
    from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy

    from vlastack.models.action_heads import build_action_head
    from vlastack.runners import get_runner

    fast = get_runner(RUNNER)  # the rows without "_reference"; those run the plain modules

    feats_in = {
        "observation.state": PolicyFeature(FeatureType.STATE, (S,)),
        "observation.environment_state": PolicyFeature(FeatureType.ENV, (E,)),
    }
    feats_out = {"action": PolicyFeature(FeatureType.ACTION, (A,))}
    out: list[tuple[str, torch.nn.Module, Callable[[], object], str]] = []
    torch.manual_seed(0)

    def reference(fn: Callable[[], object]) -> Callable[[], object]:
        return fn  # the eager runner: the plain modules themselves

    pol, act = act_pair()
    b = {
        "observation.state": _on(torch.randn(1, S)),
        "observation.environment_state": _on(torch.randn(1, E)),
    }
    out.append(
        (
            "lerobot_act",
            pol,
            lambda: pol.model(b),
            "dim 256, heads 4, ffn 1024, enc 1, dec 4, chunk 16",
        )
    )
    c3, m3 = _on(torch.randn(1, 3, WIDTH)), _on(torch.ones(1, 3, dtype=torch.bool))
    from vlastack.models.trunk import build_trunk, encoder_forward

    enc = build_trunk(WIDTH, 4, 1).to(DEVICE).eval()
    enc_act = torch.nn.ModuleList([enc, act])  # for the parameter count

    def trunk_then_head() -> object:
        return act.sample_actions(encoder_forward(enc, c3, m3), m3)

    fast_trunk = fast.trunk(enc) or (lambda x, m: encoder_forward(enc, x, m))
    fast_act = fast.head(act)
    enc_cfg = "trunk: enc 1 (heads 4, ffn 1024) over 3 tokens; act head: dec 4, chunk 16"
    out.append(("vlastack_act_enc1", enc_act, lambda: fast_act(fast_trunk(c3, m3), m3), enc_cfg))
    out.append(("vlastack_act_enc1_reference", enc_act, reference(trunk_then_head), enc_cfg))
    act_cfg = "head only: width 256, heads 4, mlp 1024, dec 4, chunk 16, 3 context tokens"
    out.append(("vlastack_act", act, lambda: fast_act(c3, m3), act_cfg))
    out.append(
        ("vlastack_act_reference", act, reference(lambda: act.sample_actions(c3, m3)), act_cfg)
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
            device=DEVICE.type,
        )
        dp = DiffusionPolicy(dcfg).to(DEVICE).eval()
        db = {
            "observation.state": _on(torch.randn(1, 2, S)),
            "observation.environment_state": _on(torch.randn(1, 2, E)),
        }
        out.append(
            (
                f"lerobot_dp{dims[0]}",
                dp,
                lambda dp=dp, db=db: dp.diffusion.generate_actions(db),
                f"1-D U-Net down_dims {dims}, DDIM 10 steps, horizon 16",
            )
        )
    # DP-C at LeRobot's layer shapes: the U-Net's FiLM input is [step embedding 128, 46-d
    # global condition] on both sides (LeRobot: 2 obs steps × (7 + 16)-d state; vlastack: one
    # 46-d context token through a 46-wide projection, the only extra layer, 2,162 parameters)
    c46, m46 = _on(torch.randn(1, 1, 2 * (S + E))), _on(torch.ones(1, 1, dtype=torch.bool))
    for dims in ((128, 256, 512), (64, 128, 256)):
        unet = build_action_head(
            "diffusion",
            {"denoiser": "unet", "width": 2 * (S + E), "down_dims": dims},
            context_dim=2 * (S + E),
            action_dim=A,
            action_horizon=H,
        )
        unet = unet.to(DEVICE).eval()

        def sample_unet(head=unet) -> object:
            return head.sample_actions(c46, m46, torch.Generator().manual_seed(0))

        def fast_unet(fn=fast.head(unet)) -> object:
            return fn(c46, m46, torch.Generator().manual_seed(0))

        desc = f"1-D U-Net down_dims {dims}, DDIM 10 steps, horizon 16"
        out.append((f"vlastack_unet{dims[0]}", unet, fast_unet, desc))
        out.append((f"vlastack_unet{dims[0]}_reference", unet, reference(sample_unet), desc))
    c2, m2 = _on(torch.randn(1, 2, WIDTH)), _on(torch.ones(1, 2, dtype=torch.bool))
    for name, cfg_d, desc in (
        ("diffusion", None, "transformer width 256 depth 4, DDIM 10 steps, 2 context tokens"),
        ("flow_matching", None, "π0 expert width 256 depth 4, 10 Euler steps, 2 context tokens"),
    ):
        head = build_action_head(name, cfg_d, context_dim=WIDTH, action_dim=A, action_horizon=H)
        head = head.to(DEVICE).eval()

        def sample(head=head) -> object:
            return head.sample_actions(c2, m2, torch.Generator().manual_seed(0))

        def fast_sample(fn=fast.head(head)) -> object:
            return fn(c2, m2, torch.Generator().manual_seed(0))

        out.append((f"vlastack_{name}", head, fast_sample, desc))
        out.append((f"vlastack_{name}_reference", head, reference(sample), desc))
    return out


def precision_variants() -> list[tuple[str, torch.nn.Module, Callable[[], object], str]]:
    """ACT on both sides in bf16 weights and under ``torch.compile`` (inductor, frozen weights),
    alone and combined: the same transform applied to each, so the ratios stay like for like."""
    import copy

    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    torch.manual_seed(0)
    lerobot, ours = act_pair()
    lerobot.requires_grad_(False)
    ours.requires_grad_(False)
    out: list[tuple[str, torch.nn.Module, Callable[[], object], str]] = []
    for dtype, tag in ((torch.float32, ""), (torch.bfloat16, "_bf16")):
        lr_m = copy.deepcopy(lerobot.model).to(dtype)
        our_m = copy.deepcopy(ours).to(dtype)
        b = {
            "observation.state": _on(torch.randn(1, S, dtype=dtype)),
            "observation.environment_state": _on(torch.randn(1, E, dtype=dtype)),
        }
        c3 = _on(torch.randn(1, 3, WIDTH, dtype=dtype))
        m3 = _on(torch.ones(1, 3, dtype=torch.bool))
        # LeRobot's ACT builds its z = 0 latent in float32, so bf16 weights need autocast too
        # (its use_amp); autocast is a no-op for ops whose inputs are already bf16.
        amp = dtype == torch.bfloat16

        def lerobot_call(m: torch.nn.Module, b: dict, amp: bool = amp) -> object:
            with torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=amp):
                return m(b)

        if dtype != torch.float32:
            out.append(
                (
                    f"lerobot_act{tag}",
                    lr_m,
                    lambda m=lr_m, b=b: lerobot_call(m, b),
                    f"eager {dtype}",
                )
            )
            out.append(
                (
                    f"vlastack_act{tag}",
                    our_m,
                    lambda m=our_m, c=c3, k=m3: m.sample_actions(c, k),
                    f"eager {dtype}",
                )
            )
        lr_c = torch.compile(lr_m)
        our_c = torch.compile(our_m.sample_actions)
        out.append(
            (
                f"lerobot_act{tag}_compiled",
                lr_m,
                lambda f=lr_c, b=b: lerobot_call(f, b),
                "torch.compile",
            )
        )
        out.append(
            (
                f"vlastack_act{tag}_compiled",
                our_m,
                lambda f=our_c, c=c3, k=m3: f(c, k),
                "torch.compile",
            )
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=12, help="interleaved rounds")
    ap.add_argument(
        "--iters", type=int, default=4, help="calls per policy per round (≤100 ms ones)"
    )
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads, both sides")
    ap.add_argument("--runner", default="native", help="vlastack runner for the fast rows")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (times end with a synchronize)")
    ap.add_argument(
        "--variants",
        action="store_true",
        help="add ACT rows in bf16 and under torch.compile on both sides (compiles take ~1 min)",
    )
    args = ap.parse_args()
    global DEVICE, RUNNER
    DEVICE = torch.device(args.device)
    RUNNER = args.runner
    torch.set_num_threads(args.threads)
    policies = build_policies()
    if args.variants:
        policies += precision_variants()
    times: dict[str, list[float]] = {p[0]: [] for p in policies}
    calls: dict[str, int] = {}
    with torch.inference_mode():
        for name, _, fn, _ in policies:  # warm-up; slow ones get one call per round
            t = time.perf_counter()
            for _ in range(2):
                fn()
            _sync()
            calls[name] = args.iters if (time.perf_counter() - t) < 0.2 else 1
        for r in range(args.rounds):
            order = policies if r % 2 == 0 else policies[::-1]
            for name, _, fn, _ in order:
                for _ in range(calls[name]):
                    t = time.perf_counter()
                    fn()
                    _sync()
                    times[name].append((time.perf_counter() - t) * 1e3)
    rows = []
    for name, module, _, config in policies:
        ms = np.array(times[name])
        rows.append(
            {
                "policy": name,
                "params_M": sum(p.numel() for p in module.parameters()) / 1e6,
                "latency_b1_p50_ms": float(np.percentile(ms, 50)),
                "latency_b1_p95_ms": float(np.percentile(ms, 95)),
                "latency_b1_min_ms": float(ms.min()),
                "samples": int(ms.size),
                "config": config,
            }
        )
    by = {r["policy"]: r for r in rows}
    pairs = [
        ("vlastack_act_enc1", "lerobot_act", "same architecture (enc 1, dec 4), z = 0"),
        ("vlastack_act_enc1_reference", "lerobot_act", "same, fast path off"),
        ("vlastack_act", "lerobot_act", "our head alone (no encoder layer), z = 0"),
        *(
            (
                f"vlastack_act{v}",
                f"lerobot_act{v}",
                f"head alone, {v[1:].replace('_', ' ')} both sides",
            )
            for v in ("_bf16", "_compiled", "_bf16_compiled")
            if args.variants
        ),
        *(
            (
                f"vlastack_act{v}",
                "lerobot_act",
                f"our head alone {v[1:].replace('_', ' ')}, LeRobot eager fp32",
            )
            for v in ("_bf16", "_compiled", "_bf16_compiled")
            if args.variants
        ),
        ("vlastack_unet64", "lerobot_dp64", "same architecture (DP-C U-Net), DDIM 10"),
        ("vlastack_unet128", "lerobot_dp128", "same architecture (DP-C U-Net), DDIM 10"),
        ("vlastack_unet64_reference", "lerobot_dp64", "same, fast path off"),
        ("vlastack_diffusion", "lerobot_dp64", "different denoisers, DDIM 10"),
        ("vlastack_diffusion", "lerobot_dp128", "different denoisers, DDIM 10"),
    ]
    ratios = [
        {
            "ours": o,
            "lerobot": t,
            "ratio_p50": by[o]["latency_b1_p50_ms"] / by[t]["latency_b1_p50_ms"],
            "ratio_min": by[o]["latency_b1_min_ms"] / by[t]["latency_b1_min_ms"],
            "note": note,
        }
        for o, t, note in pairs
    ]
    where = torch.cuda.get_device_name(0) if DEVICE.type == "cuda" else "CPU"
    print(f"torch {torch.__version__}, {args.threads} thread(s), batch 1, {where}, interleaved")
    print(f"{'policy':<28} {'params':>8}  {'p50 ms':>8} {'p95 ms':>8} {'min ms':>8}  config")
    for r in rows:
        print(
            f"{r['policy']:<28} {r['params_M']:7.2f}M  {r['latency_b1_p50_ms']:8.2f} "
            f"{r['latency_b1_p95_ms']:8.2f} {r['latency_b1_min_ms']:8.2f}  {r['config']}"
        )
    print(f"\n{'ours / lerobot':<50} {'p50':>6} {'min':>6}  (goal ≤ 0.50)")
    for q in ratios:
        print(
            f"{q['ours'] + ' / ' + q['lerobot']:<50} {q['ratio_p50']:6.2f} {q['ratio_min']:6.2f}  {q['note']}"
        )
    print(
        json.dumps(
            {
                "device": where,
                "threads": args.threads,
                "torch": torch.__version__,
                "rows": rows,
                "ratios": ratios,
            }
        )
    )


if __name__ == "__main__":
    main()
