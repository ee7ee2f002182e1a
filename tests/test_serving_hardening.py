"""Near-hardware hardening of the policy path (issue 27): non-finite observations and actions
never turn into a sent action, each server connection keeps its own observation history, and the
server's memory stays bounded however many distinct prompts clients send."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from websockets.sync.client import connect

from _export_tiny import tiny_config, tiny_obs, tiny_stats
from vlastack.data.normalization import Normalizer
from vlastack.models.vla import build_vla
from vlastack.policy import NonFiniteActionError, ObservationError, Policy
from vlastack.serving.protocol import packb, unpackb
from vlastack.serving.server import ServerThread
from vlastack.serving.toy import ToyPolicy, example_observation


@pytest.fixture(autouse=True)
def one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_policy(obs_horizon: int = 1, head: str = "l1", seed: int = 0) -> Policy:
    torch.manual_seed(seed)
    cfg = tiny_config(head, obs_horizon=obs_horizon)
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


def _raw(url: str):
    ws = connect(url, compression=None, max_size=None)
    unpackb(ws.recv(timeout=10))
    return ws


def _bad_observations() -> list[tuple[dict, str]]:
    good = tiny_obs(0)
    float_img = good["observation.images.front"].astype(np.float32) / 255.0
    nan_img = float_img.copy()
    nan_img[3, 4, 1] = np.nan
    inf_img = float_img.copy()
    inf_img[0, 0, 0] = np.inf
    return [
        ({**good, "observation.state": np.array([0, 0.6, np.nan, 0.5], np.float32)}, "state"),
        ({**good, "observation.state": np.array([0, np.inf, 0, 0.5], np.float64)}, "state"),
        ({**good, "observation.state": [0.0, -float("inf"), 0.0, 0.5]}, "state"),
        ({**good, "observation.images.front": nan_img}, "front"),
        ({**good, "observation.images.front": inf_img}, "front"),
    ]


def test_policy_infer_refuses_non_finite_observations():
    policy = tiny_policy()
    for obs, key in _bad_observations():
        with pytest.raises(ObservationError, match=rf"{key}.*(NaN|Inf|finite)"):
            policy.infer(obs)
        with pytest.raises(ObservationError, match=key):
            policy.infer_batch([tiny_obs(1), obs])
    assert np.isfinite(policy.infer(tiny_obs(0))["actions"]).all()


def test_policy_refuses_a_non_finite_action_from_the_model():
    policy = tiny_policy()
    with torch.no_grad():
        next(p for p in policy.model.parameters() if p.dim() > 1).fill_(float("nan"))
    with pytest.raises(NonFiniteActionError, match="non-finite"):
        policy.infer(tiny_obs(0))
    with pytest.raises(NonFiniteActionError):
        policy.infer_batch([tiny_obs(0)])


class NanActionPolicy(ToyPolicy):
    def infer(self, obs):
        out = super().infer(obs)
        if "poison" in obs:
            out["actions"][2, 1] = np.nan
        return out


@pytest.mark.parametrize("batch_window_ms", [0.0, 5.0])
def test_server_answers_non_finite_observations_with_an_error_naming_the_key(batch_window_ms):
    with ServerThread(tiny_policy(), batch_window_ms=batch_window_ms) as srv:
        ws = _raw(srv.url)
        for obs, key in _bad_observations():
            ws.send(packb(obs))
            reply = ws.recv(timeout=10)
            assert isinstance(reply, str) and reply.startswith("bad request:"), reply
            assert key in reply and ("NaN" in reply or "Inf" in reply), reply
            ws.send(packb(tiny_obs(1)))  # the connection stays usable
            actions = unpackb(ws.recv(timeout=10))["actions"]
            assert actions.shape == (4, 4) and np.isfinite(actions).all()
        ws.close()


def test_toy_schema_and_server_refuse_nan_and_never_send_a_nan_action():
    good = example_observation("libero")
    with ServerThread(NanActionPolicy("libero")) as srv:
        ws = _raw(srv.url)
        state = good["observation/state"].copy()
        state[2] = np.nan
        ws.send(packb({**good, "observation/state": state}))
        reply = ws.recv(timeout=10)
        assert isinstance(reply, str) and "observation/state" in reply and "NaN" in reply, reply
        ws.send(packb({**good, "poison": 1}))
        reply = ws.recv(timeout=10)
        assert isinstance(reply, str) and "non-finite" in reply, reply
        ws.send(packb(good))
        assert np.isfinite(unpackb(ws.recv(timeout=10))["actions"]).all()
        ws.close()
