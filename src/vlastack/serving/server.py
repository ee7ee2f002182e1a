"""Websocket policy server speaking openpi's protocol (REFERENCE.md §1), hardened.

Wire-compatible with ``openpi_client.WebsocketClientPolicy``: metadata frame first, then one
msgpack-numpy observation -> one result per round trip, ``GET /healthz``. Beyond openpi: binds
loopback by default, optional API key, inference in a worker thread so the event loop keeps
answering health checks and other clients, optional batching across clients, and bad requests get
a short text frame while the connection stays open (openpi sends a traceback and closes).
Real-time chunking over the wire: a request may carry the optional ``rtc/*`` guidance fields
(``serving.guidance``); the metadata frame advertises them under ``"rtc"`` when the policy can
sample with guidance, and a policy that cannot answers a guided request with a text error frame.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hmac
import http
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from vlastack.errors import NonFiniteActionError, VlastackError
from vlastack.serving.guidance import (
    Guidance,
    guidance_metadata,
    guidance_support,
    has_guidance,
    split_guidance,
)
from vlastack.serving.protocol import ProtocolError, packb, unpackb

log = logging.getLogger("vlastack.serving")

MAX_ERROR_CHARS = 400
NON_FINITE_REPLY = (
    "error: the policy produced a non-finite action (NaN/Inf); no action sent for this "
    "observation (see server log)"
)


class ServablePolicy(Protocol):
    """What the server needs from a policy (``vlastack.policy.Policy`` satisfies it)."""

    metadata: dict

    def infer(self, obs: dict) -> dict: ...

    def reset(self) -> None: ...


class _OneLineLogger(logging.LoggerAdapter):
    """Turns websockets' ``exc_info=True`` log calls into one line: message + exception summary.

    Bad clients (garbage bytes, dropped sockets) must not fill the server log with tracebacks.
    """

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        exc_info = kwargs.pop("exc_info", None)
        if exc_info:
            exc = sys.exc_info()[1] if exc_info is True else exc_info
            if isinstance(exc, tuple):
                exc = exc[1]
            if isinstance(exc, BaseException):
                msg = f"{msg}: {type(exc).__name__}: {_one_line(str(exc))}"
        return msg, kwargs


def _one_line(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class _Pending:
    obs: dict
    session: Any
    future: asyncio.Future = field(repr=False)


@dataclass
class _Connection:
    """One client's state on the server, bounded: its policy session, the last chunk it
    received (for ``rtc/prev_chunk_start``) and the previous round trip's time."""

    session: Any = None
    last_chunk: np.ndarray | None = None
    prev_total_ms: float | None = None


