"""Parity over (head × runner): every registered action head (and the diffusion head's U-Net
denoiser) run by every runner (vlastack.runners) gives the eager modules' chunk, at the
tolerance the runner declares (``Runner.tolerance``), on random weights and on the committed
trained weights (tests/golden/trained_heads.safetensors, made by tests/golden/train_heads.py).

A runner that cannot run a head says why (``Runner.not_applicable``); which pairs are not
applicable is pinned here (``NOT_APPLICABLE``), so a runner that silently stops covering a
head, or claims one it cannot run, fails. CUDA-graph cases need a GPU and skip without one.

Vision encoders go through the runners too (``Runner.vision``, the VLA's ``vision_runner``
slot): (vision encoder × runner) cases compare each runner's encoder with the eager module on
random weights and random BatchNorm statistics (eval mode), at the runner's tolerance. Which
runners change the encoder at all is pinned (``VISION_ACCELERATED``); the others run it as it is.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import pytest
import torch

from vlastack.errors import ConfigError
from vlastack.models.action_heads import ACTION_HEADS
from vlastack.runners import RUNNER_CHOICES, RUNNERS, get_runner

sys.path.insert(0, str(Path(__file__).parent / "golden"))
from train_heads import ALIASES, PATH, TRAINED_CONFIGS, batch, build  # noqa: E402

HEADS = list(TRAINED_CONFIGS)
# (runner, head) pairs the runner declines, and a word its reason must carry
NOT_APPLICABLE = {
    ("onnxruntime", "bins"): "export_kind",
    ("onnxruntime", "bins_ar"): "export_kind",
    ("onnxruntime", "fast"): "export_kind",
}


# runner → the vision encoders it runs in a form of its own (the native runner folds each eval
# Conv→BatchNorm pair; small_cnn has GroupNorm only); every other pair runs the module itself
VISION_ACCELERATED = {"native": {"mobilenet_v2", "hf_resnet"}}
VISION_CASES = {
    "small_cnn": {},
    "mobilenet_v2": {"pretrained": False, "num_layers": 14},
    "hf_resnet": {},
}


def test_every_registered_head_is_covered():
    assert set(ACTION_HEADS) <= set(HEADS)
    assert set(RUNNERS) == {"eager", "native", "cuda_graphs", "onnxruntime"}


def test_cli_runner_names_match_the_registry():
    from vlastack.cli.runner_option import RUNNER_NAMES

    assert RUNNER_NAMES == RUNNER_CHOICES


def _head(name: str, weights: str) -> torch.nn.Module:
    torch.manual_seed(0)
    head = build(name)
    if weights == "trained":
        from safetensors.torch import load_file

        stored = load_file(str(PATH))
        key = ALIASES.get(name, name)
        state = {k[len(key) + 1 :]: v for k, v in stored.items() if k.startswith(key + ".")}
        assert state, f"{PATH} holds no weights for {name}: run tests/golden/train_heads.py"
        head.load_state_dict(state)
    return head.eval()


@functools.cache
def _eager(
    name: str, weights: str
) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The head on the CPU, its inputs and its eager chunk, shared by the runners' cases (the
    runners never change the head they are given: each works on its own copy)."""
    head = _head(name, weights)
    x = batch(torch.Generator().manual_seed(7), B=3)
    ref = head.sample_actions(x["context"], x["context_mask"], torch.Generator().manual_seed(0))
    return head, x["context"], x["context_mask"], ref


