"""Step 5 of a stats request, before planning: answers already computed for the database as it
is now, shared by every request that asks the same question of the same data.

A question's answer can only change when a transaction commits (a consumer batch, a seal, an
import, a rebuild, retention). PostgreSQL's snapshot (`pg_current_snapshot()`: the first
unfinished transaction id, the next one, and the ids running in between) changes with every
commit, and never comes back to a value it had: a commit either moves its upper bound or
takes an id out of its running list. So an answer is keyed by the snapshot read *before* it
was computed and by the question (route, parameters, the range they resolve to today): a
later request that reads the same snapshot text knows nothing has committed since that key
was read, and the answer, computed at that snapshot or a later one with no commit in
between, is the one it would compute itself. An answer may be fresher than its key (a commit
landing while it was computed), never older. Nothing is guessed from a time-to-live.

Each request pays one small statement for the snapshot; a hit pays nothing else, so a
question asked by many dashboards at once, or again and again between two consumer batches,
costs the database one answer (docs/decisions/0027-answers-by-snapshot.md). Concurrent
requests for the same key wait for the one computation in flight. Failures are not kept.
When the last request waiting for a computation goes away (its client disconnected), the
computation is cancelled, and with it its statement in the server.

Per process, bounded by STATS_ANSWER_CACHE_MB of answer bytes (least recently used first
out); 0 turns the cache off, and then no snapshot is read either.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

from cachetools import LRUCache

from ingest.stats_run import Pool, fetch

SNAPSHOT_SQL = "SELECT pg_current_snapshot()::text"

# What an entry holds besides its answer's bytes: its key (the parameters' text, counted
# separately), the snapshot's text, the dictionary's own slot.
ENTRY_OVERHEAD_BYTES = 400

Key = tuple[Hashable, ...]


def _entry_size(entry: tuple[Key, bytes]) -> int:
    key, body = entry
    return len(body) + ENTRY_OVERHEAD_BYTES + sum(len(str(part)) for part in key)


class StatsAnswers:
    """The answers of one API process, by (snapshot, question)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        # The value holds the key too, so that getsizeof can count the key's own bytes.
        self._done: LRUCache[Key, tuple[Key, bytes]] | None = (
            LRUCache(maxsize=max_bytes, getsizeof=_entry_size) if max_bytes > 0 else None
        )
        self._running: dict[Key, tuple[asyncio.Task[bytes], list[int]]] = {}
        # Requests answered from a stored answer, by joining one in flight, by computing.
        self.counts = {"hit": 0, "joined": 0, "computed": 0}

    @property
    def enabled(self) -> bool:
        return self._done is not None

    @property
    def stored_bytes(self) -> int:
        return int(self._done.currsize) if self._done is not None else 0

    async def answer(
        self, pool: Pool, question: Key, compute: Callable[[], Awaitable[bytes]]
    ) -> bytes:
        """The answer's bytes: stored for the current snapshot, in flight for it, or
        computed by `compute` now (and stored if it fits)."""
        if self._done is None:
            self.counts["computed"] += 1
            return await compute()
        [(snapshot,)] = await fetch(pool, SNAPSHOT_SQL, {})
        key: Key = (snapshot, *question)
        stored = self._done.get(key)
        if stored is not None:
            self.counts["hit"] += 1
            return stored[1]
        while True:
            running = self._running.get(key)
            # One whose last waiter left is being cancelled: it will not answer.
            if running is None or running[0].cancelling():
                self.counts["computed"] += 1
                task = asyncio.ensure_future(compute())
                running = (task, [0])
                self._running[key] = running
                task.add_done_callback(lambda done: self._finished(key, done))
            else:
                self.counts["joined"] += 1
            task, waiters = running
            waiters[0] += 1
            try:
                # Shielded: one client going away does not cancel what the others wait for.
                return await asyncio.shield(task)
            except asyncio.CancelledError:
                me = asyncio.current_task()
                if me is not None and me.cancelling():
                    if not task.done() and waiters[0] == 1:
                        task.cancel()  # the last one waiting: nobody needs the answer now
                    raise
                # The computation joined was cancelled by the last client before this one
                # joined it: compute again.
            finally:
                waiters[0] -= 1

    def _finished(self, key: Key, done: asyncio.Task[bytes]) -> None:
        if self._running.get(key, (None,))[0] is done:
            del self._running[key]
        if done.cancelled() or done.exception() is not None or self._done is None:
            return
        entry = (key, done.result())
        if _entry_size(entry) <= self.max_bytes:
            self._done[key] = entry


def question(route: str, parsed: Any, params: dict[str, str]) -> Key:
    """A question's part of the key: the route, its parameters as sent, and their parsed
    form (which holds the range they resolve to on this day)."""
    return (route, parsed, tuple(sorted(params.items())))
