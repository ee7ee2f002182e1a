"""Where the runner's action chunks come from: a policy server or an in-process policy.

``RemotePolicy`` talks to any openpi-protocol server (vlastack's or openpi's) through
``serving.client.PolicyClient``; a dropped connection raises ``PolicyLostError`` and the next call
reconnects (a restarted server is picked up again). Against a server that advertises real-time
chunking (``"rtc"`` in its metadata) it is a guided policy too: ``infer_guided`` sends the
committed actions as the ``rtc/*`` fields (``serving.guidance``), so the ``rtc`` strategy runs
over the wire. ``ChunkClock`` wraps either kind and stamps
every chunk with the time its inference started, so the runner can tell a stale chunk.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from vlastack.errors import VlastackError

log = logging.getLogger("vlastack.robot")


class PolicyLostError(VlastackError):
    """The policy server cannot be reached (refused, closed, timed out)."""


class RemotePolicy:
    """A policy server as a ``ChunkPolicy``: ``infer(obs) -> {"actions": (H, A)}``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = 8000,
        *,
        api_key: str | None = None,
        connect_timeout_s: float = 1.0,
        recv_timeout_s: float = 10.0,
    ) -> None:
        self.host, self.port, self.api_key = host, port, api_key
        self.connect_timeout_s = connect_timeout_s
        self.recv_timeout_s = recv_timeout_s
        self._client: Any = None
        self._lock = threading.Lock()
        self.metadata: dict[str, Any] = {}
        self.reconnects = 0
        self.source = f"{host}:{port}" if port is not None else host

    def connect(self, timeout_s: float | None = None) -> dict[str, Any]:
        """Open the connection now (waiting up to ``timeout_s``); returns the server's metadata."""
        from vlastack.serving.client import PolicyClient, ServerError

        with self._lock:
            if self._client is None:
                try:
                    self._client = PolicyClient(
                        self.host,
                        self.port,
                        api_key=self.api_key,
                        connect_timeout_s=self.connect_timeout_s
                        if timeout_s is None
                        else timeout_s,
                        recv_timeout_s=self.recv_timeout_s,
                    )
                except ServerError as exc:
                    raise PolicyLostError(str(exc)) from None
                except Exception as exc:  # handshake cut short, bad metadata frame ...
                    raise PolicyLostError(f"{self.source}: {type(exc).__name__}: {exc}") from None
                self.metadata = dict(self._client.metadata or {})
                self.reconnects += 1
            return self.metadata

    @property
    def supports_guided_sampling(self) -> bool:
        """Whether the server (its last metadata frame) takes the ``rtc/*`` guidance fields."""
        from vlastack.serving.guidance import server_supports_guidance

        return server_supports_guidance(self.metadata)

    def infer_guided(self, obs: dict, prev_actions: np.ndarray, inference_delay: int) -> dict:
        """Real-time chunking over the wire: ``infer`` with the committed actions attached."""
        from vlastack.serving.guidance import encode_guidance

        self.connect()
        if not self.supports_guided_sampling:  # e.g. a reconnect found another server
            raise PolicyLostError(
                f"{self.source} no longer advertises real-time-chunking guidance ('rtc' in its "
                "metadata)"
            )
        return self.infer({**obs, **encode_guidance(prev_actions, inference_delay)})

    def infer(self, obs: dict) -> dict:
        from vlastack.serving.client import ServerError

        self.connect()
        try:
            out = self._client.infer(obs)
        except ServerError as exc:
            if "no reply" in str(exc):  # a receive timeout: treat the connection as gone
                self._drop()
                raise PolicyLostError(str(exc)) from None
            raise  # the server answered with an error frame: a policy error, connection is fine
        except Exception as exc:  # ConnectionClosed, OSError ...
            self._drop()
            raise PolicyLostError(f"{self.source}: {type(exc).__name__}: {exc}") from None
        return out

    def reset(self) -> None:
        """Nothing goes over the wire (the openpi protocol has no reset message)."""

    def _drop(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):  # already broken
                client.close()

    def close(self) -> None:
        self._drop()


class ChunkClock:
    """Wraps a ``ChunkPolicy``: ``times[i]`` is when the i-th ``infer`` (= the runtime's chunk
    ``i``) started, by ``clock``. The runtime's ``last_chunk_id`` indexes it. ``reset_times()``
    when the runtime is rebuilt (its chunk ids restart at 0)."""

    def __init__(self, policy: Any, clock: Callable[[], float]) -> None:
        self.policy = policy
        self.clock = clock
        self.times: list[float] = []
        self.source = getattr(policy, "source", type(policy).__name__)
        self._lock = threading.Lock()  # stamps come from the runtime's thread

    def _stamp(self) -> None:
        with self._lock:
            self.times.append(self.clock())

    def infer(self, obs: dict) -> dict:
        self._stamp()
        return self.policy.infer(obs)

    def reset(self) -> None:
        self.policy.reset()

    # System 2 of a hierarchical policy (serving.hierarchy.HierarchicalRuntime): not a chunk,
    # so not stamped
    @property
    def supports_hierarchy(self) -> bool:
        return bool(getattr(self.policy, "supports_hierarchy", False))

    def infer_high_level(self, obs: dict) -> dict:
        return self.policy.infer_high_level(obs)

    def reset_times(self) -> None:
        with self._lock:
            self.times = []

    def shift_times(self, delta: float) -> None:
        """Move every stamp by ``delta`` (the runner saw the clock jump back)."""
        with self._lock:
            self.times = [t + delta for t in self.times]

    def chunk_time(self, chunk_id: int) -> float | None:
        with self._lock:
            return self.times[chunk_id] if 0 <= chunk_id < len(self.times) else None


class GuidedChunkClock(ChunkClock):
    """``ChunkClock`` for a flow policy with ``infer_guided`` (the ``rtc`` strategy)."""

    @property
    def supports_guided_sampling(self) -> bool:
        return bool(getattr(self.policy, "supports_guided_sampling", True))

    def infer_guided(self, obs: dict, prev_actions: np.ndarray, inference_delay: int) -> dict:
        self._stamp()
        return self.policy.infer_guided(obs, prev_actions, inference_delay)


def chunk_clock(policy: Any, clock: Callable[[], float]) -> ChunkClock:
    cls = GuidedChunkClock if hasattr(policy, "infer_guided") else ChunkClock
    return cls(policy, clock)
