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


def _reference_actions(
    frames: list[dict], obs_horizon: int = 2, head: str = "l1"
) -> list[np.ndarray]:
    """What one client alone gets for ``frames``: a fresh policy fed only those frames."""
    local = tiny_policy(obs_horizon=obs_horizon, head=head)
    return [local.infer(f)["actions"] for f in frames]


@pytest.mark.parametrize("batch_window_ms", [0.0, 30.0])
def test_each_connection_has_its_own_observation_history(batch_window_ms):
    """obs_horizon=2: client B connecting and sending its own frame between two of client A's
    frames must change nothing in A's actions (today B's connect resets A's history and B's frame
    becomes A's previous frame); batching keeps each client's own history too."""
    a_frames = [tiny_obs(10 + i) for i in range(3)]
    expected = _reference_actions(a_frames)
    # the check has teeth: with B's frame as A's previous one, A's actions differ
    mixed = tiny_policy(obs_horizon=2)
    mixed.infer(tiny_obs(99))
    assert not np.allclose(mixed.infer(a_frames[1])["actions"], expected[1], atol=1e-4)
    with ServerThread(tiny_policy(obs_horizon=2), batch_window_ms=batch_window_ms) as srv:
        a = _raw(srv.url)
        a.send(packb(a_frames[0]))
        got = [unpackb(a.recv(timeout=10))["actions"]]
        b = _raw(srv.url)  # a new connection must not reset A's history
        b.send(packb(tiny_obs(99)))
        b_actions = unpackb(b.recv(timeout=10))["actions"]
        for frame in a_frames[1:]:
            a.send(packb(frame))
            got.append(unpackb(a.recv(timeout=10))["actions"])
        a.close()
        b.close()
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, atol=1e-5)
    np.testing.assert_allclose(b_actions, _reference_actions([tiny_obs(99)])[0], atol=1e-5)


@pytest.mark.parametrize("head", ["l1", "flow_matching", "diffusion"])
def test_batched_clients_keep_their_own_histories(head):
    """Several clients whose requests share one infer_batch call each get the actions their own
    history (and, for a sampling head, their own session's noise) gives, and the calls were
    really batched."""
    import threading

    policy = tiny_policy(obs_horizon=2, head=head)
    calls: list[int] = []
    inner = policy.infer_batch

    def counting(observations, **kw):
        calls.append(len(observations))
        return inner(observations, **kw)

    policy.infer_batch = counting  # type: ignore[method-assign]
    frames = {k: [tiny_obs(100 * k + i) for i in range(3)] for k in range(4)}
    got: dict[int, list[np.ndarray]] = {}
    barrier = threading.Barrier(4)

    def client(k: int) -> None:
        ws = _raw(srv.url)
        out = []
        for f in frames[k]:
            barrier.wait(10)
            ws.send(packb(f))
            out.append(unpackb(ws.recv(timeout=20))["actions"])
        got[k] = out
        ws.close()

    with ServerThread(policy, batch_window_ms=50) as srv:
        threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert max(calls) > 1, calls
    for k in range(4):
        for g, e in zip(got[k], _reference_actions(frames[k], head=head)):
            np.testing.assert_allclose(g, e, atol=1e-5)


def test_language_encoder_cache_is_a_bounded_lru():
    from vlastack.models.language.minilm import MiniLMEncoder

    enc = MiniLMEncoder(cache_max_entries=4)
    first = enc.encode(["pick up the red block"]).clone()
    for i in range(10):
        enc.encode([f"instruction number {i}", "pick up the red block"])  # keep it recently used
    assert enc.cache_size == 4
    assert "pick up the red block" in enc._cache  # the one used every time stayed
    assert "instruction number 0" not in enc._cache  # the oldest were evicted
    torch.testing.assert_close(enc.encode(["pick up the red block"]), first)


def test_prompt_length_is_capped_with_a_clear_error():
    policy = tiny_policy()
    assert policy.max_prompt_chars > 0
    long_prompt = "x" * (policy.max_prompt_chars + 1)
    with pytest.raises(ObservationError, match=r"'task'.*characters.*max_prompt_chars"):
        policy.infer({**tiny_obs(0), "task": long_prompt})
    policy.max_prompt_chars = 200_000  # configurable
    policy.infer({**tiny_obs(0), "task": long_prompt})
    with ServerThread(tiny_policy()) as srv:
        ws = _raw(srv.url)
        openpi_style = {k: v for k, v in tiny_obs(0).items() if k != "task"}
        ws.send(packb({**openpi_style, "prompt": "y" * 100_000}))
        reply = ws.recv(timeout=10)
        assert isinstance(reply, str) and reply.startswith("bad request:") and "task" in reply
        assert len(reply) < 450
        ws.send(packb(tiny_obs(0)))
        assert unpackb(ws.recv(timeout=10))["actions"].shape == (4, 4)
        ws.close()


def test_row_generators_draw_each_row_block_from_its_own_generator():
    from vlastack.functional.noise import RowGenerators, randn

    def gens():
        return [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)]

    got = randn((4, 3), RowGenerators(gens()), "cpu")  # 2 samples per row (repeat_interleave)
    a, b = gens()
    want = torch.cat([torch.randn((2, 3), generator=a), torch.randn((2, 3), generator=b)])
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    with pytest.raises(ValueError, match="cannot be split over 2"):
        randn((3, 3), RowGenerators(gens()), "cpu")
