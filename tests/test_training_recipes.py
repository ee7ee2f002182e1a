"""Training real recipes on the LeRobot fixture: the CLI, exact resume with a data worker, fit checks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from vlastack.errors import ConfigError, DataError
from vlastack.models.vla import VLAConfig
from vlastack.training.fit_checks import check_recipe_fits


def fake_reader(**kw):
    base = dict(
        root=Path("/data/x"),
        num_episodes=2,
        num_frames=40,
        camera_keys=["observation.images.front"],
        features={"observation.state": object(), "action": object()},
        tasks=["pick"],
        episodes=[SimpleNamespace(length=20), SimpleNamespace(length=20)],
    )
    base.update(kw)
    return SimpleNamespace(**base)


@pytest.mark.parametrize(
    ("model_kw", "reader_kw", "fragment"),
    [
        ({"cameras": ["wrist"]}, {}, "needs cameras ['wrist']"),
        ({"state_dim": 3}, {"features": {"action": object()}}, "observation.state"),
        ({}, {"tasks": []}, "no task instructions"),
        ({"action_horizon": 32}, {}, "shorter than the recipe's action_horizon 32"),
        ({}, {"num_episodes": 0, "num_frames": 0, "episodes": []}, "no episodes"),
    ],
)
def test_recipe_that_does_not_fit_the_data_is_refused(model_kw, reader_kw, fragment) -> None:
    cfg = VLAConfig(cameras=["front"], state_dim=0, language="minilm", action_horizon=8)
    for k, v in model_kw.items():
        setattr(cfg, k, v)
    with pytest.raises(DataError) as exc:
        check_recipe_fits("r", cfg, fake_reader(**reader_kw), None)
    assert fragment in str(exc.value)


def test_cli_errors_are_plain(capsys) -> None:
    from vlastack.cli.main import main

    assert main(["train", "cpu_default", "--data", "/nope", "--stpes=3"]) == 2
    assert "Did you mean 'steps'" in capsys.readouterr().err
    with pytest.raises(ConfigError):
        from vlastack.training.config import TrainConfig

        TrainConfig.from_recipe("cpu_defalt")


def test_cli_trains_resumes_and_policy_loads(tmp_path: Path, lerobot_fixture: Path) -> None:
    """`vlastack train diffusion_policy ... --resume` after a crash at step 2 ends with the weights
    and optimizer state of the uninterrupted 4-step run, bit for bit (num_threads=1: the same
    ops on the same thread count; the diffusion loss draws noise, so the RNG must be restored)."""
    from vlastack.cli.main import main
    from vlastack.policy import Policy

    args = [
        "train",
        "diffusion_policy",
        "--data",
        str(lerobot_fixture),
        f"--out_dir={tmp_path}",
        "--batch_size=2",
        "--log=none",
        "--progress=false",
        "--val_fraction=0.34",
        "--val_batches=1",
        "--model.action_horizon=8",
        "--num_threads=1",
        "--steps=4",
        "--save_every=2",
    ]
    assert main(args) == 0
    last = tmp_path / "checkpoints" / "last"
    assert last.resolve().name == "step_000004"
    w_a, opt_a, st_a = _run_state(last.resolve())
    _interrupt_after(tmp_path / "checkpoints", 2)
    w_mid = load_file(str(last.resolve() / "model.safetensors"))
    assert main([*args, "--resume"]) == 0
    assert last.resolve().name == "step_000004"
    w_b, opt_b, st_b = _run_state(last.resolve())
    _assert_same_tensors(w_a, w_b)
    assert any(not torch.equal(w_a[k], w_mid[k]) for k in w_a)  # steps 3-4 did train
    _assert_same_tensors(opt_a, opt_b)
    assert st_a["rng"] == st_b["rng"] and st_a["sampler"] == st_b["sampler"]
    policy = Policy.from_checkpoint(last)
    assert policy.action_horizon == 8 and policy.action_dim == 4
    assert (tmp_path / "val" / "open_loop_step4.png").exists()


def _interrupt_after(ckpt_root: Path, step: int) -> None:
    """Leave ``ckpt_root`` as a run that died after saving step ``step``: later checkpoints and
    the best pointer gone, ``last`` at step ``step``."""
    from vlastack.training import checkpoint

    for d in checkpoint.list_step_dirs(ckpt_root):
        if int(d.name.removeprefix(checkpoint.STEP_PREFIX)) > step:
            shutil.rmtree(d)
    (ckpt_root / "best").unlink(missing_ok=True)
    checkpoint.set_pointer(ckpt_root, "last", f"{checkpoint.STEP_PREFIX}{step:06d}")


def _run_state(ckpt: Path) -> tuple[dict, dict, dict]:
    """Weights, optimizer tensors and trainer state (RNG, sampler, scheduler) of a checkpoint."""
    return (
        load_file(str(ckpt / "model.safetensors")),
        load_file(str(ckpt / "optimizer.safetensors")),
        json.loads((ckpt / "trainer_state.json").read_text()),
    )


def _assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and a
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{len(differ)}/{len(a)} tensors differ, e.g. {differ[:3]}"


def test_real_recipe_resumes_bit_for_bit_with_data_workers(
    tmp_path: Path, lerobot_fixture: Path
) -> None:
    """cpu_default (small CNN + MiniLM + flow matching, whose loss draws noise and time from the
    global RNG) on the two-camera fixture, video frames decoded by one data worker: 4 steps
    straight == 2 steps, a crash, --resume, 2 more. Bitwise: the same ops on the same thread
    count (num_threads=1, so the auto count cannot follow the load average) give the same bits,
    so any difference means some state was not restored. ~15-25 s: two runs, each starting a
    forkserver data worker."""
    from vlastack.training.config import TrainConfig
    from vlastack.training.loop import train

    args = [
        f"--data={lerobot_fixture}",
        f"--out_dir={tmp_path}",
        "--steps=4",
        "--save_every=2",
        "--batch_size=10",
        "--warmup_steps=1",
        "--lr=3e-3",
        "--log=none",
        "--log_every=1",
        "--progress=false",
        "--val_fraction=0.34",
        "--val_batches=1",
        "--num_workers=1",
        "--num_threads=1",
    ]
    straight = train(TrainConfig.from_recipe("cpu_default", args))
    assert straight.step == 4 and straight.last_checkpoint is not None
    w_a, opt_a, st_a = _run_state(straight.last_checkpoint)
    # 2 training episodes (32 windows) give 3 batches of 10 per epoch: the resume point is mid-epoch and
    # the resumed steps cross into the next epoch
    assert st_a["sampler"] == {"epoch": 1, "batch_in_epoch": 1}

    ckpts = tmp_path / "checkpoints"
    _interrupt_after(ckpts, 2)
    w_mid = load_file(str(ckpts / "step_000002" / "model.safetensors"))
    mid_state = json.loads((ckpts / "step_000002" / "trainer_state.json").read_text())
    assert mid_state["sampler"] == {"epoch": 0, "batch_in_epoch": 2}
    resumed = train(TrainConfig.from_recipe("cpu_default", [*args, "--resume=true"]))
    assert resumed.step == 4 and resumed.last_checkpoint is not None
    w_b, opt_b, st_b = _run_state(resumed.last_checkpoint)

    assert resumed.losses == straight.losses[2:]  # bit-for-bit
    _assert_same_tensors(w_a, w_b)
    assert any(not torch.equal(w_a[k], w_mid[k]) for k in w_a)  # steps 3-4 did train
    _assert_same_tensors(opt_a, opt_b)  # Adam moments and step counts
    for key in ("rng", "sampler", "scheduler", "step"):
        assert st_a[key] == st_b[key], key
    # the logged losses: the resume dropped the first run's rows past step 2 (issue 27.7: no
    # step twice), and the resumed run logged steps 3-4 again with the very same values
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    logged = [(r["step"], r["train/loss"], r["train/lr"]) for r in rows if "train/loss" in r]
    assert [s for s, _, _ in logged] == [1, 2, 3, 4]
    assert [loss for _, loss, _ in logged] == straight.losses
