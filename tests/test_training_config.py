"""TrainConfig overrides: type conversion, nested dataclasses, did-you-mean, recipe defaults."""

from __future__ import annotations

import pytest

from vlastack.errors import ConfigError
from vlastack.training.config import LoraSettings, TrainConfig, apply_overrides
from vlastack.training.optim import warmup_cosine


def test_overrides_convert_types_and_nest() -> None:
    cfg = TrainConfig()
    apply_overrides(
        cfg,
        [
            "--lr=3e-4",
            "--steps=12",
            "--betas=0.9,0.99",
            "--freeze=vision,^head\\.0",
            "--ema_decay=0.999",
            "--grad_clip=none",
            "--resume=true",
            "--lora.rank=4",
            "--model.action_horizon=8",
            '--model.cameras=["front"]',
            "--precision=bf16",
        ],
    )
    assert cfg.lr == 3e-4 and cfg.steps == 12 and cfg.betas == (0.9, 0.99)
    assert cfg.freeze == ["vision", "^head\\.0"]
    assert cfg.ema_decay == 0.999 and cfg.grad_clip is None and cfg.resume is True
    assert cfg.lora == LoraSettings(rank=4)  # created with defaults, then rank set
    assert cfg.model == {"action_horizon": 8, "cameras": ["front"]}
    apply_overrides(cfg, ["--lora=none"])
    assert cfg.lora is None


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("--lrr=1", "Did you mean 'lr'"),
        ("--lora.rnak=2", "Did you mean 'rank'"),
        ("--steps=many", "cannot use 'many'"),
        ("--precision=bf61", "Did you mean 'bf16'"),
        ("--betas=0.9", "expected 2"),
        ("--resume=maybe", "true/false"),
        ("steps", "--key=value"),
    ],
)
def test_bad_overrides_are_clear(override: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=None) as exc:
        apply_overrides(TrainConfig(), [override])
    assert fragment in str(exc.value)


def test_round_trip_and_validation() -> None:
    cfg = apply_overrides(TrainConfig(), ["--lora.rank=2", "--betas=0.5,0.6"])
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="ema_decay"):
        TrainConfig(ema_decay=1.5).validate()
    with pytest.raises(ConfigError, match="unknown keys"):
        TrainConfig.from_dict({"stepz": 1})


def test_recipe_defaults_then_overrides() -> None:
    from vlastack.recipes import get_recipe

    r = get_recipe("diffusion_policy")
    cfg = TrainConfig.from_recipe("diffusion_policy", ["--lr=5e-4", "--model.action_horizon=8"])
    assert cfg.lr == 5e-4  # user override wins
    assert cfg.ema_decay == r.train["ema_decay"] and cfg.betas == tuple(r.train["betas"])
    assert cfg.model == {"action_horizon": 8}


def test_warmup_cosine_schedule() -> None:
    lrs = [warmup_cosine(s, 4, 20, 0.1) for s in range(20)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert lrs[4] == pytest.approx(1.0) and lrs[-1] > 0.1
    assert warmup_cosine(20, 4, 20, 0.1) == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))
