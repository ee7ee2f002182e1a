"""Real-time chunking with a real ``Policy``: ``infer_guided`` on a tiny flow-matching VLA, the
runtime's ``rtc`` strategy driving it in virtual time, and the clear error for other heads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _export_tiny import tiny_config, tiny_obs, tiny_stats
from vlastack.data.normalization import Normalizer
from vlastack.errors import ConfigError
from vlastack.models.vla import build_vla
from vlastack.policy import ObservationError, Policy
from vlastack.serving.runtime import make_runtime
from vlastack.serving.simulate import SimClock, SimExecutor

HORIZON = 8


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny ops: a second intra-op thread only adds contention (10x slower on a loaded 2-core
    machine); restore the setting for the other test modules."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_policy(head: str = "flow_matching", seed: int = 0) -> Policy:
    torch.manual_seed(seed)
    kwargs = {}
    if head == "flow_matching":
        kwargs["head_kwargs"] = {"width": 32, "depth": 2, "num_heads": 2, "num_steps": 10}
    cfg = tiny_config(head, action_horizon=HORIZON, **kwargs)
    norm = Normalizer(tiny_stats(4), {"observation.state": "mean_std", "action": "mean_std"})
    return Policy(
        build_vla(cfg),
        norm,
        cameras=list(cfg.cameras),
        image_size=cfg.image_size,
        obs_horizon=cfg.obs_horizon,
        action_horizon=cfg.action_horizon,
        state_dim=cfg.state_dim,
        action_dim=cfg.action_dim,
        seed=seed,
    )


def test_guided_chunks_follow_the_committed_prefix():
    policy = tiny_policy()
    obs = tiny_obs(1)
    std = np.asarray(tiny_stats(4)["action"]["std"])
    delay = 3
    guided_err, free_err, tail_change = [], [], []
    for k in range(3):
        # The committed actions: another sample of the same policy (in distribution, but a
        # different draw from the one the unguided call below makes).
        policy.seed = 100 + k
        policy.reset()
        prev = policy.infer(tiny_obs(1))["actions"][: HORIZON - 2]
        policy.seed = k
        policy.reset()
        free = policy.infer(obs)["actions"]
        policy.reset()
        guided = policy.infer_guided(obs, prev, delay)["actions"]
        assert guided.shape == (HORIZON, 4) and guided.dtype == np.float32
        # error on the frozen prefix in normalized units
        guided_err.append(np.abs((guided[:delay] - prev[:delay]) / std).mean())
        free_err.append(np.abs((free[:delay] - prev[:delay]) / std).mean())
        tail_change.append(np.abs((guided[-2:] - free[-2:]) / std).mean())
    assert np.mean(guided_err) < 0.25 * np.mean(free_err), (guided_err, free_err)
    # beyond the previous chunk (weight 0) the chunk stays the policy's own, nearly unchanged
    assert np.mean(tail_change) < np.mean(free_err)


def test_zero_guidance_equals_infer():
    """Same seed, guidance weight 0: the guided sampler is plain Euler sampling, so the two paths
    (normalization, prefix, noise draw, unnormalization) must agree."""
    policy = tiny_policy()
    obs = tiny_obs(2)
    policy.reset()
    plain = policy.infer(obs)["actions"]
    policy.reset()
    prev = np.zeros((HORIZON, 4), np.float32)
    zero = policy.infer_guided(obs, prev, 2, max_guidance_weight=0.0)["actions"]
    np.testing.assert_allclose(zero, plain, atol=1e-5)
    # an empty prefix means no guidance at all
    policy.reset()
    empty = policy.infer_guided(obs, np.zeros((0, 4), np.float32), 0)["actions"]
    np.testing.assert_allclose(empty, plain, atol=1e-5)


def test_prev_actions_shape_is_checked():
    policy = tiny_policy()
    with pytest.raises(ObservationError, match=r"\(L, 4\)"):
        policy.infer_guided(tiny_obs(0), np.zeros((3, 2)), 1)


def test_non_flow_head_gives_clear_error():
    policy = tiny_policy("l1")
    assert not policy.supports_guided_sampling
    with pytest.raises(ConfigError, match="flow-matching"):
        policy.infer_guided(tiny_obs(0), np.zeros((4, 4)), 1)
    with pytest.raises(ConfigError, match="'async'"):
        make_runtime("rtc", policy)
    # the other strategies still take it
    make_runtime("async", policy).close()


def test_rtc_runtime_drives_a_real_policy_in_virtual_time():
    policy = tiny_policy()
    calls: list[tuple[int, int]] = []
    guided = policy.infer_guided

    def spy(obs, prev_actions, inference_delay, **kw):
        calls.append((len(prev_actions), inference_delay))
        return guided(obs, prev_actions, inference_delay, **kw)

    policy.infer_guided = spy  # type: ignore[method-assign]
    hz, delay_s = 20.0, 0.1  # two control ticks of inference delay
    clock = SimClock()
    rt = make_runtime(
        "rtc",
        policy,
        threshold=0.5,
        control_hz=hz,
        executor=SimExecutor(clock, delay_s),
        clock=clock,
    )
    rt.reset()
    actions = []
    for i in range(16):
        actions.append(rt.step(tiny_obs(i)))
        clock.sleep(1.0 / hz)
    assert all(a.shape == (4,) and np.all(np.isfinite(a)) for a in actions)
    assert len(calls) >= 3 and rt.num_inferences == len(calls) + 1  # first chunk is unguided
    # The first guided call has no measured delay yet (d=0); later ones pass the measured delay:
    # 0.1 s = 2 ticks, or 3 when float rounding of the summed sleeps puts the arrival one tick late.
    assert all(0 <= d <= length for length, d in calls)
    assert all(d in (2, 3) for _, d in calls[1:])
