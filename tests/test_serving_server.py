"""PolicyServer on loopback: protocol, auth, health, errors that keep the connection, load."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from vlastack.errors import VlastackError
from vlastack.serving.client import PolicyClient, ServerError
from vlastack.serving.protocol import packb, unpackb
from vlastack.serving.server import ServerThread
from vlastack.serving.toy import ToyPolicy, example_observation


class FailingPolicy(ToyPolicy):
    def infer(self, obs):
        if "boom" in obs:
            raise RuntimeError("secret internal detail /home/x/model.py line 3")
        if "user_mistake" in obs:
            raise VlastackError("prompt is too long: expected at most 48 tokens")
        return super().infer(obs)


class CountingBatchPolicy(ToyPolicy):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.batch_sizes: list[int] = []

    def infer_batch(self, batch):
        self.batch_sizes.append(len(batch))
        return super().infer_batch(batch)


def _raw(url: str, **kw):
    ws = connect(url, compression=None, max_size=None, **kw)
    meta = unpackb(ws.recv(timeout=5))
    return ws, meta


def _healthz(port: int, timeout: float = 5.0) -> tuple[int, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=timeout) as r:
        return r.status, r.read().decode()


def test_metadata_first_timing_and_parity():
    served, local = ToyPolicy("libero", seed=3), ToyPolicy("libero", seed=3)
    with ServerThread(served) as srv:
        assert srv.server.host == "127.0.0.1"  # loopback unless told otherwise
        client = PolicyClient("127.0.0.1", srv.port)
        assert client.metadata == served.metadata
        for i in range(3):
            obs = example_observation("libero", seed=i)
            out = client.infer(obs)
            np.testing.assert_array_equal(out["actions"], local.infer(obs)["actions"])
            assert out["actions"].dtype == np.float32 and out["actions"].shape == (10, 7)
            assert isinstance(out["policy_timing"]["infer_ms"], float)
            assert isinstance(out["server_timing"]["infer_ms"], float)
            assert ("prev_total_ms" in out["server_timing"]) == (i > 0)
        client.close()
        assert served.num_resets == 1  # reset_on_connect


def test_healthz_and_api_key():
    with ServerThread(ToyPolicy("libero"), api_key="s3cret") as srv:
        assert _healthz(srv.port) == (200, "OK\n")
        for headers in (None, {"Authorization": "Api-Key wrong"}, {"Authorization": "s3cret"}):
            with pytest.raises(InvalidStatus) as info:
                connect(srv.url, additional_headers=headers)
            assert info.value.response.status_code == 401
        with pytest.raises(ServerError, match="401"):
            PolicyClient("127.0.0.1", srv.port, api_key="nope")
        client = PolicyClient("127.0.0.1", srv.port, api_key="s3cret")
        assert client.infer(example_observation("libero"))["actions"].shape == (10, 7)
        assert client.healthz()


def test_bad_requests_get_short_text_and_connection_stays_usable(caplog):
    policy = FailingPolicy("libero")
    good = example_observation("libero")
    with ServerThread(policy) as srv:
        ws, _ = _raw(srv.url)
        cases = [
            (b"\x00\xff not msgpack", "not valid msgpack|not one msgpack"),
            ("a text frame", "binary msgpack frame"),
            (packb([1, 2, 3]), "map of observation arrays"),
            (
                packb({k: v for k, v in good.items() if k != "observation/state"}),
                r"missing 'observation/state'.*\(8,\)",
            ),
            (
                packb({**good, "observation/state": np.zeros(6, np.float32)}),
                r"shape \(6,\): expected array \(8,\)",
            ),
            (
                packb({**good, "observation/image": good["observation/image"].astype(np.float32)}),
                "dtype <f4: expected",
            ),
            (packb({**good, "user_mistake": 1}), "prompt is too long"),
        ]
        with caplog.at_level(logging.INFO, logger="vlastack.serving"):
            for frame, pattern in cases:
                ws.send(frame)
                reply = ws.recv(timeout=5)
                assert isinstance(reply, str), pattern
                assert reply.startswith("bad request:"), reply
                assert __import__("re").search(pattern, reply), reply
                assert "Traceback" not in reply and len(reply) < 450
                # the same connection answers the next good request
                ws.send(packb(good))
                assert unpackb(ws.recv(timeout=5))["actions"].shape == (10, 7)
            ws.send(packb({**good, "boom": 1}))
            reply = ws.recv(timeout=5)
            assert reply == "internal error (see server log)"
            ws.send(packb(good))
            assert unpackb(ws.recv(timeout=5))["actions"].shape == (10, 7)
        ws.close()
    records = [r for r in caplog.records if "policy.infer failed" in r.getMessage()]
    assert len(records) == 1 and "\n" not in records[0].getMessage() and not records[0].exc_info


class BlockingPolicy(ToyPolicy):
    """``infer`` signals that it started, then blocks until the test releases it."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.started, self.release = threading.Event(), threading.Event()
        self.finished = 0

    def infer(self, obs):
        self.started.set()
        assert self.release.wait(30), "the test never released infer"
        self.finished += 1
        return super().infer(obs)


