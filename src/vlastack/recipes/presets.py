"""Named presets for the systems of the survey, scaled to train on a 2-core CPU.

Each function documents the paper it follows and what was scaled down. Numbers from the papers
are in ``/work/shared/REFERENCE.md`` §2–3 of the project notes. Hub backbones are replaced by tiny
random instances of the same ``transformers`` classes; ``backbone=PATH_OR_ID`` loads the real one.
"""

from __future__ import annotations

from typing import Any

from vlastack.models.vla import VLAConfig
from vlastack.recipes.base import Recipe, recipe

QUANTILE = {"observation.state": "quantile", "action": "quantile"}
MEAN_STD = {"observation.state": "mean_std", "action": "mean_std"}
MIN_MAX = {"observation.state": "min_max", "action": "min_max"}
# A tiny decoder LM of the given transformers family: 64 wide, 2 layers (vocab = MiniLM WordPiece).
TINY_LM: dict[str, Any] = {
    "config": {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2}
}
SMALL_HEAD: dict[str, Any] = {"width": 64, "depth": 2, "num_heads": 4}


def _tiny_lm(model_type: str = "llama", **extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "model_type": model_type,
        "hidden_size": 64,
        "num_hidden_layers": 2,
        **extra,
    }
    if model_type == "gemma":
        cfg.setdefault("head_dim", 16)
    return {"config": cfg, "max_text_tokens": 24}


def _train(lr: float, batch_size: int, steps: int, **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "lr": lr,
        "batch_size": batch_size,
        "steps": steps,
        "betas": (0.9, 0.95),
        "weight_decay": 1e-4,
        "warmup_steps": 100,
        "schedule": "cosine",
        "grad_clip": 1.0,
        "ema_decay": None,
        "freeze": [],
    }
    base.update(kw)
    return base


@recipe(
    "cpu_default",
    "small and fast: from-scratch CNN + MiniLM + flow matching, trains in minutes on a CPU",
)
def cpu_default() -> Recipe:
    """Quick experiments on a laptop: every part small, flow-matching head with 5 Euler steps."""
    return Recipe(
        name="cpu_default",
        model=VLAConfig(
            action_dim=2,
            action_horizon=8,
            obs_horizon=1,
            state_dim=2,
            width=64,
            vision="small_cnn",
            vision_kwargs={"width": 16, "num_blocks": 3, "out_dim": 64},
            projector="mlp",
            language="minilm",
            head="flow_matching",
            head_kwargs={**SMALL_HEAD, "num_steps": 5},
        ),
        train=_train(3e-4, 32, 2000, warmup_steps=50, ema_decay=None),
        normalization=MEAN_STD,
        paper="vlastack default (no paper)",
        scaled_down="n/a",
    )


@recipe(
    "rt1", "RT-1: FiLM-conditioned CNN + TokenLearner (8 tokens) + transformer, 256-bin actions"
)
def rt1() -> Recipe:
    """RT-1 (Brohan et al. 2022, arXiv 2212.06817).

    Paper: ImageNet EfficientNet-B3 FiLM-conditioned on a Universal Sentence Encoder embedding,
    TokenLearner to 8 tokens per image, 6-frame history, 8-layer decoder transformer (35M params),
    256 bins per action dimension, one action per step at 3 Hz.
    Scaled down: a from-scratch GroupNorm CNN stands in for EfficientNet, MiniLM for USE, 2 frames,
    a 2-layer 64-wide trunk, a 2-layer bins head.
    """
    return Recipe(
        name="rt1",
        model=VLAConfig(
            action_dim=7,
            action_horizon=1,
            obs_horizon=2,
            state_dim=0,
            width=64,
            vision="small_cnn",
            vision_kwargs={"width": 16, "num_blocks": 3, "out_dim": 64},
            film=True,
            projector="token_learner",
            projector_kwargs={"num_tokens": 8},
            language="minilm",
            trunk_layers=2,
            head="bins",
            head_kwargs={**SMALL_HEAD, "num_bins": 256},
        ),
        train=_train(1e-4, 32, 5000),
        normalization=QUANTILE,
        paper="RT-1, Brohan et al. 2022 (arXiv 2212.06817)",
        scaled_down="EfficientNet-B3 → small_cnn, USE → MiniLM, 6 → 2 frames, 8 → 2 transformer layers",
    )


