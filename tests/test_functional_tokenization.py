"""OpenVLA binning and the FAST tokenizer: round trips and error bounds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vlastack.errors import ConfigError, DataError
from vlastack.functional.action_tokenization import (
    actions_to_token_ids,
    bin_centers,
    bin_index,
    digitize,
    index_to_value,
    normalize_q01_q99,
    token_ids_to_actions,
    unnormalize_q01_q99,
)
from vlastack.functional.fast_tokenizer import FastTokenizer

HALF_BIN = 1.0 / 255  # edges are 2/255 apart


def test_digitize_matches_numpy():
    x = torch.linspace(-1.2, 1.2, 1001)
    ref = np.digitize(np.clip(x.numpy(), -1, 1), np.linspace(-1, 1, 256))
    assert digitize(x).tolist() == ref.tolist()
    assert int(digitize(torch.tensor(1.0))) == 256 and int(digitize(torch.tensor(-1.0))) == 1


def test_bin_round_trip_within_half_bin():
    x = torch.rand(10_000, generator=torch.Generator().manual_seed(0)) * 2 - 1
    x = torch.cat([x, torch.tensor([-1.0, 1.0, 0.0])])
    err = (index_to_value(bin_index(x)) - x).abs()
    assert float(err.max()) <= HALF_BIN + 1e-6
    vocab = 32000
    ids = actions_to_token_ids(x, vocab)
    assert int(ids.min()) >= vocab - 256 and int(ids.max()) <= vocab - 1
    torch.testing.assert_close(token_ids_to_actions(ids, vocab), index_to_value(bin_index(x)))
    assert bin_centers().shape == (255,)


def test_q01_q99_normalization_round_trip_and_clip():
    q01, q99 = torch.tensor([-2.0, 0.0, 5.0]), torch.tensor([2.0, 10.0, 5.0])
    x = torch.tensor([[0.0, 5.0, 5.0], [4.0, -1.0, 7.0]])
    y = normalize_q01_q99(x, q01, q99)
    torch.testing.assert_close(y[0, :2], torch.tensor([0.0, 0.0]))
    assert y[1, 0] == 1.0 and y[1, 1] == -1.0  # clipped
    assert y[0, 2] == 0.0 and y[1, 2] == 0.0  # q01 == q99 → 0
    torch.testing.assert_close(
        unnormalize_q01_q99(y[0, :2], q01[:2], q99[:2]), x[0, :2], atol=1e-6, rtol=0
    )
    mask = torch.tensor([True, True, False])
    assert normalize_q01_q99(x, q01, q99, mask)[1, 2] == 7.0  # unmasked dim passes through


def _smooth_chunks(n, T=16, D=4, seed=0):
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, T)[None, :, None]
    f, ph = rng.uniform(0.3, 1.5, (n, 1, D)), rng.uniform(0, 1, (n, 1, D))
    return np.clip(0.8 * np.sin(2 * np.pi * (f * t + ph)), -1, 1)


@pytest.fixture(scope="module")
def fitted():
    return FastTokenizer.fit(_smooth_chunks(300), vocab_size=400, scale=10.0)


def test_fast_round_trip_error_bounded_by_scale(fitted):
    x = _smooth_chunks(50, seed=1)
    rec = fitted.decode(fitted.encode(x))
    # rounding error ≤ 0.5/scale per coefficient; the orthonormal IDCT preserves the L2 norm per dim
    per_dim_l2 = np.sqrt(((rec - x) ** 2).sum(axis=1))
    assert per_dim_l2.max() <= 0.5 / fitted.scale * math.sqrt(x.shape[1]) + 1e-6
    assert np.abs(rec - x).max() < 0.2


def test_fast_compresses_smooth_chunks(fitted):
    x = _smooth_chunks(50, seed=2)
    lens = [len(s) for s in fitted.encode(x)]
    assert np.mean(lens) < 0.5 * x.shape[1] * x.shape[2]  # far fewer tokens than numbers


def test_fast_dct_row_major_layout(fitted):
    # a chunk that is constant in time has only the DC coefficient per dim: c0_d0, c0_d1, … first
    x = np.zeros((1, 16, 4))
    x[0, :, 1] = 0.5
    text = fitted.bpe.decode(fitted.encode(x)[0])
    codes = np.array([ord(c) for c in text]) + fitted.min_token
    assert codes[1] == round(0.5 * math.sqrt(16) * 10) and codes[0] == 0 and not codes[4:].any()


def test_fast_invalid_decodes_to_zeros(fitted):
    chunks, valid = fitted.decode_with_validity([[5], []])
    assert not valid.any() and not chunks.any()


def test_fast_save_load(tmp_path, fitted):
    fitted.save(tmp_path / "tok")
    back = FastTokenizer.load(tmp_path / "tok")
    x = _smooth_chunks(5, seed=3)
    assert back.encode(x) == fitted.encode(x)
    assert back.min_token == fitted.min_token and back.scale == fitted.scale
    assert FastTokenizer.from_dict(fitted.to_dict()).encode(x) == fitted.encode(x)


def test_fast_errors(tmp_path, fitted):
    with pytest.raises(DataError, match="fast fit"):
        FastTokenizer.load(tmp_path)
    with pytest.raises(DataError, match="chunks"):
        fitted.encode(np.zeros((2, 8, 4)))
    with pytest.raises(ConfigError, match="vocab_size"):
        FastTokenizer.fit(_smooth_chunks(3), vocab_size=100)


def test_fast_untrained_is_lossless_up_to_rounding():
    tok = FastTokenizer.untrained(8, 3)
    x = np.random.default_rng(0).uniform(-1, 1, (4, 8, 3))
    rec = tok.decode(tok.encode(x))
    assert np.sqrt(((rec - x) ** 2).sum(1)).max() <= 0.05 * math.sqrt(8) + 1e-6
    assert max(len(s) for s in tok.encode(x)) <= tok.max_tokens_per_chunk
