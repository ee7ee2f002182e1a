"""Real-time chunking through ``vlastack serve``: the optional ``rtc/*`` fields of the openpi
observation (``serving.guidance``), with a tiny flow-matching checkpoint written in the test.

* The metadata frame advertises guidance (``"rtc"``) exactly when the policy can do it; a plain
  request still gets today's reply (same keys, same actions as in process).
* A guided request over the wire gives the in-process ``Policy.infer_guided`` chunk bit for bit
  (committed actions sent, or referenced by ``rtc/prev_chunk_start``; options passed through),
  and the ``rtc`` runtime driven in virtual time issues the same actions in process and through
  ``RemotePolicy``. Clients keep their own sessions (also on a batching server).
* Malformed guidance gets a text frame naming the field; the connection stays usable and no
  state was consumed. A policy without a flow head answers a guided request with an error frame.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _export_tiny import tiny_obs, write_tiny_checkpoint
from vlastack.policy import Policy

pytest.importorskip("websockets")

from vlastack.serving.client import PolicyClient, ServerError  # noqa: E402
from vlastack.serving.server import ServerThread  # noqa: E402

HORIZON = 8
SEED = 3


@pytest.fixture(autouse=True)
def one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def flow_ckpt(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("flow"), action_horizon=HORIZON)


@pytest.fixture(scope="module")
def l1_ckpt(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("l1"), head="l1", action_horizon=HORIZON)


def _policy(ckpt) -> Policy:
    return Policy.from_checkpoint(ckpt, seed=SEED)


def _in_process(ckpt, delay: int = 2, start: int = 3, **kw) -> tuple[np.ndarray, np.ndarray]:
    """A fresh policy: a plain chunk for obs 0, then a chunk for obs 1 guided by its rows
    ``start``.. (what a robot that executed ``start`` actions meanwhile has committed)."""
    policy = _policy(ckpt)
    first = policy.infer(tiny_obs(0))["actions"]
    second = policy.infer_guided(tiny_obs(1), first[start:], delay, **kw)["actions"]
    return first, second


def test_metadata_advertises_guidance_only_when_the_policy_has_it(flow_ckpt, l1_ckpt):
    from vlastack.serving.guidance import FIELDS

    with ServerThread(_policy(flow_ckpt)) as srv, PolicyClient("127.0.0.1", srv.port) as c:
        assert c.supports_guidance
        assert c.metadata["rtc"]["version"] == 1 and set(c.metadata["rtc"]["fields"]) == set(FIELDS)
    l1 = _policy(l1_ckpt)
    with ServerThread(l1) as srv, PolicyClient("127.0.0.1", srv.port) as c:
        assert not c.supports_guidance
        assert c.metadata == l1.metadata  # exactly today's metadata frame


def test_schedules_on_the_wire_are_the_samplers():
    from vlastack.functional.rtc import prefix_weights
    from vlastack.serving.guidance import SCHEDULES

    for name in SCHEDULES:
        assert prefix_weights(2, 6, HORIZON, name).shape == (HORIZON,)
    with pytest.raises(Exception, match="unknown RTC schedule"):
        prefix_weights(2, 6, HORIZON, "cosine")


def test_guided_over_the_wire_equals_in_process(flow_ckpt):
    first, second = _in_process(flow_ckpt)
    plain_second = _policy(flow_ckpt)
    plain_second.infer(tiny_obs(0))
    unguided = plain_second.infer(tiny_obs(1))["actions"]
    assert np.abs(second - unguided).max() > 1e-3  # guidance changed the chunk
    with ServerThread(_policy(flow_ckpt)) as srv:
        with PolicyClient("127.0.0.1", srv.port) as c:
            got0 = c.infer(tiny_obs(0))
            assert set(got0) == {"actions", "policy_timing", "server_timing"}  # plain reply
            np.testing.assert_array_equal(got0["actions"], first)
            got1 = c.infer_guided(tiny_obs(1), got0["actions"][3:], 2)
            np.testing.assert_array_equal(got1["actions"], second)
            assert got1["rtc"] == {"prefix_steps": HORIZON - 3, "inference_delay": 2}
        # the reference form: rows 3.. of the last chunk this connection received
        with PolicyClient("127.0.0.1", srv.port) as c:
            c.infer(tiny_obs(0))
            ref = c.infer_guided(tiny_obs(1), prev_chunk_start=3, inference_delay=2)
            np.testing.assert_array_equal(ref["actions"], second)
        # options pass through to infer_guided
        _, linear = _in_process(flow_ckpt, max_guidance_weight=2.0, schedule="linear")
        assert np.abs(linear - second).max() > 1e-4
        with PolicyClient("127.0.0.1", srv.port) as c:
            c.infer(tiny_obs(0))
            opt = c.infer_guided(
                tiny_obs(1),
                prev_chunk_start=3,
                inference_delay=2,
                max_guidance_weight=2.0,
                schedule="linear",
            )
            np.testing.assert_array_equal(opt["actions"], linear)
        assert srv.server.num_guided == 3


def test_rtc_runtime_in_process_and_remote_issue_the_same_actions(flow_ckpt):
    from vlastack.robot.sources import RemotePolicy
    from vlastack.serving.runtime import make_runtime
    from vlastack.serving.simulate import SimClock, SimExecutor

    def run(policy) -> tuple[np.ndarray, list[int]]:
        clock = SimClock()
        rt = make_runtime(
            "rtc",
            policy,
            threshold=0.5,
            initial_delay_ticks=1,
            control_hz=10.0,
            executor=SimExecutor(clock, 0.25),  # 2.5 ticks of virtual inference delay
            clock=clock,
        )
        actions = []
        for k in range(20):
            actions.append(rt.step(tiny_obs(k % 5)))
            clock.sleep(0.1)
        return np.stack(actions), list(rt.delays_ticks)

    local, local_delays = run(_policy(flow_ckpt))
    with ServerThread(_policy(flow_ckpt)) as srv:
        remote_policy = RemotePolicy("127.0.0.1", srv.port)
        remote_policy.connect()
        assert remote_policy.supports_guided_sampling
        remote, remote_delays = run(remote_policy)
        remote_policy.close()
        guided = srv.server.num_guided
    assert guided >= 3 and remote_delays == local_delays
    np.testing.assert_array_equal(remote, local)


def test_clients_are_independent(flow_ckpt):
    first, second = _in_process(flow_ckpt)
    with ServerThread(_policy(flow_ckpt)) as srv:
        a = PolicyClient("127.0.0.1", srv.port)
        b = PolicyClient("127.0.0.1", srv.port)
        a0 = a.infer(tiny_obs(0))["actions"]
        b0 = b.infer(tiny_obs(0))["actions"]
        b.infer(tiny_obs(4))  # b moves on; a's session must not notice
        b.infer_guided(tiny_obs(1), prev_chunk_start=3, inference_delay=2)
        a1 = a.infer_guided(tiny_obs(1), a0[3:], 2)["actions"]
        a.close(), b.close()
    np.testing.assert_array_equal(a0, first)
    np.testing.assert_array_equal(b0, first)
    np.testing.assert_array_equal(a1, second)


def test_guided_requests_bypass_batching(flow_ckpt):
    """On a batching server a guided request runs alone with its connection's session."""
    prev = _policy(flow_ckpt).infer(tiny_obs(3))["actions"][2:]
    local = _policy(flow_ckpt)
    expected = [local.infer_guided(tiny_obs(k), prev, 1)["actions"] for k in (1, 2)]
    with ServerThread(_policy(flow_ckpt), batch_window_ms=20.0) as srv:
        a = PolicyClient("127.0.0.1", srv.port)
        b = PolicyClient("127.0.0.1", srv.port)
        got = []
        for k in (1, 2):
            got.append(a.infer_guided(tiny_obs(k), prev, 1)["actions"])
            b.infer_guided(tiny_obs(4), prev, 3)
        a.close(), b.close()
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)