def test_health_and_other_clients_served_during_slow_inference():
    """Health checks, handshakes and the metadata frame do not wait for inference: they are
    answered while an infer call is provably still running (blocked on an event)."""
    policy = BlockingPolicy(style="libero")
    with ServerThread(policy) as srv:
        try:
            slow_ws, _ = _raw(srv.url)
            slow_ws.send(packb(example_observation("libero")))
            assert policy.started.wait(10)  # the worker is inside infer from here on
            # The timeouts only turn a server that blocks into a failure instead of a hang.
            assert _healthz(srv.port, timeout=5) == (200, "OK\n")
            ws2, meta = _raw(srv.url)  # handshake + metadata while inference runs
            assert meta == policy.metadata
            assert policy.finished == 0 and not policy.release.is_set()
        finally:
            policy.release.set()
        assert unpackb(slow_ws.recv(timeout=10))["actions"].shape == (10, 7)
        assert policy.finished == 1
        slow_ws.close()
        ws2.close()


def test_concurrent_clients_and_batching():
    policy = CountingBatchPolicy(style="aloha", delay_s=0.05)
    local = ToyPolicy("aloha")
    errors: list[BaseException] = []

    def worker(k: int):
        try:
            client = PolicyClient("127.0.0.1", srv.port)
            for i in range(4):
                obs = example_observation("aloha", seed=100 * k + i, image_size=32)
                np.testing.assert_array_equal(
                    client.infer(obs)["actions"], local.infer(obs)["actions"]
                )
            client.close()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    with ServerThread(policy, batch_window_ms=20, reset_on_connect=False) as srv:
        threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert not errors, errors
    assert sum(policy.batch_sizes) == 24
    assert max(policy.batch_sizes) > 1  # requests of different clients shared a call


def test_batch_isolates_one_bad_observation():
    policy = CountingBatchPolicy(style="libero", delay_s=0.05)
    good, bad = example_observation("libero", image_size=16), {"nothing": np.zeros(1)}
    replies: dict[str, object] = {}

    def send(name, obs):
        ws, _ = _raw(srv.url)
        ws.send(packb(obs))
        replies[name] = ws.recv(timeout=10)
        ws.close()

    with ServerThread(policy, batch_window_ms=100, reset_on_connect=False) as srv:
        ts = [threading.Thread(target=send, args=(n, o)) for n, o in (("good", good), ("bad", bad))]
        for t in ts:
            t.start()
        for t in ts:
            t.join(10)
    assert isinstance(replies["bad"], str) and "missing" in replies["bad"]
    assert unpackb(replies["good"])["actions"].shape == (10, 7)


def test_oversized_garbage_slow_and_vanishing_clients(caplog):
    policy = ToyPolicy("libero", delay_s=0.2)
    good = example_observation("libero", image_size=8)
    with (
        caplog.at_level(logging.INFO, logger="vlastack.serving"),
        ServerThread(policy, max_frame_bytes=4096) as srv,
    ):
        # oversized frame: that connection is closed with 1009, the server goes on
        ws, _ = _raw(srv.url)
        ws.send(packb({"x": np.zeros(10_000, np.uint8)}))
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=5)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1009
        # raw garbage instead of an HTTP upgrade
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.sendall(b"\x16\x03\x01 this is not http\r\n\r\n")
        s.settimeout(5)
        with contextlib.suppress(OSError):
            s.recv(100)
        s.close()
        # a slow client that never finishes its handshake
        slow = socket.create_connection(("127.0.0.1", srv.port))
        slow.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        # a client that vanishes while its request is being computed
        ws, _ = _raw(srv.url)
        ws.send(packb(good))
        ws.close()
        # others are still served, with intact state
        client = PolicyClient("127.0.0.1", srv.port)
        for _ in range(3):
            assert client.infer(good)["actions"].shape == (10, 7)
        assert _healthz(srv.port) == (200, "OK\n")
        client.close()
        slow.close()
    messages = [r.getMessage() for r in caplog.records]
    assert any("over the 4096-byte cap" in m for m in messages)
    assert all("\n" not in m for m in messages)
