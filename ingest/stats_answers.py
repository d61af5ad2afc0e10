"""Step 1b of a stats request, between its parameters and its plan: answers already computed
for the data as it is now, shared by every request that asks the same question of the same
site.

A question's answer can only change when a transaction that writes what it reads commits. Each
such transaction bumps a version in the same transaction (schema.sql): a consumer batch the
version of each site it stores events of (`site_versions`) and stamps with it the UTC days it
changed for that site (`site_day_versions`: its events' days, the start days of the visits it
changed), every other writer (seal, zones, rebuild, retention, imports) the one epoch of all
sites (`data_epoch`). A version only grows. A question reads its site's data of the UTC days
its range touches (DateRange.utc_days), so an answer is keyed by the epoch and the largest
stamp of those days, read *before* it was computed, and by the question: a later request that
reads the same pair knows nothing its answer reads has committed since that key was read, and
the answer, computed at that version or a later one, is the one it would compute itself. An
answer may be fresher than its key, never older. Nothing is guessed from a time-to-live, a
batch of one site leaves the answers of the others kept, and a batch of today leaves a site's
answers about other days kept (docs/decisions/0037-answers-by-site-day.md). A batch of a
consumer that stamps no day (before migration 0020) counts as one that changed every day.

The pair is prefixed with the server's start time and the time its shared statistics were
last reset (crash recovery resets them without restarting the server): after a crash or a
failover to a standby that had not replayed the last commits, the same counters could be
reached again by other writes. A standby's versions are those it has replayed, as is its data.

Each request waits for one small statement reading the versions, shared with the requests that
arrive while the one before it runs (`_VersionReads`: one statement for all their spans); a
hit pays nothing else, so a question asked by many dashboards at once, or again and again
between two batches that change its days, costs the database one answer
(docs/decisions/0032-answers-by-site-version.md). Concurrent requests for the same key wait for
the one computation in flight; when the last of them goes away (its client disconnected), the
computation is cancelled, and with it its statement in the server.
Failures are not kept; a computation refused a costly or raw slot (which are shared per
client) is not the refusal of the clients that joined it: they ask again, sharing one new
computation under the share of the first of them (so a request that joined one can wait for
its turn up to twice STATS_COSTLY_WAIT_MS).

Per process, bounded by STATS_ANSWER_CACHE_MB of answer bytes (least recently used first
out); 0 turns the cache off, and then no version is read either.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

import msgspec
from cachetools import LRUCache

from ingest.stats_run import CostlyBusy, Pool, RawReadsBusy, fetch

# The epoch (with the server's start and statistics reset) and, for each asked site and span
# of UTC days, the version of that span: the largest stamp of its days, or a version no batch
# stamped days for (unstamped, or pending while no later batch stamped: schema.sql).
VERSION_SQL = """
SELECT concat_ws(' ', pg_postmaster_start_time(), pg_stat_get_bgwriter_stat_reset_time(),
                 (SELECT epoch FROM data_epoch)),
       greatest(v.unstamped, CASE WHEN v.stamped < v.version THEN v.version END,
                (SELECT max(d.version) FROM site_day_versions d
                 WHERE d.site_id = q.site_id AND d.day BETWEEN q.first_day AND q.last_day), 0)
FROM unnest(%(sites)s::text[], %(firsts)s::date[], %(lasts)s::date[])
     WITH ORDINALITY AS q (site_id, first_day, last_day, n)