def _bad_fields(good_prev: np.ndarray) -> list[tuple[dict, str]]:
    nan = good_prev.copy()
    nan[1, 2] = np.nan
    inf = good_prev.copy()
    inf[0, 0] = np.inf
    d = {"rtc/inference_delay": 2}
    return [
        ({"rtc/prev_actions": good_prev[:, :3], **d}, r"'rtc/prev_actions' has shape \(5, 3\)"),
        ({"rtc/prev_actions": good_prev[0], **d}, r"'rtc/prev_actions' has shape \(4,\)"),
        ({"rtc/prev_actions": good_prev[None], **d}, "'rtc/prev_actions' has shape"),
        ({"rtc/prev_actions": nan, **d}, r"'rtc/prev_actions' holds a non-finite value \(NaN\)"),
        ({"rtc/prev_actions": inf, **d}, r"'rtc/prev_actions' holds a non-finite value \(Inf\)"),
        ({"rtc/prev_actions": "0,1", **d}, "'rtc/prev_actions' has dtype"),
        ({"rtc/prev_actions": good_prev, "rtc/inference_delay": -1}, "'rtc/inference_delay' is -1"),
        ({"rtc/prev_actions": good_prev, "rtc/inference_delay": 1.5}, "'rtc/inference_delay'"),
        ({"rtc/prev_actions": good_prev, "rtc/inference_delay": True}, "'rtc/inference_delay'"),
        ({"rtc/prev_actions": good_prev}, "'rtc/inference_delay' is missing"),
        (d, "'rtc/prev_actions'"),
        ({"rtc/prev_actions": good_prev, "rtc/prev_chunk_start": 3, **d}, "not both"),
        ({"rtc/prev_chunk_start": 9, **d}, "'rtc/prev_chunk_start' is 9"),
        ({"rtc/prev_chunk_start": -2, **d}, "'rtc/prev_chunk_start' is -2"),
        ({"rtc/delay": 2, "rtc/prev_actions": good_prev}, "unknown guidance field 'rtc/delay'"),
        ({"rtc/prev_actions": good_prev, "rtc/max_guidance_weight": -1.0, **d}, "max_guidance"),
        ({"rtc/prev_actions": good_prev, "rtc/max_guidance_weight": np.nan, **d}, "max_guidance"),
        ({"rtc/prev_actions": good_prev, "rtc/schedule": "cosine", **d}, "'rtc/schedule'"),
    ]


