"""Parity over (head × runner): every registered action head (and the diffusion head's U-Net
denoiser) run by every runner (vlastack.runners) gives the eager modules' chunk, at the
tolerance the runner declares (``Runner.tolerance``), on random weights and on the committed
trained weights (tests/golden/trained_heads.safetensors, made by tests/golden/train_heads.py).

A runner that cannot run a head says why (``Runner.not_applicable``); which pairs are not
applicable is pinned here (``NOT_APPLICABLE``), so a runner that silently stops covering a
head, or claims one it cannot run, fails. CUDA-graph cases need a GPU and skip without one.
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
