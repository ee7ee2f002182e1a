"""The training loop on a tiny in-test policy: outputs, exact resume, divergence, freezing, LoRA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from training_toy import ToyPolicy, toy_parts
from vlastack.errors import ConfigError, DataError
from vlastack.training import adapters
from vlastack.training.checkpoint import load_checkpoint, load_resume_state
from vlastack.training.config import LoraSettings, TrainConfig
from vlastack.training.loop import TrainingDivergedError, train


def cfg_for(tmp: Path, **kw) -> TrainConfig:
    base = dict(
        out_dir=str(tmp),
        steps=6,
        batch_size=8,
        lr=1e-2,
        warmup_steps=2,
        log="none",
        progress=False,
        val_batches=2,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_trains_and_writes_a_complete_run(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path, steps=40, log="tensorboard", val_every=20, log_every=5)
    res = train(cfg, lambda c: toy_parts())
    assert len(res.losses) == 40 and res.step == 40 and res.stopped_by is None
    assert sum(res.losses[-5:]) / 5 < 0.7 * sum(res.losses[:5]) / 5
    ck = res.last_checkpoint
    assert ck is not None and ck.name == "step_000040"
    for name in (
        "model.safetensors",
        "config.json",
        "normalization.json",
        "embodiment.json",
        "format_version",
        "optimizer.safetensors",
        "trainer_state.json",
    ):
        assert (ck / name).is_file(), name
    assert (tmp_path / "checkpoints" / "last").resolve() == ck.resolve()
    assert (tmp_path / "checkpoints" / "best").exists()
    assert (tmp_path / "val" / "open_loop_step20.png").stat().st_size > 1000
    assert (tmp_path / "val" / "open_loop_step40.png").stat().st_size > 1000
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "train/loss" in r] == list(range(5, 41, 5))
    val = [r for r in rows if "val/action_mse" in r]
    assert len(val) == 2 and "val/action_mse/dim1" in val[0]
    assert "probe/language_swap_delta" in val[0]
    assert res.val_metrics["val/action_mse"] == pytest.approx(val[-1]["val/action_mse"])
    # config.json holds the full train config and the model config
    conf = json.loads((ck / "config.json").read_text())
    assert conf["train"]["steps"] == 40 and conf["model"]["toy"] is True
    # deployable weights load into a fresh model with the same keys
    fresh = ToyPolicy()
    fresh.load_state_dict(load_checkpoint(ck).weights)
    assert res.param_counts["total"][0] == sum(p.numel() for p in fresh.parameters())


@pytest.mark.parametrize("ema", [None, 0.9])
def test_resume_matches_uninterrupted_run(tmp_path: Path, ema: float | None) -> None:
    # grad_accum=2 with 10 batches per epoch makes the 12 micro-batches cross an epoch boundary.
    kw = dict(steps=6, batch_size=8, grad_accum=2, ema_decay=ema, save_every=3)
    straight = train(cfg_for(tmp_path / "a", **kw), lambda c: toy_parts())

    # The interrupted run crashes (NaN) in step 4 and keeps its step-3 checkpoint
    # (loss calls: 1 memory probe + 2 micro-batches per step).
    with pytest.raises(TrainingDivergedError):
        train(cfg_for(tmp_path / "b", **kw), lambda c: toy_parts(nan_after=7))
    assert load_resume_state(tmp_path / "b" / "checkpoints" / "last").step == 3
    resumed = train(cfg_for(tmp_path / "b", resume=True, **kw), lambda c: toy_parts())

    assert resumed.losses == straight.losses[3:]  # bit-for-bit
    wa = load_file(str(straight.last_checkpoint / "model.safetensors"))
    wb = load_file(str(resumed.last_checkpoint / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    sa = json.loads((straight.last_checkpoint / "trainer_state.json").read_text())
    sb = json.loads((resumed.last_checkpoint / "trainer_state.json").read_text())
    assert sa["sampler"] == sb["sampler"] == {"epoch": 1, "batch_in_epoch": 2}
    assert sa["rng"] == sb["rng"]


def test_nonfinite_loss_names_step_and_episodes_and_keeps_checkpoint(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path, steps=10, save_every=2)
    with pytest.raises(TrainingDivergedError) as exc:
        train(cfg, lambda c: toy_parts(nan_after=6))  # 1 probe call, then one per step
    msg = str(exc.value)
    assert "step 6" in msg and "episodes [" in msg and "step_000004" in msg
    ck = load_checkpoint(tmp_path / "checkpoints" / "last")
    assert ck.step == 4
    assert all(torch.isfinite(v).all() for v in ck.weights.values())


def test_existing_run_requires_resume(tmp_path: Path) -> None:
    train(cfg_for(tmp_path, steps=2), lambda c: toy_parts())
    with pytest.raises(ConfigError, match="--resume"):
        train(cfg_for(tmp_path, steps=2), lambda c: toy_parts())


def test_freeze_by_group_name_and_regex(tmp_path: Path) -> None:
    parts = toy_parts()
    before = {k: v.clone() for k, v in parts.model.state_dict().items()}
    res = train(cfg_for(tmp_path, steps=3, freeze=["language", r"^head\.0\."]), lambda c: parts)
    after = parts.model.state_dict()
    for k in before:
        frozen = k.startswith("lang.") or k.startswith("head.0.")
        assert torch.equal(before[k], after[k]) == frozen, k
    assert res.param_counts["language"] == (256, 0)
    with pytest.raises(ConfigError, match="matches no parameter"):
        adapters.apply_freeze(ToyPolicy(), ["visoin"])


def test_lora_trains_adapters_and_saves_merged_weights(tmp_path: Path) -> None:
    parts = toy_parts()
    base_w = parts.model.head[0].weight.detach().clone()
    lora = LoraSettings(rank=2, alpha=4.0, target=r"head\.0")
    res = train(cfg_for(tmp_path, steps=4, lora=lora), lambda c: parts)
    model = parts.model
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "head.0.base_layer.weight" not in names
    assert {"head.0.lora_A.default.weight", "head.2.weight", "state_enc.weight"} <= names
    assert torch.equal(model.head[0].base_layer.weight, base_w)  # base frozen
    # model.safetensors has plain keys with LoRA merged: same predictions as the adapted model.
    deployed = ToyPolicy()
    deployed.load_state_dict(load_checkpoint(res.last_checkpoint).weights)
    batch = parts.normalizer.normalize(
        torch.utils.data.default_collate([parts.train_dataset[i] for i in range(4)])
    )
    with torch.no_grad():
        torch.testing.assert_close(deployed.sample_actions(batch), model.sample_actions(batch))
    assert not torch.equal(deployed.head[0].weight, base_w)
    with pytest.raises(ConfigError, match="matches no nn.Linear"):
        adapters.apply_lora(ToyPolicy(), 2, 4.0, r"nothing")


def test_grad_accumulation_equals_full_batch(tmp_path: Path) -> None:
    built = []

    def build(cfg: TrainConfig):
        built.append(toy_parts(loss_noise=0.0))  # built after the loop seeds the RNGs
        return built[-1]

    a = train(cfg_for(tmp_path / "f", steps=3, batch_size=8), build)
    b = train(cfg_for(tmp_path / "g", steps=3, batch_size=4, grad_accum=2), build)
    assert a.losses == pytest.approx(b.losses, rel=1e-5)
    full, acc = built
    for (k, x), y in zip(full.model.state_dict().items(), acc.model.state_dict().values()):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6, msg=k)


def test_language_probe_warns_when_language_is_ignored(tmp_path: Path, capsys) -> None:
    res = train(cfg_for(tmp_path / "deaf", steps=2), lambda c: toy_parts(use_language=False))
    out = capsys.readouterr().out
    assert res.language_probe is not None and res.language_probe.blank_delta == 0.0
    assert "policy may ignore language" in out
    res = train(cfg_for(tmp_path / "hears", steps=2), lambda c: toy_parts())
    out = capsys.readouterr().out
    assert res.language_probe.min_delta > 0.02
    assert "policy may ignore language" not in out


def test_bf16_autocast_and_memory_estimate(tmp_path: Path) -> None:
    res = train(cfg_for(tmp_path / "a", steps=2, precision="bf16"), lambda c: toy_parts())
    assert all(torch.isfinite(torch.tensor(res.losses)))
    small = res.memory
    big = train(cfg_for(tmp_path / "b", steps=1, batch_size=32), lambda c: toy_parts()).memory
    assert small.params_bytes == big.params_bytes > 0
    assert small.optimizer_bytes == 2 * small.params_bytes  # fp32 params, two moments
    assert 0 < small.activations_bytes < big.activations_bytes


@pytest.mark.parametrize("kernels", [True, False])
def test_bf16_on_a_cpu_without_bf16_kernels_trains_in_fp32(kernels, monkeypatch) -> None:
    """Without oneDNN's bf16 kernels (no AVX-512 / AVX-NE-CONVERT) CPU autocast runs reference
    loops ~50x slower than fp32; the loop says so and keeps fp32, as it does on such a GPU."""
    from vlastack.training import loop

    said: list[str] = []
    monkeypatch.setattr(loop, "cpu_bf16_kernels", lambda: kernels)
    ctx = loop.make_autocast("bf16", torch.device("cpu"), lambda *a, **k: said.append(a[0]))
    with ctx():
        y = torch.nn.functional.linear(torch.randn(2, 4), torch.randn(3, 4))
    assert y.dtype == (torch.bfloat16 if kernels else torch.float32)
    assert bool(said) != kernels and all("training in fp32" in m for m in said)


def test_too_little_data_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="batch_size"):
        train(cfg_for(tmp_path, batch_size=500), lambda c: toy_parts())
