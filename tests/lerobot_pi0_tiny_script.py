"""Run inside LeRobot 0.6.1's interpreter (tests/_lerobot_python.py): load a pi0 / pi05
fixture folder with LeRobot's own ``from_pretrained`` (the fixtures' tiny Gemma/SigLIP sizes
patched in, as the fixtures' README "pi_tiny_variants" describes) and run
``predict_action_chunk`` on the golden preprocessed batches with the golden noise at the given
thread count, and the training forward's loss. Usage: python lerobot_pi0_tiny_script.py THREADS OUT.safetensors KIND_DIR...
(the outputs are saved as ``<n>.obs<i>``, n the KIND_DIR's position). A KIND_DIR holds
golden.safetensors and pretrained_model/; its name ends with the policy type."""

import sys

import torch

threads, out_file, kind_dirs = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
torch.set_num_threads(threads)

from lerobot.configs import PreTrainedConfig  # noqa: E402
from lerobot.policies.pi0 import modeling_pi0 as m0  # noqa: E402
from lerobot.policies.pi0.configuration_pi0 import PI0Config  # noqa: E402
from lerobot.policies.pi05 import modeling_pi05 as m5  # noqa: E402
from lerobot.policies.pi05.configuration_pi05 import PI05Config  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

TINY = {
    "dummy": dict(width=64, depth=4, mlp_dim=128, num_heads=8, num_kv_heads=1, head_dim=16),
    "dummy_expert": dict(width=32, depth=4, mlp_dim=64, num_heads=8, num_kv_heads=1, head_dim=16),
}
VOCAB = 1024
VISION = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, patch_size=14
)

for mod in (m0, m5):
    orig = mod.get_gemma_config
    mod.get_gemma_config = lambda v, orig=orig, mod=mod: (
        mod.GemmaConfig(**TINY[v]) if v in TINY else orig(v)
    )
    pali_cls, expert_cls = mod.PaliGemmaForConditionalGenerationWithPiGemma, mod.PiGemmaForCausalLM

    def pali(config, pali_cls=pali_cls):
        config._vocab_size = VOCAB
        config.text_config.vocab_size = VOCAB
        for k, v in VISION.items():
            setattr(config.vision_config, k, v)
        config.vision_config.projection_dim = config.text_config.hidden_size
        return pali_cls(config=config)

    def expert(config, expert_cls=expert_cls):
        config.vocab_size = VOCAB
        return expert_cls(config=config)

    mod.PaliGemmaForConditionalGenerationWithPiGemma = pali
    mod.PiGemmaForCausalLM = expert
for cls in (PI0Config, PI05Config):
    cls.__post_init__ = lambda self: PreTrainedConfig.__post_init__(self)

out = {}
for n, kind_dir in enumerate(kind_dirs):
    kind = "pi05" if kind_dir.rstrip("/").endswith("pi05") else "pi0"
    policy_cls = m5.PI05Policy if kind == "pi05" else m0.PI0Policy
    policy = policy_cls.from_pretrained(f"{kind_dir}/pretrained_model")
    policy.eval()
    g = load_file(f"{kind_dir}/golden.safetensors")
    for i in range(3):
        pre = f"obs{i}.preprocessed."
        batch = {k[len(pre) :]: v for k, v in g.items() if k.startswith(pre)}
        policy.reset()
        with torch.no_grad():
            chunk = policy.predict_action_chunk(batch, noise=g[f"obs{i}.noise"])
        out[f"{n}.obs{i}"] = chunk.contiguous()
        # the training forward: LeRobot's per-element loss for actions = the golden chunk
        # padded to 32, the golden noise, time 0.3
        sa = f"obs{i}.sample_actions."
        imgs = [g[sa + "images.0"], g[sa + "images.1"]]
        masks = [g[sa + "img_masks.0"], g[sa + "img_masks.1"]]
        actions = torch.nn.functional.pad(g[f"obs{i}.action_chunk_normalized"], (0, 26))
        args = [imgs, masks, g[sa + "lang_tokens"], g[sa + "lang_masks"]]
        if kind == "pi0":
            args.append(g[sa + "state"])
        with torch.no_grad():
            loss = policy.model.forward(*args, actions, g[f"obs{i}.noise"], torch.tensor([0.3]))
        out[f"{n}.loss{i}"] = loss.contiguous()
save_file(out, out_file)
