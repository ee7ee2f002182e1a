"""What ``vlastack inspect`` says about a LeRobot ``pretrained_model`` folder.

Reads config.json, the processor JSON and their stats files and the safetensors header (no
network is built, no weight tensor is read), and reports what it reports for a native checkpoint:
the policy type and its shaping fields, cameras and image shapes, state/action sizes, chunk
length and how many actions to execute, per-feature normalization modes and stats, the
EmbodimentSpec vlastack derives (``observation.embodiment_spec``), parameter counts, and the
openpi client's view (what to send, under which other spellings, what comes back).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vlastack.pretrained.lerobot import folder as lf
from vlastack.pretrained.lerobot.observation import embodiment_spec, spellings

# config.json fields shown per policy type (the ones that shape the network or the sampler)
SHAPING_FIELDS: dict[str, tuple[str, ...]] = {
    "act": (
        "vision_backbone",
        "dim_model",
        "n_heads",
        "dim_feedforward",
        "n_encoder_layers",
        "n_decoder_layers",
        "use_vae",
        "latent_dim",
        "pre_norm",
        "temporal_ensemble_coeff",
    ),
    "diffusion": (
        "vision_backbone",
        "crop_shape",
        "horizon",
        "down_dims",
        "kernel_size",
        "noise_scheduler_type",
        "num_train_timesteps",
        "num_inference_steps",
        "prediction_type",
        "use_group_norm",
        "spatial_softmax_num_keypoints",
    ),
    "smolvla": (
        "vlm_model_name",
        "num_vlm_layers",
        "num_expert_layers",
        "attention_mode",
        "self_attn_every_n_layers",
        "expert_width_multiplier",
        "num_steps",
        "resize_imgs_with_padding",
        "max_state_dim",
        "max_action_dim",
        "empty_cameras",
    ),
    **{
        kind: (
            "paligemma_variant",
            "action_expert_variant",
            "dtype",
            "image_resolution",
            "max_state_dim",
            "max_action_dim",
            "num_inference_steps",
            "tokenizer_max_length",
            "empty_cameras",
            "use_relative_actions",
        )
        for kind in ("pi0", "pi05")
    },
    "xvla": (
        "hidden_size",
        "depth",
        "num_heads",
        "num_domains",
        "len_soft_prompts",
        "dim_time",
        "max_len_seq",
        "use_hetero_proj",
        "action_mode",
        "num_denoising_steps",
        "max_state_dim",
        "max_action_dim",
        "num_image_views",
        "resize_imgs_with_padding",
        "dtype",
    ),
}


def horizons(policy_type: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """Chunk length ``infer`` returns, how many of them to execute, observations stacked."""
    n_action = int(cfg.get("n_action_steps") or 1)
    if policy_type == "act" and cfg.get("temporal_ensemble_coeff") is not None:
        chunk = 1  # select_action semantics: one ensembled action per call (ensemble.py)
    elif policy_type in ("act", "smolvla", "pi0", "pi05", "xvla"):
        chunk = int(cfg.get("chunk_size") or n_action)
    else:  # diffusion: LeRobot's predict_action_chunk returns n_action_steps actions
        chunk = n_action
    return {
        "chunk_length": chunk,
        "execute_horizon": n_action,
        "obs_horizon": int(cfg.get("n_obs_steps") or 1),
    }


def _module_group(key: str) -> str:
    """LeRobot keys nest one level deeper (``model.backbone.*``, ``diffusion.unet.*``)."""
    parts = key.split(".")
    if parts[:2] in (["model", "vlm_with_expert"], ["model", "vlm"]):  # smolvla, xvla: the
        # VLM's parts apart
        return ".".join(parts[:3])
    return ".".join(parts[:2]) if parts[0] == "model" or len(parts) > 2 else parts[0]


def _weights(file: Path) -> dict[str, Any]:
    from vlastack.checkpoints import weight_summary

    return weight_summary(file, group=_module_group)


# the stats each mode reads (normalize.py); only those are shown
MODE_STATS = {
    "MEAN_STD": ("mean", "std"),
    "MIN_MAX": ("min", "max"),
    "QUANTILES": ("q01", "q99"),
    "QUANTILE10": ("q10", "q90"),
}


def _stats_table(normalizer: Any, key: str) -> dict[str, list[float]]:
    if normalizer is None or key not in normalizer.stats:
        return {}
    used = MODE_STATS.get(normalizer.mode(key), ())
    have = normalizer.stats[key]
    return {n: [round(float(x), 6) for x in have[n].reshape(-1).tolist()] for n in used}


def describe_folder(path: str | Path, policy_type: str, format_name: str) -> dict[str, Any]:
    """Everything ``vlastack inspect`` prints for a LeRobot folder, as a JSON-ready dict."""
    from vlastack.pretrained.lerobot.policy import read_processors

    p = Path(path)
    cfg = lf.read_config(p, policy_type)
    inputs = lf.read_features(cfg, "input_features")
    outputs = lf.read_features(cfg, "output_features")
    language: dict[str, Any] | None = None
    if policy_type == "smolvla":  # language-conditioned: the tokenizer step too
        from vlastack.pretrained.lerobot.smolvla_policy import language_facts

        procs, language = language_facts(p, cfg)
    elif policy_type in ("pi0", "pi05"):
        from vlastack.pretrained.lerobot.pi0_policy import pi_language_facts

        procs, language = pi_language_facts(p, policy_type)
    elif policy_type == "xvla":
        from vlastack.pretrained.lerobot.xvla_inputs import xvla_language_facts

        procs, language = xvla_language_facts(p, cfg)
    else:
        procs = read_processors(p, cfg)
    rename = {v: k for k, v in procs.rename_map.items()}
    hz = horizons(policy_type, cfg)
    cameras: list[dict[str, Any]] = []
    vectors: list[dict[str, Any]] = []
    for f in inputs:
        image = f.type == "VISUAL"
        entry = {
            "key": f.key,
            "type": f.type,
            "shape": list(f.shape),
            "client_keys": spellings(f.key, image),
            "renamed_from": rename.get(f.key),
            "normalization": procs.normalizer.mode(f.key) if procs.normalizer else "IDENTITY",
            "stats": _stats_table(procs.normalizer, f.key),
        }
        if image and policy_type in ("pi0", "pi05"):
            res = cfg.get("image_resolution")
            entry["resized"] = f"resized with centred padding to {res} inside the policy"
        if image and policy_type == "xvla":
            res = cfg.get("resize_imgs_with_padding")
            entry["resized"] = (
                f"resized with top/left padding to {res} (H, W), " if res else "not resized; "
            ) + "ImageNet mean/std inside the policy"
        (cameras if image else vectors).append(entry)
    actions: list[dict[str, Any]] = [
        {
            "key": f.key,
            "shape": list(f.shape),
            "normalization": procs.unnormalizer.mode(f.key) if procs.unnormalizer else "IDENTITY",
            "stats": _stats_table(procs.unnormalizer, f.key),
        }
        for f in outputs
        if f.type == "ACTION"
    ]
    send: dict[str, str] = {}
    for c in cameras:
        ch, h, w = c["shape"]
        send[c["key"]] = f"uint8 ({h}, {w}, {ch}) HWC or ({ch}, {h}, {w}) CHW, or float in [0, 1]"
    for v in vectors:
        send[v["key"]] = f"float ({v['shape'][0]},)"
    if language is not None:
        send["task"] = "str, the instruction"
    action_dim = actions[0]["shape"][0] if actions else 0
    return {
        "path": str(p),
        "format": format_name,
        "policy_type": policy_type,
        "config": {k: cfg.get(k) for k in SHAPING_FIELDS.get(policy_type, ()) if k in cfg},
        **hz,
        "cameras": cameras,
        "vectors": vectors,
        "actions": actions,
        "normalization_eps": procs.normalizer.eps if procs.normalizer else None,
        "rename_map": procs.rename_map,
        "embodiment": embodiment_spec(p, cfg, inputs, outputs, policy_type),
        "parameters": _weights(p / lf.WEIGHTS),
        "language": language,
        "client": {
            "serve": f"vlastack serve {p}",
            "send": send,
            "also_accepted": {
                k: ["prompt"] if k == "task" else spellings(k, k in {c["key"] for c in cameras})[1:]
                for k in send
            },
            "ignored": "" if language else "task / prompt (this policy has no language input)",
            "reply": {"actions": f"float32 ({hz['chunk_length']}, {action_dim}) dataset units"},
            "metadata": [
                "policy",
                "format",
                "action_horizon",
                "execute_horizon",
                "obs_horizon",
                "action_dim",
                "state_dim",
                "cameras",
                "image_size",
                "observation_keys",
                "embodiment",
            ],
        },
    }


def _fmt_stats(stats: dict[str, list[float]], indent: str) -> list[str]:
    return [
        f"{indent}{name:<5} " + " ".join(f"{x:.4g}" for x in values)
        for name, values in stats.items()
    ]


def format_text(info: dict[str, Any]) -> str:
    """The plain-words report of ``describe_folder``'s dict."""
    lines = [
        f"checkpoint {info['path']}",
        f"  format {info['format']} (LeRobot {info['policy_type']} pretrained_model folder)",
    ]
    if info["config"]:
        lines.append("  config: " + ", ".join(f"{k} {v}" for k, v in info["config"].items()))
    lines.append(
        f"  chunk length {info['chunk_length']} (actions per infer), execute_horizon "
        f"{info['execute_horizon']} (n_action_steps), obs_horizon {info['obs_horizon']}"
    )
    prm = info["parameters"]
    groups = ", ".join(f"{g} {n:,}" for g, n in list(prm["by_module"].items())[:8])
    lines.append(
        f"  parameters: {prm['total']:,} ({'/'.join(prm['dtypes'])}, {prm['file_mb']} MB): {groups}"
    )
    emb = info["embodiment"]
    if emb:
        src = emb["extra"].get("control_hz_source", "")
        lines.append(f"  embodiment: {emb['robot_type']} @ {emb['control_hz']:g} Hz ({src})")
    lines.append("  INPUTS (send one observation per call; the policy keeps its own history)")
    for c in info["cameras"]:
        ch, h, w = c["shape"]
        lines.append(
            f"    {c['key']}: image {ch}x{h}x{w} (C, H, W), uint8 H×W×{ch} or CHW; "
            f"{c.get('resized') or 'not resized'}; "
            f"normalized {c['normalization']}"
        )
        lines += _fmt_stats(c["stats"], "      ")
    for v in info["vectors"]:
        lines.append(
            f"    {v['key']}: {v['type'].lower()} float ({v['shape'][0]},) raw units, normalized "
            f"{v['normalization']}"
        )
        lines += _fmt_stats(v["stats"], "      ")
    lang = info.get("language")
    if lang:
        lines.append(f"    task: str ('' when absent, as lerobot_eval sends); {lang['summary']}")
    else:
        lines.append("    task: ignored (no language input)")
    lines.append("  OUTPUTS")
    for a in info["actions"]:
        lines.append(
            f"    actions: float32 ({info['chunk_length']}, {a['shape'][0]}), absolute, dataset "
            f"units (un-normalized from {a['normalization']}); execute the first "
            f"{info['execute_horizon']} of {info['chunk_length']}, then ask again"
        )
        lines += _fmt_stats(a["stats"], "      ")
    eps = info["normalization_eps"]
    lines.append(
        "  NORMALIZATION (inside the policy: send raw values, get raw actions; "
        f"MEAN_STD divides by std + {eps:g})"
        if eps is not None
        else "  NORMALIZATION: none"
    )
    cl = info["client"]
    lines.append(f"  OPENPI CLIENT ({cl['serve']})")
    lines.append("    send one dict (msgpack-numpy) per call:")
    for k, v in cl["send"].items():
        alias = " / ".join(repr(a) for a in cl["also_accepted"].get(k, []))
        lines.append(f"      {k!r}: {v}" + (f"  (or {alias})" if alias else ""))
    if cl["ignored"]:
        lines.append(f"      {cl['ignored']}")
    lines.append("    reply: {" + ", ".join(f"{k!r}: {v}" for k, v in cl["reply"].items()) + "}")
    lines.append("    metadata frame on connect: " + ", ".join(cl["metadata"]))
    return "\n".join(lines)
