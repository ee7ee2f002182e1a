"""π0.5 knowledge insulation with FAST tokens as the auxiliary loss (arXiv 2505.23705): the LM learns
next-token CE on the chunk's FAST tokens after the prefix, the flow head reads detached prefix
features that the FAST tokens cannot change."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _model_batches import make_batch  # noqa: E402
from _stub_head import stub_head_builder  # noqa: E402
from vlastack.errors import ConfigError  # noqa: E402
from vlastack.functional.fast_tokenizer import FastTokenizer  # noqa: E402
from vlastack.models.vla import VLAConfig, build_vla  # noqa: E402
from vlastack.recipes import get_recipe  # noqa: E402

TINY_LM = {
    "config": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2},
    "max_text_tokens": 8,
}
H, A = 6, 3


def _cfg(**kw) -> VLAConfig:
    base = dict(
        image_size=(32, 32),
        action_horizon=H,
        action_dim=A,
        state_dim=2,
        vision="small_cnn",
        vision_kwargs={"width": 8, "num_blocks": 2, "out_dim": 16},
        language="hf_causal_lm",
        language_kwargs=TINY_LM,
        head="flow_matching",
        head_kwargs={"width": 32, "depth": 1, "num_heads": 2, "num_steps": 2},
        insulate_head=True,
        aux_token_loss="fast",
    )
    base.update(kw)
    return VLAConfig(**base)


def _grad_sum(params) -> float:
    return sum(float(p.grad.abs().sum()) for p in params if p.grad is not None)


def _fitted(tmp_path: Path) -> Path:
    """A FAST tokenizer with BPE merges fitted on smooth chunks: token counts vary per chunk."""
    rng = np.random.default_rng(0)
    chunks = np.cumsum(rng.normal(0, 0.1, size=(200, H, A)), axis=1).clip(-1, 1)
    return FastTokenizer.fit(chunks, vocab_size=300).save(tmp_path / "fast")


def test_loss_is_finite_and_targets_are_fast_tokens_in_the_lm_vocab():
    torch.manual_seed(0)
    vla = build_vla(_cfg())
    batch = make_batch(vla.config, B=3)
    loss = vla.loss(batch)
    assert loss.shape == (3,) and torch.isfinite(loss).all()
    inp, inp_mask, tgt = vla.fast_lm_ids(batch["action"], batch["action_is_pad"])
    V, V_fast = vla.language.vocab_size, vla.aux_fast.vocab_size
    eoa = V - 1 - V_fast
    assert inp_mask.all() and (inp >= V - V_fast).all()  # FAST ids occupy the last V_fast slots
    assert tgt.shape == (3, inp.shape[1] + 1) and (tgt[:, -1] == eoa).all()
    torch.testing.assert_close(tgt[:, :-1], inp)
    # Mapping back to FAST ids decodes to the chunk, within the quantization step.
    decoded = vla.aux_fast.decode((V - 1 - inp).tolist())
    err = np.abs(decoded - batch["action"].numpy()).max()
    assert err <= 0.5 / vla.aux_fast.scale * np.sqrt(H)


def test_insulation_aux_loss_trains_the_backbone_flow_loss_does_not():
    batch = make_batch(_cfg(), B=2)
    grads = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        vla = build_vla(_cfg(aux_loss_weight=weight))
        torch.manual_seed(1)  # same flow noise and time in both runs
        vla.loss(batch).mean().backward()
        g = vla.param_groups()
        grads[weight] = {
            k: [None if p.grad is None else p.grad.clone() for p in v] for k, v in g.items()
        }
        backbone = g["vision"] + g["projector"] + g["state"] + g["language"]
        if weight == 0.0:
            assert _grad_sum(g["head"]) > 0 and _grad_sum(backbone) == 0.0
        else:
            assert _grad_sum(g["language"]) > 0 and _grad_sum(g["vision"]) > 0
            assert _grad_sum(g["projector"]) > 0 and _grad_sum(g["state"]) > 0
            out_emb = vla.language.model.get_output_embeddings().weight.grad
            V = vla.language.vocab_size
            assert out_emb[V - 1 - vla.aux_fast.vocab_size :].abs().sum() > 0
    # The aux loss adds nothing to the head's gradient: the head never reads the FAST tokens.
    for a, b in zip(grads[0.0]["head"], grads[1.0]["head"]):
        torch.testing.assert_close(a, b)


def test_head_context_is_unchanged_by_the_fast_tokens():
    torch.manual_seed(0)
    vla = build_vla(_cfg()).eval()
    batch = make_batch(vla.config, B=2)
    with torch.no_grad():
        plain, plain_mask, _ = vla.encode_prefix(batch)
    seen = {}
    real_loss = vla.head.loss

    def spy(ctx, mask, *args, **kw):
        seen["ctx"], seen["mask"] = ctx.detach().clone(), mask.clone()
        return real_loss(ctx, mask, *args, **kw)

    vla.head.loss = spy
    vla.loss(batch)
    assert seen["ctx"].shape == plain.shape  # no FAST position reaches the head
    torch.testing.assert_close(seen["ctx"], plain, rtol=1e-5, atol=1e-5)
    assert torch.equal(seen["mask"], plain_mask)
    # Other action chunks (other FAST tokens) leave the context alone, but change the LM logits.
    other = dict(batch, action=-batch["action"])
    ids_a, m_a, _ = vla.fast_lm_ids(batch["action"], batch["action_is_pad"])
    ids_b, m_b, _ = vla.fast_lm_ids(other["action"], other["action_is_pad"])
    with torch.no_grad():
        ctx_a, _, logits_a = vla.encode_prefix(batch, ids_a, m_a)
        ctx_b, _, logits_b = vla.encode_prefix(other, ids_b, m_b)
    torch.testing.assert_close(ctx_a, ctx_b, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(logits_a[:, 1:], logits_b[:, 1:])


def test_padded_fast_tokens_are_masked(tmp_path):
    """Per-sample loss is the same alone and next to a sample with a longer token sequence."""
    torch.manual_seed(0)
    cfg = _cfg(aux_token_kwargs={"tokenizer_path": str(_fitted(tmp_path))})
    vla = build_vla(cfg, head_builder=stub_head_builder).eval()
    batch = make_batch(cfg, B=2)
    batch["task"] = ["pick up the red cup"] * 2  # same text: no text padding in the prefix
    smooth = torch.linspace(-0.5, 0.5, H)[:, None].expand(H, A)
    batch["action"] = torch.stack([smooth, batch["action"][1]])
    batch["action_is_pad"][1, -2:] = True  # padded steps are filled before the DCT
    _, inp_mask, tgt = vla.fast_lm_ids(batch["action"], batch["action_is_pad"])
    lengths = inp_mask.sum(1)
    assert lengths[0] < lengths[1]  # the smooth chunk compresses to fewer tokens
    assert (tgt[0, lengths[0] + 1 :] == -100).all()
    with torch.no_grad():
        both = vla.loss(batch)
        alone = vla.loss({k: v[:1] for k, v in batch.items()})
    torch.testing.assert_close(both[:1], alone, rtol=1e-4, atol=1e-5)


def test_aux_fast_tokens_are_learned():
    torch.manual_seed(0)
    vla = build_vla(_cfg(), head_builder=stub_head_builder)
    batch = make_batch(vla.config, B=1)
    opt = torch.optim.Adam(vla.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = vla.loss(batch).mean()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]


def test_bad_fast_configs_are_errors(tmp_path):
    with pytest.raises(ConfigError, match="needs language='hf_causal_lm'"):
        _cfg(language="minilm", language_kwargs={}).validate()
    path = _fitted(tmp_path)
    with pytest.raises(ConfigError, match=r"fit on chunks \(6, 3\).*refit"):
        build_vla(_cfg(action_horizon=4, aux_token_kwargs={"tokenizer_path": str(path)}))
    with pytest.raises(ConfigError, match="Did you mean 'tokenizer_path'"):
        build_vla(_cfg(aux_token_kwargs={"tokenizer": str(path)}))


def test_pi05_recipe_uses_fast_aux_tokens_with_an_insulated_flow_head():
    r = get_recipe("pi05")
    assert r.model.insulate_head and r.model.aux_token_loss == "fast"
    assert r.model.head == "flow_matching" and "FAST" in r.scaled_down
    vla = build_vla(get_recipe("pi05", image_size=(48, 48)).model)
    assert vla.aux_fast is not None
    assert (vla.aux_fast.time_horizon, vla.aux_fast.action_dim) == (10, 7)
