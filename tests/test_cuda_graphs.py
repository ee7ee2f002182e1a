"""CUDA-graph replay of action heads (the cuda_graphs runner, runners/cuda_graphs.py;
Policy.enable_cuda_graphs).

The refusals and the capture-safe code paths are tested everywhere; replay itself needs a GPU
and is skipped without one (run this file on a CUDA machine to check it).
"""

from __future__ import annotations

import pytest
import torch

from vlastack.errors import ConfigError
from vlastack.models.action_heads import ACTION_HEADS, build_action_head
from vlastack.models.layers.inference import graph_capture, is_capturing
from vlastack.runners.cuda_graphs import CudaGraphsRunner, GraphedHead

D, H, A = 32, 4, 3
SMALL = {"width": 32, "num_heads": 2}
CAPTURABLE = {"act", "l1", "mlp", "bins", "bins_ar", "flow_matching", "flower", "diffusion"}
NEEDS_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _head(name: str, device: str = "cpu", **cfg):
    base = {"fast": {"width": 32, "num_heads": 2, "depth": 1}}.get(name, SMALL)
    head = build_action_head(name, {**base, **cfg}, context_dim=D, action_dim=A, action_horizon=H)
    return head.to(device).eval()


def test_every_head_declares_whether_it_can_be_captured() -> None:
    for name in ACTION_HEADS:
        ok, why = _head(name).cuda_graph_support()
        assert ok == (name in CAPTURABLE), name
        assert ok or why, f"{name} refuses without saying why"
    ok, why = _head("diffusion", sampler="ddpm").cuda_graph_support()
    assert not ok and "DDPM" in why


def test_refusals_name_the_reason() -> None:
    with pytest.raises(ConfigError, match="autoregressive"):
        GraphedHead(_head("fast"))
    graphed = GraphedHead(_head("l1"))
    ctx, mask = torch.randn(1, 5, D), torch.ones(1, 5, dtype=torch.bool)
    with pytest.raises(ConfigError, match="CUDA device"):
        graphed(ctx, mask)


def test_capture_mode_turns_off_host_synchronizing_paths() -> None:
    head = _head("act")
    ctx, mask = torch.randn(2, 5, D), torch.zeros(2, 5, dtype=torch.bool)
    with torch.no_grad():
        assert not is_capturing()
        with pytest.raises(ConfigError, match="valid context token"):
            head.sample_actions(ctx, mask)
        with graph_capture():
            assert is_capturing()  # the data-reading checks in modules stand aside
            head.sample_actions(ctx, mask)  # the data check ran before capture, not inside
        assert not is_capturing()


@pytest.mark.parametrize("name", ["flow_matching", "diffusion"])
def test_noise_argument_equals_the_generator_draw(name: str) -> None:
    # GraphedHead feeds the initial noise as an input drawn from the same CPU generator
    head = _head(name)
    ctx, mask = torch.randn(2, 5, D), torch.ones(2, 5, dtype=torch.bool)
    noise = torch.randn((2, H, A), generator=torch.Generator().manual_seed(3))
    a = head.sample_actions(ctx, mask, generator=torch.Generator().manual_seed(3))
    b = head.sample_actions(ctx, mask, noise=noise)
    torch.testing.assert_close(a, b)


class _ReplayByRerun:
    """Stands in for a CUDA graph off the GPU: replay re-runs the recorded call into the same
    output buffer, so the buffer/noise/keying logic around it is exercised on the CPU."""

    def __init__(self, fn, out: torch.Tensor) -> None:
        self.fn, self.out = fn, out

    def replay(self) -> None:
        self.out.copy_(self.fn())