def _vlm_model(**kw: Any) -> VLAConfig:
    base: dict[str, Any] = dict(
        action_dim=7,
        action_horizon=1,
        obs_horizon=1,
        state_dim=0,
        vision="siglip",
        vision_kwargs={},
        projector="mlp",
        language="hf_causal_lm",
        language_kwargs=_tiny_lm("llama"),
    )
    base.update(kw)
    return VLAConfig(**base)


@recipe(
    "rt2", "RT-2: a VLM emits actions as 256-bin tokens (the LM's last 256 ids), greedy decoding"
)
def rt2() -> Recipe:
    """RT-2 (Brohan et al. 2023, arXiv 2307.15818).

    Paper: PaLI-X 55B / PaLM-E 12B co-fine-tuned on web VQA and robot data; 7 action dims as
    text tokens (256 bins, RT-1's scheme); 1–3 Hz. Scaled down: a 64-wide, 2-layer Llama-class LM
    with a tiny ViT; action bins overwrite the LM's last 256 token ids as OpenVLA does; no web data.
    """
    return Recipe(
        name="rt2",
        model=_vlm_model(vision="hf_vit", action_tokens_in_lm=True, head="none"),
        train=_train(1e-4, 16, 5000),
        normalization=QUANTILE,
        paper="RT-2, Brohan et al. 2023 (arXiv 2307.15818)",
        scaled_down="PaLI-X 55B → 2-layer 64-wide Llama-class LM + tiny ViT, no VQA co-training",
    )


@recipe(
    "rt_h", "RT-H: predict a language motion ('move arm forward'), then actions conditioned on it"
)
def rt_h() -> Recipe:
    """RT-H (Belkhale et al. 2024, arXiv 2403.01823).

    Paper: PaLI-X queried twice: first a language motion, then RT-2 action tokens given it; motions
    auto-labelled from proprioception. Scaled down: one tiny LM pass; a motion classifier over
    the automatically labelled motion vocabulary (CE, teacher-forced) and a 256-bin action head
    that reads the motion embedding as an extra context token.
    """
    return Recipe(
        name="rt_h",
        model=_vlm_model(
            action_horizon=4,
            motion_hierarchy=True,
            motion_threshold=0.2,
            gripper_index=-1,
            head="bins",
            head_kwargs={**SMALL_HEAD},
        ),
        train=_train(1e-4, 16, 5000),
        normalization=QUANTILE,
        paper="RT-H, Belkhale et al. 2024 (arXiv 2403.01823)",
        scaled_down="PaLI-X → tiny LM; two queries → one prefix pass + motion classifier",
    )


@recipe(
    "octo",
    "Octo: CNN patch tokens + language + transformer trunk + diffusion head (20 steps, cosine)",
)
def octo() -> Recipe:
    """Octo (Octo Model Team 2024, arXiv 2405.12213).

    Paper: Octo-Small 27M / Base 93M transformer over shallow-CNN patch tokens and T5-Base
    language tokens, readout tokens, an MLP-ResNet diffusion head with 20 DDPM steps and a cosine
    schedule, window of 2 observations, chunk of 4. Scaled down: 2-layer 64-wide trunk, MiniLM
    instead of T5, a 2-layer diffusion head.
    """
    return Recipe(
        name="octo",
        model=VLAConfig(
            action_dim=7,
            action_horizon=4,
            obs_horizon=2,
            state_dim=0,
            width=64,
            vision="small_cnn",
            vision_kwargs={"width": 16, "num_blocks": 3, "out_dim": 64},
            projector="mlp",
            language="minilm",
            trunk_layers=2,
            head="diffusion",
            head_kwargs={
                **SMALL_HEAD,
                "num_train_timesteps": 20,
                "beta_schedule": "cosine",
                "sampler": "ddpm",
                "num_inference_steps": 20,
                # Octo normalizes actions mean-std and clips them at max_action = 5
                # (octo/model/components/action_heads.py)
                "clip_range": 5.0,
            },
        ),
        train=_train(3e-4, 32, 5000, weight_decay=0.1, warmup_steps=200),
        normalization=MEAN_STD,
        paper="Octo, Octo Model Team 2024 (arXiv 2405.12213)",
        scaled_down="27M/93M → ~0.5M trunk, T5-Base → MiniLM, 12 → 2 layers",
    )


