"""System 2 / System 1 (``models/hierarchy.py``, ``serving/hierarchy.py``, recipe ``hierarchy``):
the model's two levels, the runtime's two rates on a fake clock (the high level runs exactly at
its rate), the server's per-client schedule, and a real tiny hierarchical ``Policy`` through them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _export_tiny import tiny_config, tiny_obs, tiny_stats
from vlastack.data.normalization import Normalizer
from vlastack.errors import ConfigError
from vlastack.models import hierarchy as model_hierarchy
from vlastack.models.vla import VLAConfig, build_vla
from vlastack.policy import Policy
from vlastack.serving import hierarchy as serving_hierarchy
from vlastack.serving.hierarchy import (
    SUBTASK_KEY,
    HierarchicalRuntime,
    HighLevelSchedule,
    TwoRatePolicy,
)


@pytest.fixture(autouse=True)
def one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class FakeHierarchical:
    """Records every call: which tick's observation reached each level, with which subtask."""

    supports_hierarchy = True
    metadata = {"action_horizon": 4}

    def __init__(self) -> None:
        self.high_calls: list[int] = []
        self.low_calls: list[tuple[int, str]] = []

    def infer_high_level(self, obs, session=None):
        self.high_calls.append(int(obs["tick"]))
        return {SUBTASK_KEY: f"subtask@{obs['tick']}"}

    def infer(self, obs, session=None):
        self.low_calls.append((int(obs["tick"]), obs[SUBTASK_KEY]))
        return {"actions": np.full((4, 2), float(obs["tick"]))}

    def reset(self) -> None:
        pass


def test_the_subtask_key_is_one_name():
    assert serving_hierarchy.SUBTASK_KEY == model_hierarchy.SUBTASK_KEY


def test_schedule_runs_on_a_fixed_grid_and_skips_missed_periods():
    s = HighLevelSchedule(20)
    assert [t for t in range(61) if s.due(t)] == [0, 20, 40, 60]
    s = HighLevelSchedule(20)
    # a stall from tick 5 to tick 67: one run at 67 (not three to catch up), then 80, 100
    assert [t for t in [0, 5, 67, 68, 79, 80, 99, 100] if s.due(t)] == [0, 67, 80, 100]
    s = HighLevelSchedule(20 / 3)  # a period that is not a whole number of ticks
    assert [t for t in range(21) if s.due(t)] == [0, 7, 14, 20]


def test_runtime_calls_the_high_level_exactly_at_its_rate_in_ticks():
    policy = FakeHierarchical()
    rt = HierarchicalRuntime(policy, "sync", high_level_hz=1.0, control_hz=20.0, execute_horizon=1)
    for tick in range(60):
        rt.step({"tick": tick})
    assert policy.high_calls == [0, 20, 40] == rt.high_level_ticks
    # the low level ran every tick (execute_horizon=1) on the latest subtask
    assert [t for t, _ in policy.low_calls] == list(range(60))
    assert all(s == f"subtask@{20 * (t // 20)}" for t, s in policy.low_calls)
    rt.reset()
    rt.step({"tick": 0})
    assert rt.high_level_ticks == [0]


def test_runtime_on_a_fake_clock_counts_wall_clock_ticks():
    policy, clock = FakeHierarchical(), FakeClock()
    rt = HierarchicalRuntime(
        policy, "sync", high_level_hz=2.0, control_hz=20.0, clock=clock, execute_horizon=1
    )
    ticks = list(range(25)) + list(range(33, 45))  # the loop stalls 0.4 s after tick 24
    for tick in ticks:
        clock.t = 100.0 + tick / 20.0
        rt.step({"tick": tick})
    # every 10 ticks (0.5 s); the stall crosses tick 30, so the high level runs at tick 33
    assert rt.high_level_ticks == policy.high_calls == [0, 10, 20, 33, 40]


def test_runtime_with_chunks_sees_the_subtask_of_its_request_tick():
    policy = FakeHierarchical()
    rt = HierarchicalRuntime(policy, "sync", high_level_hz=1.0, control_hz=10.0, execute_horizon=4)
    actions = [rt.step({"tick": t}) for t in range(24)]
    assert policy.high_calls == [0, 10, 20]
    assert [t for t, _ in policy.low_calls] == [0, 4, 8, 12, 16, 20]
    assert [s for _, s in policy.low_calls] == ["subtask@0"] * 3 + ["subtask@10"] * 2 + [
        "subtask@20"
    ]
    assert actions[5][0] == 4.0  # the chunk requested at tick 4 executes at ticks 4..7


def test_rates_and_policy_are_checked():
    with pytest.raises(ConfigError, match="slow one"):
        HierarchicalRuntime(FakeHierarchical(), high_level_hz=30.0, control_hz=20.0)
    with pytest.raises(ConfigError, match="high-level-hz must be > 0"):
        TwoRatePolicy(FakeHierarchical(), 0.0)

    class Flat(FakeHierarchical):
        supports_hierarchy = False

    with pytest.raises(ConfigError, match="hierarchy=True"):
        HierarchicalRuntime(Flat(), high_level_hz=1.0, control_hz=20.0)