LEFT JOIN site_versions v ON v.site_id = q.site_id
ORDER BY q.n
"""

# The epoch an answer is being computed for (None outside a kept computation): what else an
# answer reads from a per-process cache of every site must be at least as fresh
# (ingest/stats_imported.py; imports bump the epoch).
ANSWER_EPOCH: ContextVar[str | None] = ContextVar("answer_epoch", default=None)

# What an entry holds besides its answer's bytes: its key (the epoch's text, the version of
# its days, a 16-byte digest of the question), the tuples holding them, the cache's own slot.
ENTRY_OVERHEAD_BYTES = 640

# (the epoch's text, the version of the days the question reads, the question)
Key = tuple[str, int, bytes]
Question = bytes
# A site and the first and last UTC day a question of it reads.
Span = tuple[str, dt.date, dt.date]


def question(route: str, parsed: Any, *read: str | bool) -> Question:
    """A question: the route, its parsed request (which holds the range the parameters
    resolve to on this day) and the other parameters its answer reads (`read`), as a digest.
    Parameters nobody reads are left out, so that sending junk ones neither misses nor fills
    the cache."""
    text = msgspec.json.encode([route, parsed, read])
    return hashlib.blake2b(text, digest_size=16).digest()


def _entry_size(entry: tuple[Key, bytes]) -> int:
    key, body = entry
    return len(body) + len(key[0]) + ENTRY_OVERHEAD_BYTES


class _VersionReads:
    """The epoch and the versions of the spans asked for, read once for every request waiting
    when the read starts: requests arriving while one read is in flight wait for the next,
    which starts once it ends and reads all their spans, so the version each request gets
    was read after it arrived. A burst of requests costs two statements, not one each."""

    def __init__(self) -> None:
        self._next: asyncio.Future[tuple[str, dict[Span, int]]] | None = None
        self._spans: set[Span] = set()
        self._reader: asyncio.Task[None] | None = None
        self.reads = 0

    async def read(self, pool: Pool, span: Span) -> tuple[str, int]:
        """(the epoch's text, the span's version)."""
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
            # Marks a failure seen even if every request waiting for it was cancelled.
            self._next.add_done_callback(lambda f: f.cancelled() or f.exception())
        waited = self._next
        self._spans.add(span)
        if self._reader is None:
            self._reader = asyncio.create_task(self._read_all(pool), name="stats-version")
            self._reader.add_done_callback(self._reader_done)
        # Shielded: a request going away does not cancel the read others wait for.
        epoch, versions = await asyncio.shield(waited)
        return epoch, versions[span]

    async def _read_all(self, pool: Pool) -> None:
        waited: asyncio.Future[tuple[str, dict[Span, int]]] | None = None
        try:
            while (waited := self._next) is not None:
                spans, self._next, self._spans = sorted(self._spans), None, set()
                self.reads += 1
                params = {
                    "sites": [site for site, _, _ in spans],
                    "firsts": [first for _, first, _ in spans],
                    "lasts": [last for _, _, last in spans],
                }
                try:
                    rows = await fetch(pool, VERSION_SQL, params)
                except Exception as exc:
                    waited.set_exception(exc)
                    # Those who came while it failed get the same answer (the database
                    # cannot be had, or the pool is exhausted) rather than a wait as long.
                    if (queued := self._next) is not None:
                        self._next, self._spans = None, set()
                        queued.set_exception(exc)
                else:
                    epoch = str(rows[0][0])
                    versions = {span: int(row[1]) for span, row in zip(spans, rows, strict=True)}
                    waited.set_result((epoch, versions))
        finally:
            self._reader = None
            # Cancelled (the app stopping): nobody will read for those still waiting.
            for left in (waited, self._next):
                if left is not None and not left.done():
                    left.cancel()
            self._next, self._spans = None, set()

    def _reader_done(self, reader: asyncio.Task[None]) -> None:
        """A reader cancelled before its first step never ran its `finally`: without this,
        every later request would wait for it."""
        if self._reader is reader:
            self._reader = None
            if self._next is not None and not self._next.done():
                self._next.cancel()
            self._next, self._spans = None, set()


class _Gone(Exception):
    """The computation joined was cancelled by the last request waiting for it."""


class StatsAnswers:
    """The answers of one API process, by (epoch, version of the days read, question)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        # The value holds the key too, so that getsizeof can count the version's bytes.
        self._done: LRUCache[Key, tuple[Key, bytes]] | None = (
            LRUCache(maxsize=max_bytes, getsizeof=_entry_size) if max_bytes > 0 else None
        )
        self._running: dict[Key, tuple[asyncio.Task[bytes], list[int]]] = {}
        self._versions = _VersionReads()
        # Requests answered from a stored answer, by joining one in flight, by computing.
        self.counts = {"hit": 0, "joined": 0, "computed": 0}

    @property
    def running(self) -> tuple[int, int]:
        """(computations in flight, requests waiting for them)."""
        return len(self._running), sum(waiters[0] for _, waiters in self._running.values())

    @property
    def stored_bytes(self) -> int:
        return int(self._done.currsize) if self._done is not None else 0

    async def answer(
        self,
        pool: Pool,
        span: Span,
        asked: Question,
        compute: Callable[[], Awaitable[bytes]],
    ) -> bytes:
        """The answer's bytes to a question that reads `span` (its site and first and last
        UTC day): stored for the current epoch and the span's version, in flight for them, or
        computed by `compute` now (and stored if it fits)."""
        if self._done is None:
            self.counts["computed"] += 1
            return await compute()
        epoch, version = await self._versions.read(pool, span)
        key: Key = (epoch, version, asked)
        stored = self._done.get(key)
        if stored is not None:
            self.counts["hit"] += 1
            return stored[1]
        # A computation joined ends without answering only when its last waiter left as this
        # one joined, or when the client that started it was refused a slot: then again
        # through the shared path (those refused with it share the next computation, started
        # under the first one's share), a bounded number of times, and past that alone.
        for _ in range(3):
            task, waiters, started = self._shared(key, compute)
            try:
                body = await self._wait(task, waiters)
            except (CostlyBusy, RawReadsBusy):
                if started:
                    self.counts["computed"] += 1
                    raise
                continue
            except _Gone:
                continue
            self.counts["computed" if started else "joined"] += 1
            return body
        self.counts["computed"] += 1
        token = ANSWER_EPOCH.set(epoch)
        try:
            body = await compute()
        finally:
            ANSWER_EPOCH.reset(token)
        self._store(key, body)
        return body

    def _shared(
        self, key: Key, compute: Callable[[], Awaitable[bytes]]
    ) -> tuple[asyncio.Task[bytes], list[int], bool]:
        """The computation in flight for `key`, or a new one; its count of waiters (this
        request counted); whether it is new."""
        running = self._running.get(key)
        # One whose last waiter left is being cancelled: it will not answer.
        if running is not None and not running[0].cancelling():
            running[1][0] += 1
            return running[0], running[1], False
        token = ANSWER_EPOCH.set(key[0])  # the epoch, copied into the task's context
        try:
            task = asyncio.ensure_future(compute())
        finally:
            ANSWER_EPOCH.reset(token)
        waiters = [1]
        self._running[key] = (task, waiters)
        task.add_done_callback(lambda done: self._finished(key, done))
        return task, waiters, True

    async def _wait(self, task: asyncio.Task[bytes], waiters: list[int]) -> bytes:
        """Waits for a shared computation (counted among its `waiters` by `_shared`);
        cancels it when this request is cancelled as its last waiter."""
        try:
            # Shielded: one client going away does not cancel what the others wait for.
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if me is not None and me.cancelling():
                if not task.done() and waiters[0] == 1:
                    task.cancel()  # the last one waiting: nobody needs the answer now
                raise
            raise _Gone from None
        finally:
            waiters[0] -= 1

    def _finished(self, key: Key, done: asyncio.Task[bytes]) -> None:
        if self._running.get(key, (None,))[0] is done:
            del self._running[key]
        if done.cancelled() or done.exception() is not None:
            return
        self._store(key, done.result())

    def _store(self, key: Key, body: bytes) -> None:
        entry = (key, body)
        if self._done is not None and _entry_size(entry) <= self.max_bytes:
            self._done[key] = entry