@recipe(
    "openvla",
    "OpenVLA: fused DINOv2+SigLIP patches + MLP projector + Llama LM, 256-bin action tokens",
)
def openvla() -> Recipe:
    """OpenVLA (Kim et al. 2024, arXiv 2406.09246).

    Paper: Prismatic-7B (DINOv2 + SigLIP patch features concatenated per patch, 2-layer MLP
    projector, Llama-2 7B), 7 action dims binned into 256 bins over q01–q99 normalized [-1, 1],
    written over the last 256 Llama tokens; one action per step; LoRA r=32 fine-tuning. Scaled
    down: the same fused ``dinosiglip`` tower built from two tiny random ViTs (64 wide, 2 layers,
    read at the penultimate block as Prismatic does), a 64-wide 2-layer Llama-class LM.
    ``backbone=`` loads a real LM; ``vision_kwargs={"dino_path": ..., "siglip_path": ...}``
    loads the real towers.
    """
    return Recipe(
        name="openvla",
        model=_vlm_model(vision="dinosiglip", action_tokens_in_lm=True, head="none"),
        train=_train(5e-4, 16, 5000, betas=(0.9, 0.999), weight_decay=0.0),
        normalization=QUANTILE,
        paper="OpenVLA, Kim et al. 2024 (arXiv 2406.09246)",
        scaled_down="Prismatic-7B → tiny fused DINOv2+SigLIP towers + 2-layer Llama-class LM",
    )


@recipe(
    "openvla_oft", "OpenVLA-OFT: parallel decoding of an 8-step chunk with an L1 regression head"
)
def openvla_oft() -> Recipe:
    """OpenVLA-OFT (Kim, Finn, Liang 2025, arXiv 2502.19645).

    Paper: OpenVLA with parallel decoding (bidirectional empty action embeddings), continuous
    actions, an MLP-ResNet L1 head; chunk 8 on LIBERO; two images + proprio; LoRA r=32, lr 5e-4,
    150k steps; q01/q99 normalization. Scaled down: tiny SigLIP + tiny LM, 2-layer L1 head.
    """
    return Recipe(
        name="openvla_oft",
        model=_vlm_model(
            action_horizon=8,
            state_dim=8,
            head="l1",
            head_kwargs={**SMALL_HEAD, "resnet_blocks": 2},
        ),
        train=_train(5e-4, 16, 5000, betas=(0.9, 0.999), weight_decay=0.0),
        normalization=QUANTILE,
        paper="OpenVLA-OFT, Kim, Finn, Liang 2025 (arXiv 2502.19645)",
        scaled_down="7B → tiny SigLIP + 2-layer LM; MLPResNet hidden 4096 → 64",
        extra={"execute_horizon": 8},
    )


@recipe("pi0", "π0: VLM prefix + flow-matching action expert (Beta time, 10 Euler steps)")
def pi0() -> Recipe:
    """π0 (Black et al. 2024, arXiv 2410.24164; openpi ``pi0.py``).

    Paper: PaliGemma 3B (SigLIP + Gemma 2B) prefix, a 300M Gemma action expert, flow matching
    with Beta(1.5, 1) time and 10 Euler steps, H=50, state token; openpi fine-tuning AdamW(0.9,
    0.95), cosine 2.5e-5 with 1k warmup, EMA 0.99, batch 32, 30k steps. Scaled down: tiny SigLIP
    + 2-layer Gemma-class LM, a 2-layer 64-wide expert, H=16, higher lr for a tiny model.
    """
    return Recipe(
        name="pi0",
        model=_vlm_model(
            action_horizon=16,
            state_dim=8,
            language_kwargs=_tiny_lm("gemma"),
            head="flow_matching",
            head_kwargs={**SMALL_HEAD, "num_steps": 10},
        ),
        train=_train(
            2.5e-4,
            32,
            5000,
            betas=(0.9, 0.95),
            weight_decay=1e-10,
            ema_decay=0.99,
            warmup_steps=100,
        ),
        normalization=MEAN_STD,
        paper="π0, Black et al. 2024 (arXiv 2410.24164)",
        scaled_down="PaliGemma 3B + 300M expert → tiny SigLIP + 2-layer Gemma + 64-wide expert, H 50 → 16",
        extra={"execute_horizon": 8},
    )