class PolicyServer:
    """Serve ``policy`` over websockets; see the module docstring for the protocol.

    ``port=0`` picks a free port (read ``server.port`` once started). ``max_frame_bytes=None``
    means no cap, as openpi. ``batch_window_ms > 0`` groups requests from different clients that
    arrive within the window into one ``policy.infer_batch(list_of_obs)`` call (if the policy has
    one). A policy with ``new_session()`` (``vlastack.policy.Policy``) gives every connection its
    own state (observation history, noise generator): one client's frames or reconnect never
    change another's actions, and batched calls pass each request's session
    (``infer_batch(obs_list, sessions=...)``). For a policy without sessions,
    ``reset_on_connect`` calls ``policy.reset()`` when a client connects (openpi clients send
    nothing on reset, so a new connection is the only episode boundary the server sees).

    A request with ``rtc/*`` fields (``serving.guidance``) is sampled with real-time-chunking
    guidance by ``policy.infer_guided`` (with the connection's session), never batched; the
    metadata frame gets an ``"rtc"`` entry when the policy can do that. A policy that cannot
    (no flow-matching head) answers such a request with a text error frame naming why.
    """

    def __init__(
        self,
        policy: ServablePolicy,
        host: str = "127.0.0.1",
        port: int = 8000,
        api_key: str | None = None,
        max_frame_bytes: int | None = None,
        batch_window_ms: float = 0.0,
        max_batch_size: int = 16,
        reset_on_connect: bool = True,
        metadata: dict | None = None,
    ) -> None:
        self.policy = policy
        self.host = host
        self.port = port
        self.api_key = api_key
        self.max_frame_bytes = max_frame_bytes
        self.batch_window_s = max(0.0, batch_window_ms) / 1000.0
        self.max_batch_size = max(1, max_batch_size)
        self.reset_on_connect = reset_on_connect
        self.metadata = dict(metadata if metadata is not None else getattr(policy, "metadata", {}))
        self.guidance, self._no_guidance_reason = guidance_support(policy)
        if self.guidance:
            self.metadata.setdefault("rtc", guidance_metadata())
        self._action_dim = _int_or_none(self.metadata.get("action_dim"))
        self._action_horizon = _int_or_none(self.metadata.get("action_horizon"))
        packb(self.metadata)  # fail at construction, not per client, if metadata is not packable
        self._batching = self.batch_window_s > 0 and callable(getattr(policy, "infer_batch", None))
        self._sessions = callable(getattr(policy, "new_session", None))
        # One worker: a policy object is not assumed thread-safe; inference is serialized but
        # never blocks the event loop.
        self._executor = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="vlastack-infer"
        )
        self._queue: asyncio.Queue[_Pending] | None = None
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.num_clients = 0
        self.num_requests = 0
        self.num_errors = 0
        self.num_guided = 0  # guided requests answered with a chunk

    # ---- HTTP side: health check and API key ---------------------------------------------
    def _process_request(self, connection: Any, request: Any) -> Any:
        if request.path.split("?")[0] == "/healthz":
            return connection.respond(http.HTTPStatus.OK, "OK\n")
        if self.api_key is not None:
            given = request.headers.get("Authorization", "")
            expected = f"Api-Key {self.api_key}"
            if not hmac.compare_digest(given.encode(), expected.encode()):
                log.warning("rejected %s: missing or wrong API key", _peer(connection))
                return connection.respond(
                    http.HTTPStatus.UNAUTHORIZED,
                    "missing or wrong API key; send the header 'Authorization: Api-Key <key>'\n",
                )
        return None

    # ---- inference (worker thread) --------------------------------------------------------
    def _infer_one(self, obs: dict, session: Any = None) -> tuple[dict, float]:
        t0 = time.perf_counter()
        result = self.policy.infer(obs) if session is None else session.infer(obs)
        return result, (time.perf_counter() - t0) * 1000.0

    def _infer_guided_one(
        self, obs: dict, guidance: Guidance, session: Any = None
    ) -> tuple[dict, float]:
        t0 = time.perf_counter()
        kw = guidance.kwargs()
        if session is not None:
            kw["session"] = session
        result = self.policy.infer_guided(  # type: ignore[attr-defined]
            obs, guidance.prev_actions, guidance.inference_delay, **kw
        )
        return result, (time.perf_counter() - t0) * 1000.0

    def _infer_many(
        self, batch: list[dict], sessions: list[Any]
    ) -> list[tuple[dict, float] | BaseException]:
        t0 = time.perf_counter()
        try:
            if self._sessions:
                results = self.policy.infer_batch(batch, sessions=sessions)  # type: ignore[attr-defined]
            else:
                results = self.policy.infer_batch(batch)  # type: ignore[attr-defined]
            if len(results) != len(batch):
                raise RuntimeError(f"infer_batch returned {len(results)} results for {len(batch)}")
        except Exception:
            # One bad observation must not fail its neighbours: redo them one by one so each
            # client gets its own answer or its own error.
            out: list[tuple[dict, float] | BaseException] = []
            for obs, session in zip(batch, sessions):
                try:
                    out.append(self._infer_one(obs, session))
                except Exception as exc:
                    out.append(exc)
            return out
        per_ms = (time.perf_counter() - t0) * 1000.0
        return [(r, per_ms) for r in results]

    async def _batch_loop(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            first = await self._queue.get()
            batch = [first]
            deadline = loop.time() + self.batch_window_s
            while len(batch) < self.max_batch_size:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), timeout))
                except asyncio.TimeoutError:
                    break
            live = [p for p in batch if not p.future.done()]  # vanished clients cancel theirs
            if not live:
                continue
            outs = await loop.run_in_executor(
                self._executor, self._infer_many, [p.obs for p in live], [p.session for p in live]
            )
            for p, out in zip(live, outs):
                if p.future.done():
                    continue
                if isinstance(out, BaseException):
                    p.future.set_exception(out)
                else:
                    p.future.set_result(out)

    async def _infer(
        self, obs: dict, session: Any, guidance: Guidance | None = None
    ) -> tuple[dict, float]:
        loop = asyncio.get_running_loop()
        if guidance is not None:  # one client's committed actions: never batched
            return await loop.run_in_executor(
                self._executor, self._infer_guided_one, obs, guidance, session
            )
        if self._batching and self._queue is not None:
            fut: asyncio.Future = loop.create_future()
            await self._queue.put(_Pending(obs, session, fut))
            return await fut
        return await loop.run_in_executor(self._executor, self._infer_one, obs, session)

    # ---- one request ----------------------------------------------------------------------
    def _split_guidance(self, obs: dict, conn: _Connection) -> tuple[dict, Guidance | None]:
        """The observation without ``rtc/`` keys and its guidance (ProtocolError if bad)."""
        if not has_guidance(obs):
            return obs, None
        if not self.guidance:
            raise ProtocolError(
                "this server's policy cannot sample with real-time-chunking guidance "
                f"({self._no_guidance_reason}); send no 'rtc/' fields (use strategy 'async')"
            )
        return split_guidance(obs, action_dim=self._action_dim, last_chunk=conn.last_chunk)

    async def _answer(self, frame: Any, peer: str, conn: _Connection) -> bytes | str:
        """Return the binary reply, or a short text error frame (connection stays open)."""
        if isinstance(frame, str):
            return "bad request: expected a binary msgpack frame, got a text frame"
        try:
            obs = unpackb(frame)
        except ProtocolError as exc:
            log.warning("bad frame from %s: %s", peer, exc)
            return f"bad request: {_one_line(str(exc))}"
        if not isinstance(obs, dict):
            return f"bad request: expected a map of observation arrays, got {type(obs).__name__}"
        try:
            obs, guidance = self._split_guidance(obs, conn)
        except ProtocolError as exc:
            log.warning("bad guidance from %s: %s", peer, exc)
            return f"bad request: {_one_line(str(exc))}"
        t_recv = time.perf_counter()
        try:
            result, infer_ms = await self._infer(obs, conn.session, guidance)
        except NonFiniteActionError as exc:
            log.error("no action sent to %s: %s", peer, _one_line(str(exc)))
            return NON_FINITE_REPLY
        except VlastackError as exc:
            return f"bad request: {_one_line(str(exc))}"
        except Exception as exc:
            log.error(
                "policy.infer failed for %s: %s: %s", peer, type(exc).__name__, _one_line(str(exc))
            )
            return "internal error (see server log)"
        try:
            reply = _check_result(result)
            reply.setdefault("policy_timing", {"infer_ms": infer_ms})
            if guidance is not None:
                reply["rtc"] = guidance.applied(self._action_horizon)
            server_timing = {"infer_ms": (time.perf_counter() - t_recv) * 1000.0}
            if conn.prev_total_ms is not None:
                server_timing["prev_total_ms"] = conn.prev_total_ms
            reply["server_timing"] = server_timing
            packed = packb(reply)
            conn.last_chunk = reply["actions"]  # one chunk per connection: bounded
            if guidance is not None:
                self.num_guided += 1
            return packed
        except NonFiniteActionError as exc:
            log.error("no action sent to %s: %s", peer, _one_line(str(exc)))
            return NON_FINITE_REPLY
        except Exception as exc:
            log.error(
                "bad policy result for %s: %s: %s", peer, type(exc).__name__, _one_line(str(exc))
            )
            return "internal error (see server log)"

    async def _handler(self, ws: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        peer = _peer(ws)
        self.num_clients += 1
        log.info("client %s connected", peer)
        try:
            await ws.send(packb(self.metadata))
            # this connection's own history and noise (a policy without sessions is shared)
            session = self.policy.new_session() if self._sessions else None  # type: ignore[attr-defined]
            conn = _Connection(session)
            if session is None and self.reset_on_connect:
                # After the metadata frame: the worker may be busy with another client's chunk.
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(self._executor, self.policy.reset)
            while True:
                frame = await ws.recv()
                t0 = time.perf_counter()
                reply = await self._answer(frame, peer, conn)
                self.num_requests += 1
                if isinstance(reply, str):
                    self.num_errors += 1
                await ws.send(reply)
                conn.prev_total_ms = (time.perf_counter() - t0) * 1000.0
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else (exc.sent.code if exc.sent else None)
            if code == 1009:
                log.warning(
                    "client %s sent a frame over the %s-byte cap; closed (1009)",
                    peer,
                    self.max_frame_bytes,
                )
            elif code not in (1000, 1001):
                log.info("client %s went away (code %s)", peer, code)
            else:
                log.info("client %s disconnected", peer)
        except Exception as exc:  # never let one client take the server down
            log.error(
                "client %s handler failed: %s: %s", peer, type(exc).__name__, _one_line(str(exc))
            )
        finally:
            self.num_clients -= 1

    # ---- lifecycle ------------------------------------------------------------------------
    async def serve(self, ready: Callable[[int], None] | None = None) -> None:
        """Run until ``stop()``; ``ready(port)`` is called once the socket listens."""
        from websockets.asyncio.server import serve

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._queue = asyncio.Queue()
        batcher = asyncio.create_task(self._batch_loop()) if self._batching else None
        async with serve(
            self._handler,
            self.host,
            self.port,
            compression=None,
            max_size=self.max_frame_bytes,
            process_request=self._process_request,
            logger=_OneLineLogger(logging.getLogger("vlastack.serving.ws"), {}),
        ) as server:
            self.port = server.sockets[0].getsockname()[1]
            log.info("serving on ws://%s:%d (healthz: /healthz)", self.host, self.port)
            if ready is not None:
                ready(self.port)
            await self._stop.wait()
        if batcher is not None:
            batcher.cancel()

    def stop(self) -> None:
        """Ask a running ``serve()`` to return (thread-safe)."""
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)

    def close(self) -> None:
        self.stop()
        self._executor.shutdown(wait=False, cancel_futures=True)


