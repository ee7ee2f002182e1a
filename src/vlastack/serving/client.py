"""Robot-side client for an openpi-protocol policy server (ours or openpi's).

Same behaviour as ``openpi_client.WebsocketClientPolicy`` (REFERENCE.md §1.7) without its numpy<2
pin, plus what robots need: retry while the server starts, a receive timeout, ``healthz()``,
server error frames raised as ``ServerError`` (the connection stays usable with our server), and
``infer_guided`` for real-time chunking over the wire (the ``rtc/*`` fields of
``serving.guidance``; ``supports_guidance`` says whether the server advertises them).
"""

from __future__ import annotations

import time
import urllib.request
from typing import Any

from vlastack.errors import VlastackError
from vlastack.serving.guidance import encode_guidance, server_supports_guidance
from vlastack.serving.protocol import Packer, unpackb


class ServerError(VlastackError):
    """The server answered a request with a text error frame."""


class PolicyClient:
    """``infer(obs) -> dict``, ``reset()``, ``metadata``: a drop-in policy backed by a server."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = 8000,
        api_key: str | None = None,
        connect_timeout_s: float = 30.0,
        recv_timeout_s: float | None = 60.0,
    ) -> None:
        self.uri = host if host.startswith("ws") else f"ws://{host}"
        if port is not None:
            self.uri += f":{port}"
        self.api_key = api_key
        self.recv_timeout_s = recv_timeout_s
        self._packer = Packer()
        self._ws = self._connect(connect_timeout_s)
        self.metadata: dict = unpackb(self._recv())

    def _connect(self, timeout_s: float) -> Any:
        from websockets.exceptions import InvalidStatus
        from websockets.sync.client import connect

        headers = {"Authorization": f"Api-Key {self.api_key}"} if self.api_key else None
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return connect(
                    self.uri, compression=None, max_size=None, additional_headers=headers
                )
            except InvalidStatus as exc:
                status = exc.response.status_code
                hint = " (check --api-key)" if status == 401 else ""
                raise ServerError(
                    f"{self.uri} refused the connection: HTTP {status}{hint}"
                ) from None
            except OSError as exc:  # refused / unreachable while the server starts
                if time.monotonic() > deadline:
                    raise ServerError(f"cannot reach policy server at {self.uri}: {exc}") from None
                time.sleep(0.2)

    def _recv(self) -> Any:
        try:
            return self._ws.recv(timeout=self.recv_timeout_s)
        except TimeoutError:
            raise ServerError(f"no reply from {self.uri} within {self.recv_timeout_s} s") from None

    def infer(self, obs: dict) -> dict:
        self._ws.send(self._packer.pack(obs))
        reply = self._recv()
        if isinstance(reply, str):
            raise ServerError(f"policy server: {reply}")
        return unpackb(reply)

    @property
    def supports_guidance(self) -> bool:
        """True when the server's metadata advertises the ``rtc/*`` guidance fields."""
        return server_supports_guidance(self.metadata)

    def infer_guided(
        self,
        obs: dict,
        prev_actions: Any = None,
        inference_delay: int = 0,
        *,
        prev_chunk_start: int | None = None,
        max_guidance_weight: float | None = None,
        schedule: str | None = None,
    ) -> dict:
        """A chunk guided to agree with the committed actions (real-time chunking): the
        previous chunk's not-yet-executed actions ``prev_actions`` (L, A), or
        ``prev_chunk_start`` = k for rows k.. of the last chunk this connection received; the
        first ``inference_delay`` execute while the server computes. Unset options keep the
        server policy's defaults. Raises ``ServerError`` if the server does not advertise
        guidance (an openpi server would silently ignore the fields)."""
        if not self.supports_guidance:
            raise ServerError(
                f"{self.uri} does not advertise real-time-chunking guidance (no 'rtc' entry in "
                "its metadata: an openpi server, or a policy without a flow-matching head); "
                "use infer() (strategy 'async')"
            )
        fields = encode_guidance(
            prev_actions,
            inference_delay,
            prev_chunk_start=prev_chunk_start,
            max_guidance_weight=max_guidance_weight,
            schedule=schedule,
        )
        return self.infer({**obs, **fields})

    def reset(self) -> None:
        """Nothing goes over the wire (openpi protocol has no reset message)."""

    def healthz(self, timeout_s: float = 2.0) -> bool:
        url = self.uri.replace("ws://", "http://", 1).replace("wss://", "https://", 1) + "/healthz"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def close(self) -> None:
        self._ws.close()

    def __enter__(self) -> PolicyClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