@pytest.mark.parametrize("weights", ["random", "trained"])
@pytest.mark.parametrize("runner_name", list(RUNNERS))
@pytest.mark.parametrize("name", HEADS)
def test_runner_matches_eager(name, runner_name, weights):
    runner = get_runner(runner_name)
    device = torch.device("cuda" if runner_name == "cuda_graphs" else "cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    head, context, mask, ref = _eager(name, weights)
    if device.type == "cuda":
        head = _head(name, weights).to(device)
        context, mask = context.to(device), mask.to(device)
        ref = head.sample_actions(context, mask, torch.Generator().manual_seed(0))
    why = runner.not_applicable(head, device)
    expected = NOT_APPLICABLE.get((runner_name, name))
    if expected is not None or why is not None:
        # not applicable: declared, with its reason, and refused with it when asked anyway
        assert expected is not None, f"{runner_name} declines {name}: {why}"
        assert why is not None and expected in why, why
        if runner_name == "onnxruntime":
            with pytest.raises(ConfigError, match=expected):
                runner.head(head)
        return
    fn = runner.head(head)
    with torch.no_grad():
        out = fn(context, mask, generator=torch.Generator().manual_seed(0))
        again = fn(context, mask, generator=torch.Generator().manual_seed(0))
    atol, rtol = runner.tolerance
    assert out.shape == ref.shape and out.dtype == ref.dtype
    torch.testing.assert_close(out, ref, atol=atol, rtol=rtol)
    torch.testing.assert_close(again, out, atol=atol, rtol=rtol)  # caches reused, same chunk


def test_trained_golden_is_small():
    assert PATH.stat().st_size < 1_000_000


def test_trained_weights_are_not_the_initial_ones():
    for name in ("act", "diffusion_unet", "flow_matching"):
        a, b = _head(name, "random"), _head(name, "trained")
        diff = [
            float((p - q).abs().max())
            for p, q in zip(a.state_dict().values(), b.state_dict().values())
            if p.is_floating_point()
        ]
        assert max(diff) > 1e-3, name


def test_vla_runs_through_the_runner_it_is_given():
    from _export_tiny import tiny_config
    from vlastack.models.vla import build_vla
    from vlastack.runners import default_runner, use_runner

    assert default_runner("cpu") == "native" and default_runner("cuda") == "eager"
    torch.manual_seed(0)
    model = build_vla(tiny_config("act", trunk_layers=1, trunk_heads=2)).eval()
    batch_ = {
        "observation.images.front": torch.rand(1, 1, 3, 16, 16),
        "observation.images.wrist": torch.rand(1, 1, 3, 16, 16),
        "observation.state": torch.randn(1, 1, 4),
        "task": ["push"],
    }
    eager = model.sample_actions(batch_)
    assert use_runner(model, "auto") == "native" and model.head_runner is not None
    assert model.trunk_runner is not None  # the trunk's plan, used at inference only
    torch.testing.assert_close(model.sample_actions(batch_), eager, atol=1e-4, rtol=1e-4)
    assert model.vision_runner is None  # tiny_config's small_cnn: GroupNorm, nothing to fold
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        use_runner(model, "cuda_graphs")
    with pytest.raises(ConfigError, match="unknown value 'fastest'"):
        use_runner(model, "fastest")
    assert use_runner(model, "eager") == "eager" and model.head_runner is None


def test_cli_runner_option_picks_and_refuses(tmp_path, capsys):
    """``bench latency --runner``: a runner that applies runs (same stages reported); one that
    cannot run the head is a clear error (exit 2) naming the runner and the reason."""
    from _export_tiny import write_tiny_checkpoint
    from vlastack.cli.main import main
    from vlastack.policy import Policy

    ckpt = write_tiny_checkpoint(tmp_path / "ck", "act")
    for runner in ("eager", "native", "onnxruntime"):
        argv = ["bench", "latency", str(ckpt), "--iters", "2", "--warmup", "0", "--json"]
        assert main([*argv, "--threads", "1", "--runner", runner]) == 0
        out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert "head" in [row["stage"] for row in out["stages"]], runner
    policy = Policy.from_checkpoint(ckpt)
    assert policy.runner == "native"
    if policy.device.type == "cpu":
        with pytest.raises(ConfigError, match="CUDA graphs need a CUDA device"):
            policy.use_runner("cuda_graphs")
        assert policy.runner == "native"  # unchanged by the refusal
    bins = write_tiny_checkpoint(tmp_path / "bins", "bins")
    argv = ["bench", "latency", str(bins), "--iters", "1", "--warmup", "0"]
    assert main([*argv, "--threads", "1", "--runner", "onnxruntime"]) == 2
    assert "runner 'onnxruntime' cannot run head 'bins'" in capsys.readouterr().err


def _random_bn_stats(module: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)


@functools.cache
def _eager_vision(name: str) -> tuple[torch.nn.Module, dict, torch.Tensor, torch.Tensor]:
    from vlastack.models.vision import MultiCameraEncoder, build_vision_encoder

    pytest.importorskip("transformers")
    torch.manual_seed(0)
    enc = MultiCameraEncoder(
        lambda: build_vision_encoder(name, VISION_CASES[name]), ["front", "wrist"], 2, (64, 64)
    )
    _random_bn_stats(enc)
    enc.eval()
    g = torch.Generator().manual_seed(3)
    batch = {
        f"observation.images.{c}": torch.rand(2, 2, 3, 64, 64, generator=g) for c in enc.cameras
    }
    with torch.no_grad():
        ref = enc(batch)
        frames = enc.encode_frames(0, batch["observation.images.front"][:, 0])
    return enc, batch, ref, frames


@pytest.mark.parametrize("runner_name", list(RUNNERS))
@pytest.mark.parametrize("name", list(VISION_CASES))
def test_vision_runner_matches_eager(name, runner_name):
    enc, batch, ref, frames = _eager_vision(name)
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    fast = get_runner(runner_name).vision(enc)
    accelerated = name in VISION_ACCELERATED.get(runner_name, set())
    assert (fast is not None) == accelerated, (runner_name, name)
    if fast is None:
        return  # the runner runs the module itself: the eager output by construction
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())  # all folded
    with torch.no_grad():
        out = fast(batch)
        out_frames = fast.encode_frames(0, batch["observation.images.front"][:, 0])
    atol, rtol = get_runner(runner_name).tolerance
    torch.testing.assert_close(out, ref, atol=atol, rtol=rtol)
    torch.testing.assert_close(out_frames, frames, atol=atol, rtol=rtol)
    # the module the caller holds is untouched (its own BatchNorms, same weights)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in enc.modules())
    after = enc.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], v) for k, v in before.items())