@recipe("pi0_fast", "π0-FAST: VLM prefix + FAST (DCT + BPE) action tokens decoded autoregressively")
def pi0_fast() -> Recipe:
    """π0-FAST (Pertsch et al. 2025, arXiv 2501.09747).

    Paper: PaliGemma 3B decoding FAST tokens (DCT per dimension, scale 10, BPE vocab 2048)
    autoregressively; q01/q99 normalization; chunk 10 on LIBERO. Scaled down: tiny SigLIP + tiny
    Gemma-class LM, the FAST head's own small decoder (``head_kwargs.tokenizer_path`` takes a
    tokenizer fitted with ``vlastack fast fit``; none = the no-merge FAST code).
    """
    return Recipe(
        name="pi0_fast",
        model=_vlm_model(
            action_horizon=10,
            state_dim=8,
            language_kwargs=_tiny_lm("gemma"),
            head="fast",
            head_kwargs={**SMALL_HEAD},
        ),
        train=_train(2.5e-4, 32, 5000, betas=(0.9, 0.95), weight_decay=1e-10, ema_decay=0.99),
        normalization=QUANTILE,
        paper="π0-FAST, Pertsch et al. 2025 (arXiv 2501.09747)",
        scaled_down="PaliGemma 3B → tiny SigLIP + 2-layer Gemma; FAST+ vocab 2048 → fitted or no-merge",
    )


@recipe(
    "pi05",
    "π0.5 + knowledge insulation: flow expert on detached features, FAST-token CE trains the VLM",
)
def pi05() -> Recipe:
    """π0.5 (Intelligence et al. 2025, arXiv 2504.16054) with knowledge insulation (2505.23705).

    Paper: the VLM learns from next-token CE on the action chunk's FAST tokens (teacher-forced
    after the prefix) while the flow-matching expert (adaRMSNorm time conditioning) reads
    stop-gradient VLM features and never attends to the FAST tokens; 10 Euler steps; quantile
    normalization; chunk 10 on LIBERO. Scaled down: tiny SigLIP + tiny Gemma-class LM; FAST
    tokens without BPE merges unless ``aux_token_kwargs={"tokenizer_path": DIR}`` names a
    tokenizer fitted with ``vlastack fast fit``; no web-data co-training.
    """
    return Recipe(
        name="pi05",
        model=_vlm_model(
            action_horizon=10,
            state_dim=8,
            language_kwargs=_tiny_lm("gemma"),
            head="flow_matching",
            head_kwargs={**SMALL_HEAD, "num_steps": 10, "time_conditioning": "adarms"},
            insulate_head=True,
            aux_token_loss="fast",
            aux_loss_weight=1.0,
        ),
        train=_train(2.5e-4, 32, 5000, betas=(0.9, 0.95), weight_decay=1e-10, ema_decay=0.999),
        normalization=QUANTILE,
        paper="π0.5, Physical Intelligence 2025 (arXiv 2504.16054); KI (arXiv 2505.23705)",
        scaled_down="PaliGemma → tiny SigLIP + 2-layer Gemma; FAST+ vocab 2048 → fitted or no-merge FAST; no web data",
    )


@recipe(
    "smolvla",
    "SmolVLA: SmolLM-class VLM truncated to its first layers + flow expert, frozen vision",
)
def smolvla() -> Recipe:
    """SmolVLA (Shukor et al. 2025, arXiv 2506.01844).

    Paper: SmolVLM2-500M with only the first 16 of 32 LM layers, 64 visual tokens per frame,
    a ~100M flow-matching expert, 10 steps, chunk 50; vision frozen; AdamW(0.9, 0.95), lr 1e-4,
    warmup 1k, cosine, clip 10. Scaled down: a 4-layer tiny Llama-class (SmolLM) LM truncated to 2
    layers, a perceiver resampler to 16 tokens, H=16.
    """
    lm = _tiny_lm("llama", num_hidden_layers=4)
    lm["num_layers"] = 2
    return Recipe(
        name="smolvla",
        model=_vlm_model(
            action_horizon=16,
            state_dim=8,
            projector="perceiver",
            projector_kwargs={"num_latents": 16},
            language_kwargs=lm,
            freeze_vision=True,
            head="flow_matching",
            head_kwargs={**SMALL_HEAD, "num_steps": 10},
        ),
        train=_train(
            1e-4, 32, 5000, betas=(0.9, 0.95), weight_decay=1e-10, grad_clip=10.0, freeze=["vision"]
        ),
        normalization=MEAN_STD,
        paper="SmolVLA, Shukor et al. 2025 (arXiv 2506.01844)",
        scaled_down="SmolVLM2-500M (16 of 32 layers) → tiny LM (2 of 4 layers); expert 100M → 64-wide",
        extra={"execute_horizon": 8},
    )


