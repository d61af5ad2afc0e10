"""A bound on how long a client may take to send its request body.

uvicorn has no body-read timeout: a client that sends its headers and then a byte a minute
holds a request (and its connection) for as long as it likes. `BodyDeadlines.read` bounds
it. One timer checks every body read in progress, a few times per timeout, instead of one
timer per request: arming and cancelling a timer per request (`asyncio.timeout`) is a
visible share of a single event's cost (docs/decisions/0016-ingest-per-request-overheads.md);
registering a read here is a dict insert.
A read is therefore refused between `timeout_s` and `timeout_s * 1.25` after it began.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from ingest.errors import BodyTimeout


class BodyDeadlines:
    """Cancels the body reads that outlast `timeout_s`; they raise BodyTimeout (408)."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._tick_s = timeout_s / 4
        self._reads: dict[asyncio.Task[object], float] = {}  # task -> deadline (loop time)
        self._expired: set[asyncio.Task[object]] = set()
        self._timer: asyncio.TimerHandle | None = None

    async def read(self, body: Awaitable[bytes]) -> bytes:
        """Awaits `body` (the read of a request's body, in the request's own task) and
        returns it, or raises BodyTimeout once it has taken longer than `timeout_s`."""
        task = asyncio.current_task()
        if task is None:  # not in a task: nothing to cancel, read without a bound
            return await body
        loop = asyncio.get_running_loop()
        self._reads[task] = loop.time() + self.timeout_s
        if self._timer is None:
            self._timer = loop.call_later(self._tick_s, self._sweep, loop)
        try:
            return await body
        except asyncio.CancelledError:
            if task not in self._expired:
                raise  # cancelled for another reason (shutdown, disconnect): pass it on
            self._expired.discard(task)
            task.uncancel()
            raise BodyTimeout(
                f"The body did not arrive within {self.timeout_s:g} s "
                "(BODY_READ_TIMEOUT_S); send it at once, or a smaller one"
            ) from None
        finally:
            self._reads.pop(task, None)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        now = loop.time()
        late = [task for task, deadline in self._reads.items() if deadline <= now]
        for task in late:
            del self._reads[task]
            self._expired.add(task)
            task.cancel()
        if self._reads:
            self._timer = loop.call_later(self._tick_s, self._sweep, loop)

    def pending(self) -> int:
        """How many body reads are in progress (for tests and metrics)."""
        return len(self._reads)
