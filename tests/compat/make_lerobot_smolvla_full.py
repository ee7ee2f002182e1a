"""Build LeRobot 0.6.1's FULL-size SmolVLA (SmolVLM2-500M shapes) with random weights, save it,
and record one ``predict_action_chunk`` on a random preprocessed batch.

Run with ``.venv-lerobot``'s Python (lerobot 0.6.1; not a vlastack dependency):
``python tests/compat/make_lerobot_smolvla_full.py VLM_DIR OUT_DIR``. ``VLM_DIR`` holds the
SmolVLM2-500M ``config.json`` (the test writes it from vlastack's KNOWN_VLMS table, whose numbers
the fast tests check against full_keys.json); ``AutoProcessor`` is stubbed as in the fixture
generator (README "smolvla" patches). Writes ``OUT_DIR/{config.json, model.safetensors}``
(``policy.save_pretrained``) and ``OUT_DIR/io.safetensors``: the batch (images (1, 3, 48, 64) in
[0, 1], normalized state, tokens, mask), the noise and LeRobot's (1, 50, 6) normalized chunk, at 1
thread. Prints one JSON line with LeRobot's seconds per chunk (best of 2).
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> int:
    from types import SimpleNamespace

    import lerobot.policies.smolvla.smolvlm_with_expert as swe
    import torch
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.factory import make_policy_config
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy
    from safetensors.torch import save_file

    class _Processor:
        @staticmethod
        def from_pretrained(*_a, **_k):
            return SimpleNamespace(
                tokenizer=SimpleNamespace(fake_image_token_id=49189, global_image_token_id=49152)
            )

    swe.AutoProcessor = _Processor
    torch.set_num_threads(1)
    vlm_dir, out = sys.argv[1:3]
    cfg = make_policy_config(
        "smolvla", device="cpu", push_to_hub=False, vlm_model_name=vlm_dir, load_vlm_weights=False
    )
    cfg.input_features = {
        "observation.images.top": PolicyFeature(FeatureType.VISUAL, (3, 48, 64)),
        "observation.images.wrist": PolicyFeature(FeatureType.VISUAL, (3, 48, 64)),
        "observation.state": PolicyFeature(FeatureType.STATE, (6,)),
    }
    cfg.output_features = {"action": PolicyFeature(FeatureType.ACTION, (6,))}
    torch.manual_seed(0)
    policy = SmolVLAPolicy(cfg).eval()
    policy.save_pretrained(out)
    g = torch.Generator().manual_seed(7)
    text = b"pick up the red block\n"
    tokens = torch.tensor([[2] + [3 + b for b in text]])
    batch = {
        "observation.images.top": torch.rand(1, 3, 48, 64, generator=g),
        "observation.images.wrist": torch.rand(1, 3, 48, 64, generator=g),
        "observation.state": torch.randn(1, 6, generator=g),
        "observation.language.tokens": tokens,
        "observation.language.attention_mask": torch.ones_like(tokens, dtype=torch.bool),
    }
    noise = torch.randn(1, cfg.chunk_size, cfg.max_action_dim, generator=g)
    times = []
    for _ in range(2):
        policy.reset()
        t0 = time.perf_counter()
        with torch.inference_mode():
            chunk = policy.predict_action_chunk(dict(batch), noise=noise.clone())
        times.append(time.perf_counter() - t0)
    save_file(
        {**batch, "noise": noise, "chunk": chunk.contiguous()}, os.path.join(out, "io.safetensors")
    )
    print(json.dumps({"lerobot_seconds_per_chunk": min(times)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