def _check_result(result: Any) -> dict:
    if not isinstance(result, dict) or "actions" not in result:
        raise TypeError("policy.infer must return a dict with 'actions'")
    actions = np.asarray(result["actions"])
    if actions.ndim != 2 or actions.dtype.kind != "f":
        raise TypeError(
            f"'actions' must be a float (H, A) array, got {actions.dtype} {actions.shape}"
        )
    if not np.isfinite(actions).all():
        raise NonFiniteActionError(
            f"'actions' of shape {actions.shape} hold {int((~np.isfinite(actions)).sum())} "
            "non-finite value(s)"
        )
    return {**result, "actions": actions}


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _peer(conn: Any) -> str:
    try:
        host, port = conn.remote_address[:2]
        return f"{host}:{port}"
    except Exception:
        return "?"


def run_server(policy: ServablePolicy, **kwargs: Any) -> None:
    """Serve until interrupted (blocking); kwargs as ``PolicyServer``."""
    server = PolicyServer(policy, **kwargs)
    try:
        asyncio.run(server.serve())
    finally:
        server.close()


class ServerThread:
    """Run a ``PolicyServer`` in a background thread (tests, notebooks, benchmarks).

    >>> with ServerThread(policy, port=0) as srv:
    ...     client = WebsocketClientPolicy("127.0.0.1", srv.port)
    """

    def __init__(self, policy: ServablePolicy, **kwargs: Any) -> None:
        kwargs.setdefault("port", 0)
        self.server = PolicyServer(policy, **kwargs)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="vlastack-server", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self.server.serve(ready=lambda _port: self._ready.set()))
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return f"ws://{self.server.host}:{self.server.port}"

    def start(self, timeout_s: float = 10.0) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise RuntimeError("policy server did not start in time")
        if self._error is not None:
            raise self._error
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self.server.stop()
        self._thread.join(timeout_s)
        self.server.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