@pytest.mark.parametrize("name", ["flow_matching", "act"])
def test_replay_logic_with_an_emulated_graph(name: str, monkeypatch) -> None:
    def record(self, fn, device):
        out = fn()
        return _ReplayByRerun(fn, out), out

    monkeypatch.setattr(GraphedHead, "_record", record)
    head = _head(name)
    graphed = GraphedHead(head)
    graphed._any_device = True
    for B, N, seed in ((1, 5, 0), (1, 5, 1), (2, 6, 2)):
        ctx, mask = torch.randn(B, N, D), torch.ones(B, N, dtype=torch.bool)
        with torch.no_grad():
            eager = head.sample_actions(ctx, mask, generator=torch.Generator().manual_seed(seed))
            replay = graphed(ctx, mask, torch.Generator().manual_seed(seed))
        torch.testing.assert_close(replay, eager, rtol=1e-5, atol=1e-5)
    assert graphed.captures == 2  # (1, 5) recorded once, replayed with new inputs and noise
    head._apply(lambda t: t.clone())  # new weight storage (as .to(other device)): re-record
    ctx, mask = torch.randn(1, 5, D), torch.ones(1, 5, dtype=torch.bool)
    with torch.no_grad():
        graphed(ctx, mask, torch.Generator().manual_seed(0))
    assert graphed.captures == 3


def test_policy_refuses_cuda_graphs_off_the_gpu(tmp_path) -> None:
    from vlastack.policy import Policy

    p = Policy.__new__(Policy)
    p.device = torch.device("cpu")
    with pytest.raises(ConfigError, match="need a CUDA device"):
        p.enable_cuda_graphs()


@NEEDS_CUDA
@pytest.mark.parametrize("name", sorted(CAPTURABLE - {"mlp"}))
def test_graph_replay_equals_eager_on_gpu(name: str) -> None:
    torch.manual_seed(0)
    head = _head(name, "cuda")
    graphed = GraphedHead(head)
    for B, N in ((1, 5), (1, 5), (3, 7)):  # second call replays, third captures a new shape
        ctx = torch.randn(B, N, D, device="cuda")
        mask = torch.ones(B, N, dtype=torch.bool, device="cuda")
        mask[0, -1] = False
        with torch.inference_mode():
            eager = head.sample_actions(ctx, mask, generator=torch.Generator().manual_seed(B))
            replay = graphed(ctx, mask, torch.Generator().manual_seed(B))
        torch.testing.assert_close(replay, eager, rtol=1e-4, atol=1e-4)
    assert graphed.captures == 2
    with torch.no_grad():  # an in-place weight update is seen by the replay
        for p in head.parameters():
            p.mul_(0.5)
        ctx = torch.randn(1, 5, D, device="cuda")
        mask = torch.ones(1, 5, dtype=torch.bool, device="cuda")
        eager = head.sample_actions(ctx, mask, generator=torch.Generator().manual_seed(9))
        replay = graphed(ctx, mask, torch.Generator().manual_seed(9))
    torch.testing.assert_close(replay, eager, rtol=1e-4, atol=1e-4)
    assert graphed.captures == 2


def test_vla_samples_through_its_head_runner_slot(monkeypatch) -> None:
    """The cuda_graphs runner (what ``Policy.enable_cuda_graphs`` plugs in) fills the public
    ``head_runner`` slot and ``sample_actions`` goes through it: same chunk as eager."""
    from _export_tiny import tiny_config
    from vlastack.models.vla import build_vla

    def record(self, fn, device):
        out = fn()
        return _ReplayByRerun(fn, out), out

    monkeypatch.setattr(GraphedHead, "_record", record)
    torch.manual_seed(0)
    model = build_vla(tiny_config("flow_matching")).eval()
    batch = {
        "observation.images.front": torch.rand(1, 1, 3, 16, 16),
        "observation.images.wrist": torch.rand(1, 1, 3, 16, 16),
        "observation.state": torch.randn(1, 1, 4),
        "task": ["push"],
    }
    eager = model.sample_actions(batch, generator=torch.Generator().manual_seed(1))
    assert model.head_runner is None
    model.head_runner = CudaGraphsRunner().head(model.head)
    assert isinstance(model.head_runner, GraphedHead)
    model.head_runner._any_device = True
    for _ in range(2):  # captured once, then replayed
        replay = model.sample_actions(batch, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(replay, eager, rtol=1e-5, atol=1e-5)
    assert model.head_runner.captures == 1
