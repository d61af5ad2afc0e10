"""uvicorn's httptools protocol with the guards against slow or greedy clients it lacks.

- The request line and headers together are capped at `h11_max_incomplete_event_size` bytes
  (uvicorn applies that setting to h11 only; llhttp, under httptools, has no cap): past it the
  request is answered 400 and the connection closed.
- A request head must arrive whole within `timeout_keep_alive` seconds of the connection
  opening or of the previous response. uvicorn closes a connection that stays silent after a
  response, but not one that never sends anything, nor one that sends its head a byte at a
  time. One timer per server checks every connection once a second, rather than one timer
  per request (a timer armed and cancelled per request costs a few percent of /event).
- One client address holds at most `max_connections_per_client` connections (IPv6 counted
  per /64, as the rate limits do): a connection past it is answered 429 `too_many_connections`
  with Retry-After at once, without reading its request, and closed. Otherwise one client
  could hold every one of MAX_CONNECTIONS with idle sockets. Behind proxies
  (TRUSTED_PROXY_HOPS > 0) every connection comes from a proxy, so the cap is off: the
  proxy is where connections per client are limited.
- Past MAX_CONNECTIONS (uvicorn's `limit_concurrency`: open connections or running requests)
  the answer is 503 `overloaded` in the API's JSON error shape with Retry-After, rather than
  uvicorn's plain-text 503.

The body is bounded separately, in the app (ingest/body_deadline.py).
"""

from __future__ import annotations

import asyncio
import functools
import weakref
from collections import Counter
from typing import Any, ClassVar

import msgspec
from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ingest.client_address import limit_key
from ingest.errors import JSON_MEDIA_TYPE, ErrorBody, Overloaded, error_response

DEFAULT_MAX_HEAD_BYTES = 16 * 1024
_SWEEP_INTERVAL_S = 1.0
TOO_MANY_CONNECTIONS = "too_many_connections"

# The open connections of each client address, per server (its uvicorn ServerState).
_per_client: weakref.WeakKeyDictionary[Any, Counter[str]] = weakref.WeakKeyDictionary()


@functools.cache
def over_capacity_app(retry_after_s: int) -> ASGIApp:
    """The app that answers a request past MAX_CONNECTIONS (one for all: it keeps no state)."""
    error = Overloaded(
        "The server has as many connections or requests as it takes (MAX_CONNECTIONS); retry later",
        retry_after_s=retry_after_s,
    )
    error.headers["Connection"] = "close"
    return error_response(error)


@functools.cache
def too_many_connections_response(limit: int, retry_after_s: int) -> bytes:
    """The whole answer, as bytes, to a connection past the per-client cap."""
    body = msgspec.json.encode(
        ErrorBody(
            f"This client address already has {limit} open connections, as many as one "
            "client may hold (MAX_CONNECTIONS_PER_CLIENT); reuse them, or retry later",
            TOO_MANY_CONNECTIONS,
        )
    )
    head = (
        "HTTP/1.1 429 Too Many Requests\r\n"
        f"Content-Type: {JSON_MEDIA_TYPE}\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Retry-After: {retry_after_s}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


class HeadTooLarge(Exception):
    """Raised inside the parser's callbacks; httptools turns it into a parser error."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """Give uvicorn `protocol(max_connections_per_client, retry_after_s)`; the other limits
    come from uvicorn's own settings."""

    def __init__(
        self,
        *args: Any,
        max_connections_per_client: int = 0,
        retry_after_s: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._retry_after_s = retry_after_s
        self._max_head_bytes = self.config.h11_max_incomplete_event_size or DEFAULT_MAX_HEAD_BYTES
        self._head_bytes = 0
        # When the wait for the next request head began (loop time); None while none is due.
        self.head_since: float | None = None
        self._max_per_client = max_connections_per_client
        self._counted_as: str | None = None  # the key this connection is counted under
        # uvicorn's own check would answer in plain text: on_headers_complete does it here.
        self._max_connections: int | None = self.limit_concurrency
        self.limit_concurrency = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self._max_per_client and self.client is not None:
            counts = _per_client.setdefault(self.server_state, Counter())
            key = limit_key(self.client[0])
            if counts[key] >= self._max_per_client:
                answer = too_many_connections_response(self._max_per_client, self._retry_after_s)
                transport.write(answer)
                transport.close()
                return
            counts[key] += 1
            self._counted_as = key
        self.head_since = self.loop.time()
        _HeadSweep.watch(self.loop, self.connections, float(self.timeout_keep_alive))

    def connection_lost(self, exc: Exception | None) -> None:
        if self._counted_as is not None:
            counts = _per_client[self.server_state]
            counts[self._counted_as] -= 1
            if counts[self._counted_as] <= 0:
                del counts[self._counted_as]
            self._counted_as = None
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0

    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > self._max_head_bytes:
            raise HeadTooLarge

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value))
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self.head_since = None
        limit = self._max_connections
        if limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit):
            # uvicorn's condition, with the API's answer: the app of this one request.
            app, self.app = self.app, over_capacity_app(self._retry_after_s)
            try:
                super().on_headers_complete()
            finally:
                self.app = app
            return
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # A pipelined request already has its head; otherwise the next one is due.
        if not self.pipeline and not self.transport.is_closing():
            self.head_since = self.loop.time()


def protocol(max_connections_per_client: int, retry_after_s: int) -> Any:
    """What to give uvicorn as `http`: the protocol with these limits (0: no per-client cap).
    A partial of the class, which uvicorn's worker processes receive pickled."""
    return functools.partial(
        GuardedHttpToolsProtocol,
        max_connections_per_client=max_connections_per_client,
        retry_after_s=retry_after_s,
    )


class _HeadSweep:
    """Closes the connections of one server whose request head is overdue."""

    _running: ClassVar[dict[int, _HeadSweep]] = {}

    def __init__(self, loop: asyncio.AbstractEventLoop, connections: set[Any], timeout_s: float):
        self.loop = loop
        self.connections = connections
        self.timeout_s = timeout_s

    @classmethod
    def watch(
        cls, loop: asyncio.AbstractEventLoop, connections: set[Any], timeout_s: float
    ) -> None:
        if id(connections) not in cls._running:
            sweep = cls._running[id(connections)] = cls(loop, connections, timeout_s)
            loop.call_later(_SWEEP_INTERVAL_S, sweep.run)

    def run(self) -> None:
        now = self.loop.time()
        for protocol in list(self.connections):
            since = getattr(protocol, "head_since", None)
            if since is not None and now - since > self.timeout_s:
                protocol.head_since = None
                protocol.transport.close()
        if self.connections and not self.loop.is_closed():
            self.loop.call_later(_SWEEP_INTERVAL_S, self.run)
        else:
            del self._running[id(self.connections)]
