"""Action runtime: queue, ACT ensembling, async merge alignment, RTC guidance, delay harness."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from vlastack.errors import ConfigError
from vlastack.functional.rtc import guidance_weight, prefix_weights
from vlastack.serving.runtime import (
    AGGREGATES,
    ActionQueue,
    TemporalEnsembler,
    guided_flow_sample,
    make_runtime,
)
from vlastack.serving.simulate import simulate
from vlastack.serving.toy import FlowTrackingPolicy, GaussianVelocity, smooth_cov


class TickPolicy:
    """chunk[i] = obs["tick"] + i in every dim: a correctly aligned runtime outputs tick j at j."""

    def __init__(self, horizon=8, action_dim=2, delay_s=0.0):
        self.horizon, self.action_dim, self.delay_s = horizon, action_dim, delay_s
        self.calls: list[int] = []
        self.guided: list[tuple[int, np.ndarray, int]] = []
        self.lock = threading.Lock()

    def reset(self):
        self.calls.clear()

    def infer(self, obs):
        with self.lock:
            self.calls.append(int(obs["tick"]))
        if self.delay_s:
            time.sleep(self.delay_s)
        chunk = obs["tick"] + np.arange(self.horizon, dtype=np.float64)
        return {"actions": np.repeat(chunk[:, None], self.action_dim, axis=1)}

    def infer_guided(self, obs, prev_actions, inference_delay):
        self.guided.append((int(obs["tick"]), np.array(prev_actions), inference_delay))
        return self.infer(obs)


def test_action_queue_executes_horizon():
    q = ActionQueue(execute_horizon=3)
    q.push(np.arange(10)[:, None])
    assert [int(q.pop()[0]) for _ in range(3)] == [0, 1, 2] and len(q) == 0
    with pytest.raises(ConfigError):
        ActionQueue(0)


def test_temporal_ensembler_matches_act_formula():
    rng = np.random.default_rng(0)
    H, A, T, m = 5, 3, 12, 0.3
    chunks = rng.normal(size=(T, H, A))
    ens = TemporalEnsembler(m)
    for t in range(T):
        got = ens.update(chunks[t])
        preds = [chunks[s][t - s] for s in range(max(0, t - H + 1), t + 1)]  # oldest first
        w = np.exp(-m * np.arange(len(preds)))
        np.testing.assert_allclose(got, (w / w.sum()) @ np.stack(preds))
    assert len(ens._chunks) == H  # expired chunks are dropped


def test_prefix_weights_and_guidance_weight():
    w = prefix_weights(3, 9, 12, "linear")
    np.testing.assert_allclose(w[:3], 1.0)
    np.testing.assert_allclose(w[9:], 0.0)
    np.testing.assert_allclose(w[3:9], (9 - np.arange(3, 9)) / 7)  # linear decay to 1/(end-start+1)
    e = prefix_weights(3, 9, 12, "exp")
    assert np.all(e[3:9] < w[3:9]) and np.all(np.diff(e) <= 0) and e[2] == 1.0
    np.testing.assert_allclose(prefix_weights(3, 9, 12, "zeros"), (np.arange(12) < 3).astype(float))
    assert guidance_weight(1.0, 5.0) == 5.0  # t=1 (pure noise): c = inf, clipped to beta
    assert guidance_weight(0.5, 5.0) == pytest.approx(2.0)  # tau=0.5: c=1, 1/r^2=2
    assert guidance_weight(0.1, 5.0) == 5.0
    with pytest.raises(ConfigError):
        prefix_weights(1, 2, 3, "cubic")


def test_unguided_flow_sampling_uses_openpi_convention():
    # Euler from t=1 (noise) to t=0 with the exact Gaussian velocity lands on N(mu, cov).
    H, A = 8, 1
    mu = np.linspace(-1, 1, H)[:, None] * 3
    cov = smooth_cov(H, 0.5, 2.0)
    noise = torch.randn(4000, H, A, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x = guided_flow_sample(
        GaussianVelocity(mu, cov), noise, torch.zeros(0, A), 0, num_steps=40, max_guidance_weight=0
    )
    np.testing.assert_allclose(x.mean(0).numpy(), mu, atol=0.05)
    np.testing.assert_allclose(np.cov(x[:, :, 0].numpy().T), cov[:, :], atol=0.05)


def test_guided_sampling_pulls_prefix_toward_committed_actions():
    H, A, d, L = 16, 2, 4, 10
    model = GaussianVelocity(np.zeros((H, A)), smooth_cov(H, 1.0, 3.0))
    noise = torch.randn(64, H, A, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = torch.full((L, A), 2.0, dtype=torch.float64)
    plain = guided_flow_sample(model, noise, y, d, max_guidance_weight=0.0)
    errs = {}
    for beta in (1.0, 5.0, 20.0):
        x = guided_flow_sample(model, noise, y, d, max_guidance_weight=beta)
        errs[beta] = (x[:, :d] - 2).abs().mean().item()
        # positions past the previous chunk (weight 0, weakly correlated) barely move
        assert (x[:, 14:] - plain[:, 14:]).abs().mean() < 0.15
    plain_err = (plain[:, :d] - 2).abs().mean().item()
    assert plain_err > 1.5
    assert errs[1.0] < 0.25 * plain_err and errs[5.0] < 0.05 * plain_err
    assert errs[20.0] <= errs[5.0] <= errs[1.0]  # more guidance, closer prefix


def test_guided_sampling_through_a_torch_module():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))

    class Head:
        def velocity(self, x_t, t):
            tt = t.view(-1, 1, 1).expand(*x_t.shape[:2], 1)
            return net(torch.cat([x_t, tt], dim=-1))

    noise = torch.randn(3, 6, 2)
    with torch.no_grad():  # guidance must still get its gradient
        x = guided_flow_sample(
            Head(), noise, torch.ones(4, 2), 2, num_steps=5, max_guidance_weight=5.0
        )
    ref = noise.clone()
    with torch.no_grad():
        for k in range(5):
            ref = ref - 0.2 * Head().velocity(ref, torch.full((3,), 1 - 0.2 * k))
        plain = guided_flow_sample(
            Head(), noise, torch.ones(4, 2), 2, num_steps=5, max_guidance_weight=0.0
        )
    torch.testing.assert_close(plain, ref)
    assert (x[:, :2] - 1).abs().mean() < (ref[:, :2] - 1).abs().mean()


def test_sync_and_ensemble_strategies():
    policy = TickPolicy(horizon=6)
    rt = make_runtime("sync", policy, execute_horizon=4)
    out = [rt.step({"tick": np.float64(k)})[0] for k in range(10)]
    assert policy.calls == [0, 4, 8]
    assert out == list(range(10))
    ens = make_runtime("ensemble", TickPolicy(horizon=6), m=0.01)
    out = [ens.step({"tick": np.float64(k)})[0] for k in range(10)]
    np.testing.assert_allclose(out, np.arange(10))  # all predictions for tick j equal j


@pytest.mark.parametrize("aggregate", sorted(AGGREGATES))
def test_async_alignment_with_delay(aggregate):
    # Inference takes ~3 ticks; the runtime must drop the stale actions and align the rest.
    policy = TickPolicy(horizon=10, delay_s=0.03)
    with make_runtime("async", policy, threshold=0.5, aggregate=aggregate) as rt:
        out = []
        for k in range(40):
            out.append(rt.step({"tick": np.float64(k)})[0])
            time.sleep(0.01)
        np.testing.assert_allclose(out, np.arange(40), atol=1e-9)
        assert len(policy.calls) < 15 and policy.calls[0] == 0
        assert max(rt.delays_ticks) >= 2  # requests really overlapped execution


def test_async_threshold_controls_request_rate():
    counts = {}
    for g in (0.0, 0.5, 1.0):
        policy = TickPolicy(horizon=10)
        with make_runtime("async", policy, threshold=g) as rt:
            for k in range(30):
                rt.step({"tick": np.float64(k)})
                time.sleep(0.003)
        counts[g] = len(policy.calls)
    assert counts[0.0] <= 4 and counts[0.0] < counts[0.5] < counts[1.0]


def test_rtc_passes_committed_actions_and_delay():
    policy = TickPolicy(horizon=10, delay_s=0.03)
    with make_runtime("rtc", policy, threshold=0.5, initial_delay_ticks=1) as rt:
        out = []
        for k in range(30):
            out.append(rt.step({"tick": np.float64(k)})[0])
            time.sleep(0.01)
    np.testing.assert_allclose(out, np.arange(30), atol=1e-9)
    assert len(policy.guided) >= 2
    for tick, prev, delay in policy.guided:
        np.testing.assert_allclose(prev[:, 0], tick + np.arange(len(prev)))  # aligned to obs tick
        assert 0 <= delay <= len(prev)
    assert policy.guided[-1][2] >= 2  # delay estimate learned from measured delays


def test_make_runtime_errors():
    with pytest.raises(ConfigError, match="unknown runtime strategy"):
        make_runtime("fancy", TickPolicy())
    with pytest.raises(ConfigError, match="infer_guided"):
        make_runtime("rtc", type("P", (), {"infer": lambda s, o: {}, "reset": lambda s: None})())
    with pytest.raises(ConfigError, match="aggregate"):
        make_runtime("async", TickPolicy(), aggregate="median")


def test_simulate_harness_counts_missed_ticks():
    hz, H = 50.0, 10

    def target(t):
        return np.array([np.sin(2 * np.pi * 0.5 * t), np.cos(2 * np.pi * 0.5 * t)])

    results = {}
    for name, kw in (
        ("sync", {"execute_horizon": 5}),
        ("async", {"threshold": 0.6}),
        ("rtc", {"threshold": 0.6}),
    ):
        policy = FlowTrackingPolicy(target, hz, H, sigma=0.02, delay_s=0.06, num_steps=5)
        with make_runtime(name, policy, **kw) as rt:
            results[name] = simulate(rt, target, hz, num_ticks=40, warmup_ticks=1)
    # sync waits ~3 ticks for every 5 executed; async/rtc overlap inference with execution
    assert results["sync"].missed_ticks >= 12
    assert results["async"].missed_ticks <= results["sync"].missed_ticks // 2
    assert results["rtc"].missed_ticks <= results["sync"].missed_ticks // 2
    for r in results.values():
        assert np.isfinite(r.tracking_rmse) and r.tracking_rmse < 0.5


def test_simulate_virtual_time_is_exact_and_rtc_is_smoother():
    from vlastack.serving.simulate import SimClock, SimExecutor

    hz, H = 20.0, 20

    def target(t):
        return np.array([np.sin(np.pi * 0.5 * t), 0.5 * np.sin(np.pi * t)])

    res = {}
    for name, kw in (
        ("sync", {"execute_horizon": 10}),
        ("async", {"threshold": 0.5, "aggregate": "latest_only", "control_hz": hz}),
        ("rtc", {"threshold": 0.5, "control_hz": hz}),
    ):
        clock = SimClock()
        policy = FlowTrackingPolicy(target, hz, H, sigma=0.1, seed=0)
        with make_runtime(name, policy, executor=SimExecutor(clock, 0.2), clock=clock, **kw) as rt:
            res[name] = simulate(rt, target, hz, num_ticks=100, warmup_ticks=1, clock=clock)
    # 200 ms at 20 Hz: each sync chunk after the first leaves 3 ticks without a command
    assert res["sync"].missed_ticks == 3 * (res["sync"].inferences - 1)
    assert res["async"].missed_ticks == 0 and res["rtc"].missed_ticks == 0
    assert res["rtc"].boundary_jump < 0.8 * res["async"].boundary_jump
    assert res["rtc"].mean_sq_jerk < res["async"].mean_sq_jerk
