"""MiniLM instruction encoder, transformers decoder backbones, and the RT-H motion labeller."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vlastack.errors import ConfigError
from vlastack.models.language import (
    LANGUAGE_BACKBONES,
    build_language,
    label_motions,
    motion_vocabulary,
)


@pytest.fixture(scope="module")
def minilm():
    return build_language("minilm")


def test_registry_names():
    assert {"minilm", "hf_causal_lm", "none"} <= set(LANGUAGE_BACKBONES)


def test_minilm_is_deterministic_distinct_normalized_and_cached(minilm):
    texts = ["pick up the red cup", "open the top drawer", "pick up the red cup"]
    a = minilm.encode(texts)
    assert a.shape == (3, 384)
    torch.testing.assert_close(a.norm(dim=-1), torch.ones(3))
    assert minilm.cache_size == 2  # repeated instructions are embedded once
    torch.testing.assert_close(a[0], a[2])
    assert (a[0] - a[1]).abs().max() > 0.05
    # Uncached recomputation gives the same vector (no dropout, no state).
    minilm._cache.clear()
    torch.testing.assert_close(
        minilm.encode(["pick up the red cup"])[0], a[0], rtol=1e-5, atol=1e-6
    )
    # A real sentence encoder: a paraphrase is closer than an unrelated instruction.
    p = minilm.encode(["grab the red mug", "turn on the stove"])
    assert float(a[0] @ p[0]) > float(a[0] @ p[1]) + 0.1
    assert not any(p.requires_grad for p in minilm.parameters())


@pytest.mark.parametrize("model_type", ["llama", "gemma", "qwen2"])
def test_tiny_decoder_backbones_run_on_embeddings(model_type):
    extra = {"head_dim": 16} if model_type == "gemma" else {}
    lm = build_language(
        "hf_causal_lm", {"config": {"model_type": model_type, **extra}, "max_text_tokens": 8}
    )
    ids, mask = lm.tokenize(["pick up the cup", "go"])
    assert ids.shape[1] <= 8 and mask[:, -1].all()  # left padding: the last position is real
    x = torch.cat([torch.randn(2, 4, lm.out_dim), lm.embed(ids)], 1)
    m = torch.cat([torch.ones(2, 4, dtype=torch.bool), mask], 1)
    h, _ = lm.hidden_states(x, m)
    assert h.shape == (2, x.shape[1], lm.out_dim) and torch.isfinite(h).all()
    assert lm.logits(h).shape[-1] == lm.vocab_size


def test_truncated_layers_and_local_folder_round_trip(tmp_path):
    torch.manual_seed(0)
    lm = build_language("hf_causal_lm", {"config": {"num_hidden_layers": 4}, "num_layers": 2})
    assert len(lm.model.get_decoder().layers) == 2 and lm.model.config.num_hidden_layers == 2
    lm.model.save_pretrained(tmp_path / "lm")
    lm.tokenizer.save_pretrained(tmp_path / "lm")
    again = build_language("hf_causal_lm", {"pretrained": str(tmp_path / "lm")})
    ids, mask = lm.tokenize(["open the drawer"])
    with torch.no_grad():
        torch.testing.assert_close(
            again.hidden_states(again.embed(ids), mask)[0], lm.hidden_states(lm.embed(ids), mask)[0]
        )
    with pytest.raises(ConfigError, match="language_kwargs.pretrained"):
        build_language(
            "hf_causal_lm",
            {"pretrained": str(tmp_path / "nope"), "tokenizer": str(tmp_path / "lm")},
        )
    with pytest.raises(ConfigError, match="num_layers"):
        build_language("hf_causal_lm", {"num_layers": 5})


def test_unknown_language_gets_did_you_mean():
    with pytest.raises(ConfigError, match="Did you mean 'minilm'"):
        build_language("minilmm")


def _window(vec, H=4):
    return np.tile(np.asarray(vec, float), (H, 1))


def test_label_motions_dominant_component_and_gripper():
    A = 7
    fwd = _window([0.5, 0.1, 0, 0, 0, 0, 1])
    left = _window([0.05, 0.4, -0.1, 0, 0, 0, -1])
    down = _window([0.0, 0.1, -0.6, 0, 0, 0.3, 1])
    still = _window([0.05, -0.05, 0.1, 0, 0, 0, 1])
    close = np.concatenate(
        [_window([0.3, 0, 0, 0, 0, 0, -1], 2), _window([0.3, 0, 0, 0, 0, 0, 1], 2)]
    )
    opening = close[::-1].copy()
    labels = label_motions(
        np.stack([fwd, left, down, still, close, opening]), threshold=0.2, gripper_index=-1
    )
    assert labels == [
        "move arm forward",
        "move arm left",
        "move arm down",
        "stop",
        "close gripper",
        "open gripper",
    ]
    vocab = motion_vocabulary(A, gripper_index=-1)
    assert set(labels) <= set(vocab) and vocab[0] == "stop" and len(vocab) == 1 + 2 * A


def test_label_motions_thresholds_padding_and_absolute_actions():
    acts = torch.zeros(1, 4, 3)
    acts[0, :2, 0] = -0.3  # two real steps backward, then padding that would say "forward"
    acts[0, 2:, 0] = 5.0
    pad = torch.tensor([[False, False, True, True]])
    assert label_motions(acts, threshold=0.2, action_is_pad=pad) == ["move arm backward"]
    assert label_motions(acts, threshold=0.2) == ["move arm forward"]
    assert label_motions(acts[:, :2], threshold=0.5) == ["stop"]
    positions = torch.tensor([[0.0, 0, 0], [0, 0, 0.2], [0, 0, 0.5]])  # absolute: rises 0.5 in z
    assert label_motions(positions, threshold=0.2, action_kind="absolute") == ["move arm up"]
    with pytest.raises(ConfigError):
        label_motions(torch.zeros(5))