def test_malformed_guidance_names_the_field_and_the_connection_stays_usable(flow_ckpt):
    from websockets.sync.client import connect

    from vlastack.serving.protocol import packb, unpackb

    first, second = _in_process(flow_ckpt)
    with ServerThread(_policy(flow_ckpt)) as srv:
        with PolicyClient("127.0.0.1", srv.port) as c:
            with pytest.raises(ServerError, match="has received no chunk yet"):
                c.infer({**tiny_obs(0), "rtc/prev_chunk_start": 0, "rtc/inference_delay": 0})
            got0 = c.infer(tiny_obs(0))["actions"]
            for fields, match in _bad_fields(got0[3:]):
                with pytest.raises(ServerError, match=match):
                    c.infer({**tiny_obs(1), **fields})
            # nothing above consumed the session's noise or history: the sequence goes on
            got1 = c.infer_guided(tiny_obs(1), got0[3:], 2)["actions"]
        np.testing.assert_array_equal(got0, first)
        np.testing.assert_array_equal(got1, second)
        # it is a text frame on the wire, as every other bad request
        ws = connect(srv.url, compression=None, max_size=None)
        unpackb(ws.recv(timeout=10))
        ws.send(packb({**tiny_obs(0), "rtc/inference_delay": -3, "rtc/prev_actions": first}))
        reply = ws.recv(timeout=30)
        assert isinstance(reply, str) and reply.startswith("bad request: 'rtc/inference_delay'")
        ws.send(packb(tiny_obs(0)))
        assert isinstance(ws.recv(timeout=30), bytes)
        ws.close()


def test_a_policy_without_a_flow_head_refuses_guidance_with_an_error_frame(l1_ckpt):
    expected = _policy(l1_ckpt).infer(tiny_obs(0))["actions"]
    with ServerThread(_policy(l1_ckpt)) as srv, PolicyClient("127.0.0.1", srv.port) as c:
        guided = {"rtc/prev_actions": np.zeros((4, 4), np.float32), "rtc/inference_delay": 1}
        with pytest.raises(ServerError, match="cannot sample with real-time-chunking guidance"):
            c.infer({**tiny_obs(0), **guided})
        # the client refuses before sending, since the metadata has no 'rtc'
        with pytest.raises(ServerError, match="does not advertise"):
            c.infer_guided(tiny_obs(0), np.zeros((4, 4)), 1)
        np.testing.assert_array_equal(c.infer(tiny_obs(0))["actions"], expected)
        assert srv.server.num_guided == 0
