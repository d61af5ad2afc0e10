"""uvicorn's httptools protocol with the two guards against slow or greedy clients it lacks.

- The request line and headers together are capped at `h11_max_incomplete_event_size` bytes
  (uvicorn applies that setting to h11 only; llhttp, under httptools, has no cap): past it the
  request is answered 400 and the connection closed.
- A request head must arrive whole within `timeout_keep_alive` seconds of the connection
  opening or of the previous response. uvicorn closes a connection that stays silent after a
  response, but not one that never sends anything, nor one that sends its head a byte at a
  time. One timer per server checks every connection once a second, rather than one timer
  per request (a timer armed and cancelled per request costs a few percent of /event).

The body is bounded separately, in the app (ingest/body_deadline.py).
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

DEFAULT_MAX_HEAD_BYTES = 16 * 1024
_SWEEP_INTERVAL_S = 1.0


class HeadTooLarge(Exception):
    """Raised inside the parser's callbacks; httptools turns it into a parser error."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._max_head_bytes = self.config.h11_max_incomplete_event_size or DEFAULT_MAX_HEAD_BYTES
        self._head_bytes = 0
        # When the wait for the next request head began (loop time); None while none is due.
        self.head_since: float | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.head_since = self.loop.time()
        _HeadSweep.watch(self.loop, self.connections, float(self.timeout_keep_alive))

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
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # A pipelined request already has its head; otherwise the next one is due.
        if not self.pipeline and not self.transport.is_closing():
            self.head_since = self.loop.time()


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
