"""Full-size pretrained VLAs, vlastack beside LeRobot 0.6.1, same weights (issue 26).

Run with vlastack's interpreter (``.venv/bin/python benchmarks/bench_pretrained.py``). For each model
LeRobot 0.6.1 (``.venv-lerobot``, or ``--lerobot-python``) builds the FULL-size architecture with
random weights (no hub: SmolVLA from vlastack's SmolVLM2-500M table ``smolvlm.KNOWN_VLMS``, 16 VLM
layers; pi0 = PaliGemma 3B (``gemma_2b`` + SigLIP So400m) + the ``gemma_300m`` expert) and saves a
``pretrained_model`` folder in a temp dir. Then, one process per (side, dtype), one after the other
so that two copies are never in memory at once, each side loads that folder (vlastack:
``load_smolvla_network`` / ``load_pi0_network``; LeRobot: ``<Policy>.from_pretrained``) and times
``sample_actions`` on the same preprocessed batch (images already resized and scaled to [-1, 1],
state padded, fixed noise): network-level chunk latency at batch 1, pre/post-processing excluded.

* threads: each side times one chunk at every ``--threads`` candidate and keeps the fastest.
* bf16: pi0 uses its config ``dtype: bfloat16`` (LeRobot's ``to_bfloat16_for_selected_params`` and
  vlastack's ``set_precision``); SmolVLA has no bf16 setting on either side, so both run their
  float32 weights under ``torch.autocast("cpu", bfloat16)`` (the same transform on both sides).
* FLOPs: ``torch.utils.flop_counter`` on vlastack's warm-up chunk (matmuls, convolutions,
  attention); the matmul peak is a timed 2048^3 GEMM at the same dtype and thread count, taken in
  each worker right after its chunks (the driver's own peak, taken first, is printed too); % of
  peak = FLOPs / p50 latency / that peak.
* stages: time spent in the vision tower (``embed_image``) and the denoise steps (vlastack: the
  expert's velocity calls; LeRobot: ``denoise_step``), the rest being the prefix embedding, the VLM
  prefill and glue. ``vlastack bench latency`` gives N/A per stage for imported LeRobot folders.
* training (``--train``, pi0 only: SmolVLA has no vlastack training loss yet): forward + backward
  of the flow-matching loss at ``--train-batch``, samples/s; skipped when memory is short.
* peak RSS: ``ru_maxrss`` of each side's own process (load + all calls).

``--quick`` swaps in the reduced fixture sizes (seconds; the smoke test). Prints a table and one
JSON object last.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VLASTACK_SHARED", ROOT.parent / "shared"))
TINY_VLM = SHARED / "fixtures" / "lerobot_policies" / "smolvla" / "smolvlm2_tiny_config"
GIB = 1024**3
PI0_TINY = {
    "dummy": dict(width=64, depth=4, mlp_dim=128, num_heads=8, num_kv_heads=1, head_dim=16),
    "dummy_expert": dict(width=32, depth=4, mlp_dim=64, num_heads=8, num_kv_heads=1, head_dim=16),
}
PI0_TINY_VISION = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, patch_size=14
)
# bytes per parameter in memory for a loaded model, and a rough parameter count per model
PARAMS = {"smolvla": 0.45e9, "pi0": 3.5e9}


def mem_available() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024 / GIB
    return 0.0


# ---- LeRobot side (runs in .venv-lerobot) ---------------------------------------------------
def _lerobot_patches(model: str, quick: bool) -> None:
    from types import SimpleNamespace

    if model == "smolvla":
        import lerobot.policies.smolvla.smolvlm_with_expert as swe

        class _Processor:  # only the two special-token ids are read (fixture README)
            @staticmethod
            def from_pretrained(*_a: Any, **_k: Any) -> Any:
                tok = SimpleNamespace(fake_image_token_id=49189, global_image_token_id=49152)
                return SimpleNamespace(tokenizer=tok)

        swe.AutoProcessor = _Processor
    elif quick:  # the pi0 fixtures' reduced sizes (tests/lerobot_pi0_tiny_script.py)
        from lerobot.configs import PreTrainedConfig
        from lerobot.policies.pi0 import modeling_pi0 as m0
        from lerobot.policies.pi0.configuration_pi0 import PI0Config

        # the dummy variants fail LeRobot's own config check (as in the fixtures)
        PI0Config.__post_init__ = lambda self: PreTrainedConfig.__post_init__(self)

        orig = m0.get_gemma_config
        m0.get_gemma_config = lambda v: m0.GemmaConfig(**PI0_TINY[v]) if v in PI0_TINY else orig(v)
        pali_cls, expert_cls = (
            m0.PaliGemmaForConditionalGenerationWithPiGemma,
            m0.PiGemmaForCausalLM,
        )

        def pali(config: Any) -> Any:
            config._vocab_size = 1024
            config.text_config.vocab_size = 1024
            for k, v in PI0_TINY_VISION.items():
                setattr(config.vision_config, k, v)
            config.vision_config.projection_dim = config.text_config.hidden_size
            return pali_cls(config=config)

        def expert(config: Any) -> Any:
            config.vocab_size = 1024
            return expert_cls(config=config)

        m0.PaliGemmaForConditionalGenerationWithPiGemma = pali
        m0.PiGemmaForCausalLM = expert


def lerobot_build(model: str, out: Path, quick: bool, vlm_dir: str) -> None:
    import torch
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.factory import make_policy_config

    _lerobot_patches(model, quick)
    torch.manual_seed(0)
    if model == "smolvla":
        from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy as cls

        extra: dict[str, Any] = {"vlm_model_name": vlm_dir, "load_vlm_weights": False}
        if quick:
            extra["num_vlm_layers"] = 4
    else:
        from lerobot.policies.pi0.modeling_pi0 import PI0Policy as cls

        extra = {"dtype": "bfloat16"}  # built in bf16: half the file and memory of fp32
        if quick:
            extra.update(paligemma_variant="dummy", action_expert_variant="dummy_expert")
    cfg = make_policy_config(model, device="cpu", push_to_hub=False, **extra)
    cfg.input_features = {
        "observation.images.top": PolicyFeature(FeatureType.VISUAL, (3, 224, 224)),
        "observation.state": PolicyFeature(FeatureType.STATE, (6,)),
    }
    cfg.output_features = {"action": PolicyFeature(FeatureType.ACTION, (6,))}
    policy = cls(cfg).eval()
    policy.save_pretrained(str(out))
    n = sum(p.numel() for p in policy.parameters())
    print(json.dumps({"params": n}))


def lerobot_policy(model: str, folder: Path, quick: bool) -> Any:
    _lerobot_patches(model, quick)
    if model == "smolvla":
        from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy as cls
    else:
        from lerobot.policies.pi0.modeling_pi0 import PI0Policy as cls
    return cls.from_pretrained(str(folder)).eval().model


# ---- vlastack side --------------------------------------------------------------------------
def vlastack_model(model: str, folder: Path) -> Any:
    sys.path.insert(0, str(ROOT / "src"))
    from vlastack.pretrained.lerobot.folder import read_json

    cfg = read_json(folder / "config.json")
    if model == "smolvla":
        from vlastack.pretrained.lerobot.smolvla import SmolVLASpec
        from vlastack.pretrained.lerobot.smolvla_policy import load_smolvla_network
        from vlastack.pretrained.lerobot.smolvlm import vlm_config

        spec = SmolVLASpec.from_config(cfg)
        vcfg, _ = vlm_config(spec.vlm_model_name, folder)
        return load_smolvla_network(folder / "model.safetensors", spec, vcfg).model
    from vlastack.pretrained.lerobot.pi0 import Pi0Spec
    from vlastack.pretrained.lerobot.pi0_weights import load_pi0_network

    return load_pi0_network(folder / "model.safetensors", Pi0Spec.from_config(cfg)).model


def _stage_hooks(side: str, model: str, core: Any, acc: dict[str, float]) -> None:
    """Wrap the vision tower and the denoise-step methods with timers (instance attributes)."""

    def timed(obj: Any, name: str, stage: str) -> None:
        fn = getattr(obj, name)

        def wrapper(*a: Any, **k: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                acc[stage] = acc.get(stage, 0.0) + time.perf_counter() - t

        setattr(obj, name, wrapper)

    if side == "lerobot":
        vision = core.vlm_with_expert if model == "smolvla" else core.paligemma_with_expert
        timed(vision, "embed_image", "vision")
        timed(core, "denoise_step", "denoise")
    elif model == "smolvla":
        timed(core.vlm_with_expert.vlm, "embed_image", "vision")
        timed(core, "velocity", "denoise")
    else:
        timed(core.paligemma_with_expert, "embed_image", "vision")
        timed(core.paligemma_with_expert.expert, "decode", "denoise")
        timed(core, "embed_suffix", "denoise")


def worker(args: argparse.Namespace) -> None:
    """One side, one dtype: load, pick threads, time chunks (and training); print JSON."""
    import contextlib

    import torch
    from safetensors.torch import load_file

    folder = Path(args.dir) / args.dtype
    t0 = time.perf_counter()
    core = (
        lerobot_policy(args.model, folder, args.quick)
        if args.side == "lerobot"
        else vlastack_model(args.model, folder)
    )
    load_s = time.perf_counter() - t0
    io = load_file(str(Path(args.dir) / "io.safetensors"))
    images, masks = [io["image"]], [io["mask"]]
    call_args = (images, masks, io["tokens"], io["lang_mask"], io["state"])

    def amp() -> Any:
        on = args.dtype == "bf16" and args.model == "smolvla"
        return torch.autocast("cpu", dtype=torch.bfloat16) if on else contextlib.nullcontext()

    def chunk() -> Any:
        with torch.inference_mode(), amp():
            return core.sample_actions(*call_args, noise=io["noise"].clone())

    flops = None
    if args.side == "vlastack":
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            chunk()
        flops = counter.get_total_flops()
    else:
        chunk()
    cands = [int(t) for t in args.threads.split(",")]
    by_threads = {}
    for t in cands:
        torch.set_num_threads(t)
        s = time.perf_counter()
        chunk()
        by_threads[t] = time.perf_counter() - s
    best = min(by_threads, key=by_threads.__getitem__)
    torch.set_num_threads(best)
    acc: dict[str, float] = {}
    _stage_hooks(args.side, args.model, core, acc)
    times = []
    for _ in range(args.repeats):
        s = time.perf_counter()
        out = chunk()
        times.append(time.perf_counter() - s)
    stages = {k: v / args.repeats for k, v in acc.items()}
    # the GEMM peak in this process, right after the chunks, at their dtype and thread count:
    # on a shared machine a peak taken minutes earlier can be off by 2x
    dt = torch.float32 if args.dtype == "fp32" else torch.bfloat16
    peak = matmul_peak([best], args.quick, {args.dtype: dt})[args.dtype][best]
    res: dict[str, Any] = {
        "side": args.side,
        "threads": best,
        "by_threads_s": by_threads,
        "chunk_s": sorted(times),
        "p50_s": sorted(times)[len(times) // 2],
        "min_s": min(times),
        "stages_s": stages,
        "load_s": load_s,
        "flops": flops,
        "matmul_peak_gflops": peak,
        "chunk_abs_mean": float(out.float().abs().mean()),
        "chunk_head": out.float().flatten()[:8].tolist(),
    }
    if args.train_batch:
        res["train"] = train_step(args, core, io, amp)
    res["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB
    print(json.dumps(res))


def train_step(args: argparse.Namespace, core: Any, io: dict, amp: Any) -> dict[str, Any]:
    """Forward + backward of the flow-matching loss at batch B (no optimizer step), s/step."""
    import torch

    b = args.train_batch
    rep = lambda x: x.expand(b, *x.shape[1:]).contiguous()  # noqa: E731
    imgs, masks = [rep(io["image"])], [rep(io["mask"])]
    tok, lm, st = rep(io["tokens"]), rep(io["lang_mask"]), rep(io["state"])
    noise, actions = rep(io["noise"]), rep(io["noise"]) * 0.5
    t = torch.full((b,), 0.3)
    core.train()
    if args.side == "lerobot":
        loss_fn = lambda: core.forward(imgs, masks, tok, lm, st, actions, noise, t)  # noqa: E731
    else:
        sys.path.insert(0, str(ROOT / "src"))
        from vlastack.pretrained.lerobot.pi0_train import flow_matching_loss

        def loss_fn() -> Any:
            return flow_matching_loss(core, imgs, masks, tok, lm, st, actions, noise, t)

    times = []
    for _ in range(1 + args.train_repeats):  # the first one is the warm-up
        s = time.perf_counter()
        with amp():
            loss = loss_fn().mean()
        loss.backward()
        times.append(time.perf_counter() - s)
        core.zero_grad(set_to_none=True)
    step = min(times[1:])
    return {"batch": b, "step_s": step, "samples_per_s": b / step, "loss": float(loss)}


# ---- driver ---------------------------------------------------------------------------------
def matmul_peak(
    threads: list[int], quick: bool, dtypes: dict[str, Any] | None = None
) -> dict[str, dict[int, float]]:
    """GFLOP/s of the best of 5 square GEMMs (2048^3; 512^3 with --quick) per dtype and threads."""
    import torch

    n = 512 if quick else 2048
    out: dict[str, dict[int, float]] = {}
    dtypes = dtypes or {"fp32": torch.float32, "bf16": torch.bfloat16}
    for name, dt in dtypes.items():
        a, b = torch.randn(n, n, dtype=dt), torch.randn(n, n, dtype=dt)
        out[name] = {}
        for t in threads:
            torch.set_num_threads(t)
            torch.mm(a, b)
            best = min(_timed(lambda a=a, b=b: torch.mm(a, b)) for _ in range(5))
            out[name][t] = 2 * n**3 / best / 1e9
    return out


def _timed(fn: Any) -> float:
    s = time.perf_counter()
    fn()
    return time.perf_counter() - s


def make_inputs(model: str, folder: Path, quick: bool, out: Path) -> None:
    import torch
    from safetensors.torch import save_file

    cfg = json.loads((folder / "config.json").read_text())
    g = torch.Generator().manual_seed(7)
    if model == "smolvla":
        vlm = json.loads((Path(cfg["vlm_model_name"]) / "config.json").read_text())
        size = int(vlm["vision_config"]["image_size"])
    else:
        size = int(cfg.get("image_resolution", [224, 224])[0])
    n_tok = int(cfg.get("tokenizer_max_length", 48))
    text = [2] + [3 + c for c in b"pick up the red block and put it in the box\n"]
    tokens = torch.zeros(1, n_tok, dtype=torch.long)
    tokens[0, : len(text)] = torch.tensor(text[:n_tok])
    lang_mask = tokens != 0
    save_file(
        {
            "image": torch.rand(1, 3, size, size, generator=g) * 2 - 1,
            "mask": torch.ones(1, dtype=torch.bool),
            "tokens": tokens,
            "lang_mask": lang_mask,
            "state": torch.randn(1, int(cfg["max_state_dim"]), generator=g),
            "noise": torch.randn(
                1, int(cfg["chunk_size"]), int(cfg["max_action_dim"]), generator=g
            ),
        },
        str(out),
    )


def _run(cmd: list[str], what: str) -> dict[str, Any]:
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"{what} failed (exit {res.returncode}):\n{res.stderr[-4000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def bench_model(args: argparse.Namespace, model: str, tmp: Path, lr_py: str) -> dict[str, Any]:
    me = [str(Path(__file__).resolve())]
    base = tmp / model
    built = base / "built"
    vlm_dir = str(TINY_VLM)
    if model == "smolvla" and not args.quick:
        sys.path.insert(0, str(ROOT / "src"))
        from transformers import SmolVLMConfig

        from vlastack.pretrained.lerobot.smolvlm import KNOWN_VLMS, SMOLVLM2_500M

        vlm_dir = str(tmp / "smolvlm2_500m")
        SmolVLMConfig(**KNOWN_VLMS[SMOLVLM2_500M]).save_pretrained(vlm_dir)
    need = 0.2 if args.quick else PARAMS[model] * 4 / GIB + 2
    if mem_available() < need:
        return {"skipped": f"build needs ~{need:.0f} GiB free, {mem_available():.1f} available"}
    common = ["--model", model] + (["--quick"] if args.quick else [])
    s = time.perf_counter()
    info = _run(
        [lr_py, *me, "--worker", "build", "--dir", str(built), "--vlm", vlm_dir, *common],
        f"LeRobot build of {model}",
    )
    result: dict[str, Any] = {"params": info["params"], "build_s": time.perf_counter() - s}
    make_inputs(model, built, args.quick, base / "io.safetensors")
    for dtype in args.dtypes.split(","):
        if model == "pi0" and dtype == "fp32" and not args.pi0_fp32:
            result[dtype] = {"skipped": "pi0 fp32 (~14 GB per side) runs only with --pi0-fp32"}
            continue
        folder = base / dtype
        folder.mkdir(exist_ok=True)
        (folder / "model.safetensors").symlink_to(built / "model.safetensors")
        cfg = json.loads((built / "config.json").read_text())
        if model == "pi0":
            cfg["dtype"] = "bfloat16" if dtype == "bf16" else "float32"
        (folder / "config.json").write_text(json.dumps(cfg, indent=2))
        row: dict[str, Any] = {}
        for side, py in (("vlastack", sys.executable), ("lerobot", lr_py)):
            per = 4 if dtype == "fp32" else 2
            need = 0.2 if args.quick else PARAMS[model] * per / GIB + 1.5
            if mem_available() < need:
                row[side] = {"skipped": f"needs ~{need:.0f} GiB, {mem_available():.1f} free"}
                continue
            train = model == "pi0" and args.train
            if train and not args.quick:
                # weights + grads + activations at batch 8: refuse what cannot fit
                t_need = PARAMS[model] * per * 3 / GIB + 4
                if mem_available() < t_need:
                    train = False
                    row[f"{side}_train_skipped"] = (
                        f"training at batch {args.train_batch} needs ~{t_need:.0f} GiB, "
                        f"{mem_available():.1f} free"
                    )
            cmd = [py, *me, "--worker", side, "--dir", str(base), "--dtype", dtype, *common]
            cmd += ["--threads", args.threads, "--repeats", str(args.repeats)]
            if train:
                cmd += ["--train-batch", str(args.train_batch)]
            row[side] = _run(cmd, f"{side} {model} {dtype}")
            print(f"  {model} {dtype} {side}: p50 {row[side]['p50_s']:.3f} s", file=sys.stderr)
        result[dtype] = row
    shutil.rmtree(base, ignore_errors=True)
    return result


def report(results: dict[str, Any], peak: dict[str, dict[int, float]], meta: dict) -> None:
    print(f"{meta['date']}, torch {meta['torch']}, {meta['cpu']}, load avg {meta['load_avg']}")
    print(
        "matmul peak GFLOP/s: "
        + ", ".join(f"{d} {t} thr {v:.0f}" for d, by in peak.items() for t, v in by.items())
    )
    hdr = f"{'model':<8} {'dtype':<5} {'side':<9} {'thr':>3} {'p50 s':>8} {'min s':>8} "
    print(hdr + f"{'GFLOP':>7} {'%peak':>6} {'RSS GiB':>8}  stages (s): vision / denoise / rest")
    for model, res in results.items():
        if "skipped" in res:
            print(f"{model:<8} skipped: {res['skipped']}")
            continue
        for dtype in ("fp32", "bf16"):
            row = res.get(dtype)
            if row is None:
                continue
            if "skipped" in row:
                print(f"{model:<8} {dtype:<5} skipped: {row['skipped']}")
                continue
            flops = (row.get("vlastack") or {}).get("flops")
            for side in ("vlastack", "lerobot"):
                r = row.get(side, {})
                if "skipped" in r or not r:
                    print(f"{model:<8} {dtype:<5} {side:<9} skipped: {r.get('skipped')}")
                    continue
                pk = r.get("matmul_peak_gflops", peak[dtype][r["threads"]]) * 1e9
                pct = 100 * flops / r["p50_s"] / pk if flops else float("nan")
                r["pct_of_matmul_peak"] = pct
                st = r["stages_s"]
                rest = r["p50_s"] - st.get("vision", 0) - st.get("denoise", 0)
                print(
                    f"{model:<8} {dtype:<5} {side:<9} {r['threads']:>3} {r['p50_s']:8.3f} "
                    f"{r['min_s']:8.3f} {flops / 1e9 if flops else 0:7.1f} {pct:6.1f} "
                    f"{r['peak_rss_gib']:8.2f}  {st.get('vision', 0):.3f} / "
                    f"{st.get('denoise', 0):.3f} / {rest:.3f}"
                )
                if "train" in r:
                    t = r["train"]
                    print(f"{'':<24} train batch {t['batch']}: {t['samples_per_s']:.3f} samples/s")
            if "vlastack" in row and "lerobot" in row and "p50_s" in row.get("lerobot", {}):
                v, lr = row["vlastack"], row["lerobot"]
                if "p50_s" in v:
                    row["latency_ratio"] = v["p50_s"] / lr["p50_s"]
                    row["rss_ratio"] = v["peak_rss_gib"] / lr["peak_rss_gib"]
                    d = abs(v["chunk_abs_mean"] - lr["chunk_abs_mean"])
                    print(
                        f"{'':<24} vlastack/LeRobot latency {row['latency_ratio']:.2f}, "
                        f"peak RSS {row['rss_ratio']:.2f}; |mean|chunk| diff {d:.2e}"
                    )
                    if "train" in v and "train" in lr:
                        row["train_ratio"] = (
                            v["train"]["samples_per_s"] / lr["train"]["samples_per_s"]
                        )
                        print(f"{'':<24} training samples/s ratio {row['train_ratio']:.2f}")
    print(json.dumps({**meta, "matmul_peak_gflops": peak, "results": results}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="smolvla,pi0")
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--repeats", type=int, default=3, help="timed chunks per side and dtype")
    ap.add_argument("--threads", default="1,2", help="candidates, timed on each side")
    ap.add_argument("--quick", action="store_true", help="reduced sizes (smoke test)")
    ap.add_argument("--pi0-fp32", action="store_true", help="also pi0 in fp32 (~14 GB/side)")
    ap.add_argument("--train", action="store_true", help="pi0 training step (memory allowing)")
    ap.add_argument("--train-batch", type=int, default=None, help="default 8")
    ap.add_argument("--train-repeats", type=int, default=2)
    ap.add_argument("--lerobot-python", default=str(ROOT / ".venv-lerobot" / "bin" / "python"))
    ap.add_argument("--worker", choices=["build", "lerobot", "vlastack"], help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    ap.add_argument("--dtype", help=argparse.SUPPRESS)
    ap.add_argument("--vlm", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker == "build":
        return lerobot_build(args.model, Path(args.dir), args.quick, args.vlm)
    if args.worker:
        args.train_batch, args.side = args.train_batch or 0, args.worker
        return worker(args)
    args.train_batch = (args.train_batch or 8) if args.train else 0
    for m in args.models.split(","):
        if m not in PARAMS:
            raise SystemExit(f"--models: unknown model {m!r}; use smolvla and/or pi0")
    for d in args.dtypes.split(","):
        if d not in ("fp32", "bf16"):
            raise SystemExit(f"--dtypes: unknown dtype {d!r}; use fp32 and/or bf16")
    if not Path(args.lerobot_python).exists():
        raise SystemExit(
            f"--lerobot-python {args.lerobot_python} does not exist: build LeRobot 0.6.1's venv "
            "(../shared/tools/) or point --lerobot-python at its interpreter"
        )
    import platform

    import torch

    threads = [int(t) for t in args.threads.split(",")]
    peak = matmul_peak(threads, args.quick)
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "torch": torch.__version__,
        "cpu": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "quick": args.quick,
        "mem_available_gib": round(mem_available(), 1),
    }
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_pretrained_") as tmp:
        for m in args.models.split(","):
            try:
                results[m] = bench_model(args, m, Path(tmp), args.lerobot_python)
            except SystemExit as exc:  # one model's failure keeps the other's numbers
                results[m] = {"skipped": f"failed: {exc}"[-2000:]}
    meta["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    report(results, peak, meta)


if __name__ == "__main__":
    main()
