"""`vlastack fast fit` on the shared LeRobot v3 fixture."""

from __future__ import annotations

import numpy as np

from vlastack.cli.main import main
from vlastack.functional.fast_tokenizer import FastTokenizer


def test_fast_fit_cli(lerobot_fixture, tmp_path, capsys):
    out = tmp_path / "fast"
    rc = main(
        [
            "fast",
            "fit",
            str(lerobot_fixture),
            "--out",
            str(out),
            "--action-horizon",
            "8",
            "--vocab-size",
            "300",
        ]
    )
    assert rc == 0
    assert "FAST tokenizer" in capsys.readouterr().out
    tok = FastTokenizer.load(out)
    assert tok.time_horizon == 8 and tok.extra["normalization"] == "quantile"
    from vlastack.cli.fast import collect_chunks

    chunks, q01, q99 = collect_chunks(lerobot_fixture, 8)
    assert chunks.shape[1:] == (8, tok.action_dim) and q01.shape == (tok.action_dim,)
    rec = tok.decode(tok.encode(chunks))
    assert np.sqrt(((rec - chunks) ** 2).sum(1)).max() <= 0.5 / tok.scale * np.sqrt(8) + 1e-6


def test_fast_fit_cli_bad_key(lerobot_fixture, tmp_path, capsys):
    rc = main(["fast", "fit", str(lerobot_fixture), "--out", str(tmp_path / "x"), "--key", "nope"])
    assert rc == 2
    assert "no feature 'nope'" in capsys.readouterr().err