@recipe(
    "diffusion_policy",
    "Diffusion Policy: GroupNorm CNN + spatial softmax, DDPM 100 steps / DDIM 10",
)
def diffusion_policy() -> Recipe:
    """Diffusion Policy (Chi et al. 2023, arXiv 2303.04137).

    Paper: ResNet-18 from scratch with GroupNorm and spatial softmax per camera, To=2, Tp=16,
    Ta=8, DDPM 100 train steps (squaredcos_cap_v2, ε-prediction, clip), DDIM 10 steps on the real
    robot, lr 1e-4, batch 64, EMA; state and action min-max normalized to [-1, 1]. Scaled down:
    a 3-block 16-wide CNN, a 2-layer transformer denoiser instead of the 1-D U-Net, no language.
    """
    return Recipe(
        name="diffusion_policy",
        model=VLAConfig(
            action_dim=2,
            action_horizon=16,
            obs_horizon=2,
            state_dim=2,
            width=64,
            vision="small_cnn",
            vision_kwargs={
                "width": 16,
                "num_blocks": 3,
                "output": "spatial_softmax",
                "out_dim": 64,
            },
            shared_vision=False,
            projector="mlp",
            language="none",
            head="diffusion",
            head_kwargs={
                **SMALL_HEAD,
                "num_train_timesteps": 100,
                "beta_schedule": "squaredcos_cap_v2",
                "sampler": "ddim",
                "num_inference_steps": 10,
            },
        ),
        train=_train(
            1e-4,
            64,
            5000,
            betas=(0.95, 0.999),
            weight_decay=1e-6,
            warmup_steps=500,
            ema_decay=0.999,
        ),
        normalization=MIN_MAX,
        paper="Diffusion Policy, Chi et al. 2023 (arXiv 2303.04137)",
        scaled_down="ResNet-18 → 16-wide CNN; 1-D U-Net → 2-layer transformer denoiser",
        extra={"execute_horizon": 8},
    )


@recipe(
    "diffusion_policy_cnn",
    "Diffusion Policy (DP-C): the same encoder with the paper's 1-D temporal U-Net denoiser",
)
def diffusion_policy_cnn() -> Recipe:
    """Diffusion Policy's CNN variant (Chi et al. 2023, arXiv 2303.04137, DP-C).

    Everything as in ``diffusion_policy`` except the denoiser: the paper's 1-D temporal U-Net
    (two FiLM-conditioned residual blocks per level, GroupNorm(8), Mish, kernel 5, stride-2
    down/up-sampling, FiLM scale and bias from [diffusion-step embedding, observation features]).
    The paper's widths are (256, 512, 1024) and its DP-C beats DP-T on PushT (0.91 vs 0.78 max
    success, image obs). Scaled down: widths (32, 64, 128), step embedding 64.
    """
    r = diffusion_policy()
    r.name = "diffusion_policy_cnn"
    r.model.head_kwargs = {
        "width": r.model.head_kwargs["width"],
        "num_train_timesteps": 100,
        "beta_schedule": "squaredcos_cap_v2",
        "sampler": "ddim",
        "num_inference_steps": 10,
        "denoiser": "unet",
        "down_dims": (32, 64, 128),
        "step_embed_dim": 64,
    }
    r.scaled_down = "ResNet-18 → 16-wide CNN; U-Net widths (256, 512, 1024) → (32, 64, 128)"
    return r