def test_server_policy_runs_the_high_level_per_client_at_its_rate():
    inner, clock = FakeHierarchical(), FakeClock()
    served = TwoRatePolicy(inner, high_level_hz=1.0, control_hz=20.0, clock=clock)
    assert served.metadata["high_level_hz"] == 1.0 and served.metadata["action_horizon"] == 4
    a, b = served.new_session(), served.new_session()
    ran = []
    for k in range(12):  # client a asks every 0.25 s (a chunk of 5 at 20 Hz)
        clock.t = 100.0 + 0.25 * k
        out = a.infer({"tick": k})
        ran.append(out["high_level_ran"])
        assert out[SUBTASK_KEY] == f"subtask@{4 * (k // 4)}" and out["actions"].shape == (4, 2)
    assert ran == [True, False, False, False] * 3
    clock.t = 100.6  # client b starts later: its own schedule, its first request runs it
    assert b.infer({"tick": 99})["high_level_ran"] and a.high_level_calls == 3


def tiny_hierarchical_policy(seed: int = 0) -> Policy:
    torch.manual_seed(seed)
    cfg = tiny_config(
        "flow_matching", hierarchy=True, trunk_layers=1, gripper_index=3, action_horizon=4
    )
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


def test_model_levels_high_level_labels_and_low_level_reads_the_subtask():
    cfg = tiny_config("flow_matching", hierarchy=True, trunk_layers=1, gripper_index=3)
    model = build_vla(cfg)
    assert model.supports_hierarchy and "close gripper" in model.hierarchy.vocab
    g = torch.Generator().manual_seed(0)
    batch = {
        "observation.images.front": torch.rand(2, 1, 3, 16, 16, generator=g),
        "observation.images.wrist": torch.rand(2, 1, 3, 16, 16, generator=g),
        "observation.state": torch.randn(2, 1, 4, generator=g),
        "action": torch.zeros(2, 4, 4),
    }
    batch["action"][0, :, 0] = 1.0  # "move arm forward"
    batch["action"][1, :, 3] = torch.linspace(-1, 1, 4)  # the gripper closes
    labels = model.hierarchy.labels(batch["action"], torch.zeros(2, 4, dtype=torch.bool))
    assert [model.hierarchy.vocab[i] for i in labels] == ["move arm forward", "close gripper"]
    loss = model.loss(batch)
    loss.mean().backward()
    # System 2's classifier trains, and so does the backbone (trunk) through it
    assert model.hierarchy.classifier.weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.trunk.parameters())
    model.eval()
    chunks = {
        s: model.sample_actions({**batch, SUBTASK_KEY: [s, s]}, torch.Generator().manual_seed(0))
        for s in ("stop", "close gripper")
    }
    assert not torch.allclose(chunks["stop"], chunks["close gripper"])
    # without a subtask the model runs System 2 itself: the same as giving its prediction
    predicted = model.predict_subtasks(batch)
    torch.testing.assert_close(
        model.sample_actions(batch, torch.Generator().manual_seed(0)),
        model.sample_actions({**batch, SUBTASK_KEY: predicted}, torch.Generator().manual_seed(0)),
    )
    with pytest.raises(ConfigError, match="its subtasks are"):
        model.sample_actions({**batch, SUBTASK_KEY: ["fly", "fly"]})


def test_hierarchy_refuses_the_options_it_cannot_combine_with():
    with pytest.raises(ConfigError, match="hierarchy=True"):
        VLAConfig(hierarchy=True, motion_hierarchy=True).validate()


def test_real_policy_at_two_rates_in_the_runtime_and_the_server_wrapper():
    policy = tiny_hierarchical_policy()
    assert policy.supports_hierarchy
    obs = tiny_obs(1)
    high = policy.infer_high_level(obs)[SUBTASK_KEY]
    assert high in policy.model.hierarchy.vocab
    assert len(policy._history) == 0  # the high level reads the history, does not advance it
    out = policy.infer(obs)
    assert out[SUBTASK_KEY] == high and out["actions"].shape == (4, 4)
    policy.reset()
    given = policy.infer({**obs, SUBTASK_KEY: "open gripper"})
    assert given[SUBTASK_KEY] == "open gripper"
    assert not np.allclose(given["actions"], out["actions"])

    calls = {"high": 0}
    real_high = policy.infer_high_level

    def counted(o, **kw):
        calls["high"] += 1
        return real_high(o, **kw)

    policy.infer_high_level = counted  # type: ignore[method-assign]
    rt = HierarchicalRuntime(policy, "sync", high_level_hz=2.0, control_hz=10.0, execute_horizon=2)
    rt.reset()
    for t in range(12):
        a = rt.step(tiny_obs(t))
        assert a.shape == (4,) and np.isfinite(a).all()
    assert calls["high"] == 3 and rt.high_level_ticks == [0, 5, 10]
    assert rt.subtask in policy.model.hierarchy.vocab

    clock = FakeClock()
    served = TwoRatePolicy(policy, high_level_hz=1.0, clock=clock)
    session = served.new_session()
    first = session.infer(obs)
    clock.t += 0.5
    second = session.infer(obs)
    assert first["high_level_ran"] and not second["high_level_ran"]
    assert second[SUBTASK_KEY] == first[SUBTASK_KEY]