def test_vision_runner_does_not_fold_training_batchnorm():
    """A BatchNorm in training mode normalizes with batch statistics: nothing to fold."""
    from vlastack.models.vision import MultiCameraEncoder, build_vision_encoder

    enc = MultiCameraEncoder(
        lambda: build_vision_encoder(
            "mobilenet_v2", {**VISION_CASES["mobilenet_v2"], "bn_eval": False}
        ),
        ["front"],
        1,
        (32, 32),
    ).train()
    assert get_runner("native").vision(enc) is None


def test_vla_encodes_images_through_its_vision_runner():
    """A VLA with a BatchNorm encoder: ``use_runner`` plugs the folded encoder into the
    ``vision_runner`` slot; the chunk matches eager; training (autograd, train mode) runs the
    module; a change of the BatchNorm statistics changes ``structure_key`` (Policy rebuilds)."""
    from _export_tiny import tiny_config
    from vlastack.models.vla import build_vla
    from vlastack.runners import clear_runners, structure_key, use_runner

    torch.manual_seed(0)
    cfg = tiny_config(
        "l1", vision="mobilenet_v2", vision_kwargs={"pretrained": False, "num_layers": 4}
    )
    model = build_vla(cfg)
    _random_bn_stats(model.vision)
    model.eval()
    batch_ = {
        "observation.images.front": torch.rand(2, 1, 3, 16, 16),
        "observation.images.wrist": torch.rand(2, 1, 3, 16, 16),
        "observation.state": torch.randn(2, 1, 4),
    }
    eager = model.sample_actions(batch_)
    key = structure_key(model)
    assert use_runner(model, "native") == "native" and model.vision_runner is not None
    calls = []
    assert not any("vision_runner" in k for k in model.state_dict())  # not a submodule
    mine = set(map(id, model.vision.modules()))
    fast = model.vision_runner.__self__  # the bound __call__ of the runner's encoder
    convs = [m for m in fast.modules() if isinstance(m, torch.nn.Conv2d)]
    folded = [m for m in convs if id(m) not in mine]  # the runner's own convolutions
    assert folded and len(folded) == len(convs)
    folded[0].register_forward_hook(lambda *a: calls.append(1))
    torch.testing.assert_close(model.sample_actions(batch_), eager, atol=1e-4, rtol=1e-4)
    assert calls == [1]
    model.train()
    model.loss({**batch_, "action": torch.zeros(2, 4, 4)}).mean().backward()
    assert calls == [1]  # training ran the module
    assert structure_key(model) != key  # train mode and the BatchNorm statistics moved
    clear_runners(model)
    assert model.vision_runner is None and model.head_runner is None