@recipe(
    "act", "ACT: pretrained CNN + CVAE transformer, L1 chunks with a KL term (z = 0 at inference)"
)
def act() -> Recipe:
    """ACT (Zhao et al. 2023, arXiv 2304.13705).

    Paper: ImageNet ResNet-18, CVAE transformer (encoder 4 / decoder 7 layers, hidden 512),
    kl_weight 10, chunk k=100, temporal ensembling exp(-0.01 i), lr 1e-5, batch 8, mean/std
    normalization, ReLU feed-forward layers (from DETR). Scaled down: the offline ImageNet
    MobileNetV2 instead of ResNet-18, a 64-wide CVAE with a 1-layer action encoder, a 1-layer
    observation encoder (the policy trunk, over the image and state tokens) and a 2-layer
    decoder, k=20, lr 1e-4 for the small model.
    """
    return Recipe(
        name="act",
        model=VLAConfig(
            action_dim=14,
            action_horizon=20,
            obs_horizon=1,
            state_dim=14,
            width=64,
            vision="mobilenet_v2",
            vision_kwargs={"pretrained": True},
            projector="mlp",
            language="none",
            trunk_layers=1,  # ACT's transformer encoder over the observation tokens
            head="act",
            head_kwargs={
                "width": 64,
                "encoder_depth": 1,
                "decoder_depth": 2,
                "num_heads": 4,
                "kl_weight": 10.0,
                "activation": "relu",  # ACT's (DETR's) feed-forward activation
            },
        ),
        train=_train(
            1e-4,
            8,
            5000,
            betas=(0.9, 0.999),
            weight_decay=1e-4,
            warmup_steps=0,
            schedule="constant",
        ),
        normalization=MEAN_STD,
        paper="ACT, Zhao et al. 2023 (arXiv 2304.13705)",
        scaled_down="ResNet-18 → offline MobileNetV2; 4/7 layers × 512 → 1/2 × 64; k 100 → 20",
        extra={"temporal_ensembling": 0.01},
    )


@recipe(
    "bitvla", "BitVLA: the OFT recipe with 1.58-bit ternary weights in the LM and vision encoder"
)
def bitvla() -> Recipe:
    """BitVLA (Wang et al. 2025, arXiv 2506.07530).

    Paper: BitNet b1.58 2B4T LM and a SigLIP-L distilled to W1.58-A8, OFT recipe (parallel
    decoding, L1), 1.4 GB memory. Scaled down: the openvla_oft recipe with every Linear of the
    tiny LM and vision tower swapped for BitLinear (absmean ternary weights, 8-bit activations,
    straight-through training) instead of distillation.
    """
    r = openvla_oft()
    r.name = "bitvla"
    r.model.ternary = ["language", "vision"]
    r.paper = "BitVLA, Wang et al. 2025 (arXiv 2506.07530)"
    r.scaled_down = "BitNet 2B4T + SigLIP-L → tiny ternarized LM + ViT; no distillation"
    return r


@recipe(
    "demo",
    "the `make demo` VLA: frozen ImageNet MobileNetV2 + frozen MiniLM + L1 chunk head (OFT-style)",
)
def demo() -> Recipe:
    """The main job's recipe: pretrained offline encoders, a continuous head, minutes on a CPU.

    Follows OpenVLA-OFT's action side (Kim, Finn, Liang 2025: parallel decoding of an 8-step
    chunk, L1 regression) on top of frozen pretrained encoders that ship offline: ImageNet
    MobileNetV2 cut after its stride-16 stage (6x6 tokens of 96-d at 96x96) and the MiniLM
    sentence encoder for the instruction. Frozen vision lets the trainer encode every frame once
    (``cache_vision_features``), so thousands of steps fit in minutes on two cores.
    """
    return Recipe(
        name="demo",
        model=VLAConfig(
            action_dim=4,
            action_horizon=8,
            obs_horizon=1,
            state_dim=4,
            image_size=(96, 96),
            width=128,
            vision="mobilenet_v2",
            vision_kwargs={"num_layers": 14},
            freeze_vision=True,
            projector="mlp",
            language="minilm",
            trunk_layers=2,
            head="l1",
            head_kwargs={"width": 128, "depth": 2, "num_heads": 4},
        ),
        train=_train(3e-4, 64, 4000, warmup_steps=100, ema_decay=None),
        normalization=MEAN_STD,
        paper="OpenVLA-OFT action head (arXiv 2502.19645) on frozen MobileNetV2 + MiniLM",
        scaled_down="7B VLM → frozen 2M-param MobileNetV2 stem + 22M MiniLM; 2-layer 128-wide trunk",
        extra={"execute_horizon": 8},
    )
