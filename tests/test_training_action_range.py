"""A head that can only output a bounded normalized range (diffusion's x̂0 clip, the bins) must
not be paired with mean-std normalized actions that exceed it: that policy would train, then
move too little, silently. The check runs before training; the published pairings pass."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from test_training_mixture import FLAGS, write_dataset
from vlastack.errors import ConfigError
from vlastack.functional.diffusion_sampling import ddim_step, ddpm_step
from vlastack.training.build import build_parts
from vlastack.training.config import TrainConfig


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Gaussian actions: their 1st/99th percentiles sit ~2.3 std from the mean
    return write_dataset(tmp_path_factory.mktemp("rng") / "d", 2, 3, ["front"], episodes=4)


SMALL = '--model.head_kwargs={"width": 32, "depth": 1, "num_heads": 2}'


def parts(data: Path, *extra: str):
    """build_parts (dataset, normalizer, model; no training) of cpu_default with ``extra``; a
    head swap also swaps in head-neutral sizes (cpu_default's kwargs are the flow head's)."""
    head = [SMALL] if any(e.startswith("--model.head=") for e in extra) else []
    args = [f"--data={data}", "--out_dir=unused", "--batch_size=4", *FLAGS, *head, *extra]
    return build_parts(TrainConfig.from_recipe("cpu_default", args))


def test_clipping_heads_refuse_mean_std_actions_they_cannot_reach(data: Path) -> None:
    with pytest.raises(ConfigError) as err:
        parts(data, "--model.head=diffusion")
    msg = str(err.value)
    assert "stats.json" in msg and "±1" in msg and "q01/q99" in msg
    assert "--model.normalization.action=min_max" in msg and "clip_range" in msg
    with pytest.raises(ConfigError, match="bins span"):
        parts(data, "--model.head=bins")


def test_published_pairings_pass(data: Path) -> None:
    p = parts(data, "--model.head=diffusion", "--model.normalization.action=min_max")
    assert p.model.action_output_range == 1.0
    assert p.normalizer.modes["action"] == "min_max"
    assert p.normalizer.modes["observation.state"] == "mean_std"  # only the action mode changed
    wide = parts(data, "--model.head=diffusion", "--model.head_kwargs.clip_range=5")  # Octo
    assert wide.model.action_output_range == 5.0
    assert parts(data, "--model.head=bins", "--model.normalization.action=quantile")
    assert parts(data).model.action_output_range is None  # flow matching: unbounded


def test_octo_recipe_clips_at_five_std() -> None:
    from vlastack.recipes import get_recipe

    r = get_recipe("octo")
    assert r.normalization["action"] == "mean_std" and r.model.head_kwargs["clip_range"] == 5.0


@pytest.mark.parametrize("step", ["ddim", "ddpm"])
def test_sampler_clips_x0_to_the_range(step: str) -> None:
    abar = torch.linspace(0.99, 0.5, 10)
    x_t, eps = torch.full((1, 2, 2), 3.0), torch.zeros(1, 2, 2)
    for clip_range in (1.0, 5.0):
        if step == "ddim":  # to t_prev = -1 (ᾱ = 1) the step returns x̂0 itself
            out = ddim_step(x_t, eps, 5, -1, abar, True, clip_range)
        else:
            out = ddpm_step(x_t, eps, 0, -1, abar, True, None, clip_range)
        x0 = 3.0 / float(abar[5 if step == "ddim" else 0].sqrt())
        np.testing.assert_allclose(out.numpy(), min(x0, clip_range), rtol=1e-5)
