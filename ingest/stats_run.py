"""Step 4: running a plan's statements on the pool, and cancelling them when the client
leaves.

Every function reads rollups only and raises DatabaseUnavailable when PostgreSQL cannot
answer within the pool's timeout (QueryTimedOut when a statement ran past the connection's
statement_timeout or lock_timeout). A plan is one statement, and a follow-up only where the
plan names one (ingest/stats_plan.py); a statement whose expected branches its snapshot
refuses is asked once more with every branch (`answer`).

Statements over raw events (the plan forms "raw ...": filters no rollup holds) read every
event of the range, so they get a share of the pool, not all of it: the RawReads the route
sets in RAW_READS for its request admits at most its limit at once (raising RawReadsBusy
past it, without waiting) and runs each under its own, shorter, statement_timeout
(docs/decisions/0021-raw-reads-share-of-the-pool.md).

Every costly plan (ingest/stats_plan_cost.py: raw events, many quarter hours ranked, many
sketches merged) first waits for a slot of the CostlyPlans the route sets in COSTLY, for a
bounded time (CostlyBusy past it); aggregate_values, timeseries_rows and breakdown_rows hold
it for the whole plan, follow-up included. Other plans never wait for one.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextvars import ContextVar
from typing import Any, TypeVar

import psycopg
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool
from starlette.types import Receive

from ingest.database import RETRIABLE_ERRORS, QueryTimedOut, unavailable
from ingest.errors import ClientClosedRequest
from ingest.stats_expect import FACTS, Facts, expect, has_choices, held
from ingest.stats_params import BreakdownRequest, StatsRequest, TimeseriesRequest
from ingest.stats_plan import plan_aggregate, plan_breakdown, plan_timeseries
from ingest.stats_plan_cost import costly
from ingest.stats_plan_parts import ExactVisitors, Plan, Statement, ValueVisitors
from ingest.stats_sql import aggregate_sql, exact_visitors_sql, series_sql
from ingest.stats_sql_breakdown import breakdown_sql, value_visitors_sql
from ingest.stats_sql_context import (
    context_ranking_sql,
    context_series_sql,
    context_totals_sql,
    props_ranking_sql,
    raw_ranking_sql,
    raw_series_sql,
    raw_totals_sql,
)

Pool = AsyncConnectionPool[psycopg.AsyncConnection[TupleRow]]
Row = tuple[Any, ...]
T = TypeVar("T")


class RawReadsBusy(Exception):
    """Every slot of this process for statements over raw events is taken."""


class RawQueryTimedOut(QueryTimedOut):
    """A statement over raw events ran past the raw statement_timeout (or a lock wait)."""


class RawReads:
    """The share of the pool statements over raw events may hold in one process: at most
    `limit` at once, each under `statement_timeout_ms` (0: the connection's own)."""

    def __init__(self, limit: int, statement_timeout_ms: int) -> None:
        self.limit = limit
        self.statement_timeout_ms = statement_timeout_ms
        self.running = 0

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Holds one slot for the block; raises RawReadsBusy at once when none is free (a
        waiting request would hold its client and its task for nothing: the slots are taken
        by statements that take seconds)."""
        if self.running >= self.limit:
            raise RawReadsBusy(f"{self.running} of {self.limit} raw-event statements running")
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1


class CostlyBusy(Exception):
    """A costly plan waited its longest for one of this process's slots for them, or found
    the queue full."""

    def __init__(self, reason: str, limit: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.limit = limit


class CostlyPlans:
    """The slots of one process for costly plans (ingest/stats_plan_cost.py): at most `limit`
    run at once; the next ones wait their turn, first come first served, for at most `wait_s`,
    and at most `max_waiting` of them (further ones are refused at once). Other plans never
    take a slot, so they never wait behind a costly one."""

    def __init__(self, limit: int, wait_s: float, max_waiting: int) -> None:
        self.limit = limit
        self.wait_s = wait_s
        self.max_waiting = max_waiting
        self.waiting = 0
        self._slots = asyncio.Semaphore(limit)
        # A client holds at most all slots but one (one if there is one): its further costly
        # plans wait for its own, so another client always finds a slot it cannot take,
        # while a dashboard's few questions at once still run side by side. Entries live
        # while a plan of theirs does.
        self.per_client = max(1, limit - 1)
        self._clients: dict[str, tuple[asyncio.Semaphore, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def slot(self, reason: str, client: str = "") -> AsyncIterator[None]:
        """Holds one slot for the block, waiting at most `wait_s` for it (and, when the
        client already holds its share, for one of its own plans to end); raises CostlyBusy
        when the wait runs out or `max_waiting` others are already waiting."""
        if self._slots.locked() and self.waiting >= self.max_waiting:
            raise CostlyBusy(reason, self.limit)
        turn, users = self._clients.setdefault(client, (asyncio.Semaphore(self.per_client), [0]))
        users[0] += 1
        self.waiting += 1
        own = shared = False
        try:
            try:
                async with asyncio.timeout(self.wait_s):
                    await turn.acquire()
                    own = True
                    await self._slots.acquire()
                    shared = True
            except TimeoutError:
                raise CostlyBusy(reason, self.limit) from None
            finally:
                self.waiting -= 1
            yield
        finally:
            if shared:
                self._slots.release()
            if own:
                turn.release()
            users[0] -= 1
            if not users[0]:
                del self._clients[client]


# The CostlyPlans of the app serving the request (set by ingest/stats_routes.py); None:
# costly plans run like the others.
COSTLY: ContextVar[CostlyPlans | None] = ContextVar("costly_plans", default=None)


# The client asking (its rate-limit bucket, ingest/access.py), for its share of COSTLY.
COSTLY_CLIENT: ContextVar[str] = ContextVar("costly_client", default="")


@contextlib.asynccontextmanager
async def _admitted(plan: Plan) -> AsyncIterator[None]:
    """The block with a slot of COSTLY held when `plan` is costly, else as it is."""
    plans = COSTLY.get()
    reason = costly(plan) if plans is not None else None
    if plans is None or reason is None:
        yield
        return
    async with plans.slot(reason, COSTLY_CLIENT.get()):
        yield


# The RawReads of the app serving the request (set by ingest/stats_routes.py); None: raw
# statements run like the others.
RAW_READS: ContextVar[RawReads | None] = ContextVar("raw_reads", default=None)

# A parameter, not SET LOCAL's literal: set_config(..., true) lasts until the transaction ends.
_RAW_TIMEOUT = "SELECT set_config('statement_timeout', %(timeout)s, true)"


def is_raw(statement: Statement) -> bool:
    """Whether a statement reads raw events over its whole range. Rollup forms whose edges
    (the partial UTC days of another zone's range) are raw events are not counted: the
    dashboard asks six of them at once in such a zone, and two slots would refuse four
    (docs/decisions/0024-every-zone-bounded.md)."""
    return statement.form.startswith("raw ")


async def fetch(pool: Pool, query: Any, params: dict[str, Any]) -> list[Row]:
    """Waits for a connection and one statement's rows."""
    try:
        async with pool.connection() as conn:
            cur = await conn.execute(query, params, prepare=True)
            return await cur.fetchall()
    except RETRIABLE_ERRORS as exc:
        raise unavailable(exc) from exc


async def fetch_raw(pool: Pool, query: Any, params: dict[str, Any]) -> list[Row]:
    """`fetch` for a statement over raw events: first takes a slot of RAW_READS (raising
    RawReadsBusy when none is free, without waiting) and runs under its statement_timeout
    (raising RawQueryTimedOut past it). Without RAW_READS set, the same as `fetch`."""
    reads = RAW_READS.get()
    if reads is None:
        return await fetch(pool, query, params)
    with reads.slot():
        try:
            async with pool.connection() as conn, conn.transaction():
                if reads.statement_timeout_ms:
                    await conn.execute(_RAW_TIMEOUT, {"timeout": str(reads.statement_timeout_ms)})
                cur = await conn.execute(query, params, prepare=True)
                return await cur.fetchall()
        except RETRIABLE_ERRORS as exc:
            error = unavailable(exc)
            if isinstance(error, QueryTimedOut):
                raise RawQueryTimedOut(str(exc)) from exc
            raise error from exc


Build = Callable[[Statement], tuple[Any, dict[str, Any]]]


async def answer(
    pool: Pool, site_id: str, timezone: str, planned: Statement, build: Build
) -> list[Row]:
    """Waits for the rows of the planned statement, `build` making its SQL.

    A statement with choices is sent holding only the branches the facts guessed for
    (site, zone) select (ingest/stats_expect.py), every branch still gated in SQL; when its
    snapshot's facts select other branches, it is asked again holding every branch: the
    rows always come from the branches the statement's own snapshot selects."""
    run = fetch_raw if is_raw(planned) else fetch
    if not has_choices(planned.parts):
        query, params = build(planned)
        return await run(pool, query, params)
    known = FACTS.guess(site_id, timezone)
    sent = planned if known is None else expect(planned, known)
    query, params = build(sent)
    rows = await run(pool, query, params)
    seen = Facts(kept=rows[0][0], sealed_before=rows[0][1])
    FACTS.put(site_id, timezone, seen)
    if not held(sent, planned, seen):
        query, params = build(planned)
        rows = await run(pool, query, params)
    return [row[2:] for row in rows if row[2] is not None]


async def aggregate_values(
    pool: Pool, request: StatsRequest, exact_max_rows: int
) -> tuple[dict[str, int], bool]:
    """(views, visitors, events) over the range, and whether visitors is approximate.

    Visitors are exact when the plan names ExactVisitors: one day reads the daily count from
    the first statement; several days count distinct visitors in daily_visitor_ids when the first
    statement's estimate of that set is at most `exact_max_rows` rows."""
    plan = plan_aggregate(request, exact_max_rows)
    async with _admitted(plan):
        r = request.range
        [(views, events, sketched, exact_rows)] = await answer(
            pool,
            request.site_id,
            r.timezone,
            plan.answer,
            lambda s: (
                raw_totals_sql(s, request)
                if s.form == "raw totals"
                else context_totals_sql(s, request)
                if s.form == "context totals"
                else aggregate_sql(s, request.site_id, r.timezone, request.filters)
            ),
        )
        values = {"views": int(views), "visitors": round(sketched), "events": int(events)}
        approximate = True
        if isinstance(plan.then, ExactVisitors):
            count = (plan.then.days.end - plan.then.days.first).days
            if exact_rows is not None and count == 1:
                values["visitors"], approximate = int(exact_rows), False
            elif (exact_rows if exact_rows is not None else sketched * count) <= exact_max_rows:
                query, params = exact_visitors_sql(plan.then.parts, request.site_id)
                [(exact,)] = await fetch(pool, query, params)
                values["visitors"], approximate = int(exact), False
        return values, approximate


async def timeseries_rows(pool: Pool, request: TimeseriesRequest) -> tuple[list[Row], bool]:
    """Rows (local period start, views, events, visitors), and whether visitors are exact."""
    plan = plan_timeseries(request)
    async with _admitted(plan):
        stats = request.stats
        zone = stats.range.timezone
        rows = await answer(
            pool,
            stats.site_id,
            zone,
            plan.answer,
            lambda s: (
                raw_series_sql(s, request)
                if s.form == "raw series"
                else context_series_sql(s, request)
                if s.form == "context series"
                else series_sql(s, stats.site_id, zone, request.interval, stats.filters)
            ),
        )
        return rows, plan.exact


_BREAKDOWN_SQL = {
    "context ranking": context_ranking_sql,
    "raw ranking": raw_ranking_sql,
    "props ranking": props_ranking_sql,
    "raw props ranking": props_ranking_sql,
}


async def breakdown_rows(pool: Pool, request: BreakdownRequest) -> list[Row]:
    """Rows (value, views, events, visitors) of the page, (key, value, views, events,
    visitors) for custom properties; the plan's ValueVisitors follow-up fills in the visitors
    its answering branch left out."""
    plan = plan_breakdown(request, dt.datetime.now(dt.UTC).date())
    async with _admitted(plan):
        stats = request.stats
        rows = await answer(
            pool,
            stats.site_id,
            stats.range.timezone,
            plan.answer,
            lambda s: _BREAKDOWN_SQL.get(s.form, breakdown_sql)(s, request),
        )
        if isinstance(plan.then, ValueVisitors) and any(row[3] is None for row in rows):
            more, more_params = value_visitors_sql(plan.then, request, [row[0] for row in rows])
            visitors: dict[Any, Any] = dict(await fetch(pool, more, more_params))
            rows = [
                (value, views, events, visitors.get(value, 0)) for value, views, events, _ in rows
            ]
        return rows


async def _until_disconnected(receive: Receive) -> None:
    """Returns when the server reports the client gone (a GET's only other message is its
    empty body)."""
    while (await receive())["type"] != "http.disconnect":
        pass


# Most stats queries answer within a few ms: watching for a disconnect starts only after this
# long, so they pay for a timer, not for a task.
WATCH_DISCONNECT_AFTER_S = 0.05


async def cancel_on_disconnect(receive: Receive, work: Awaitable[T]) -> T:
    """Awaits `work` in the calling task; once it has taken WATCH_DISCONNECT_AFTER_S, a
    watcher task waits for the client to disconnect, and if it does, the calling task is
    cancelled (psycopg then cancels its statement in the server) and ClientClosedRequest
    raised."""
    task = asyncio.current_task()
    assert task is not None
    watchers: list[asyncio.Task[None]] = []
    state = {"waiting": True, "disconnected": False}

    def cancel(watcher: asyncio.Task[None]) -> None:
        if watcher.cancelled() or watcher.exception() is not None:
            return
        # Done callbacks run on a later turn: `waiting` says whether work is still awaited.
        if state["waiting"]:
            state["disconnected"] = True
            task.cancel()

    def watch() -> None:
        watcher = asyncio.create_task(_until_disconnected(receive), name="stats-disconnect")
        watcher.add_done_callback(cancel)
        watchers.append(watcher)

    timer = asyncio.get_running_loop().call_later(WATCH_DISCONNECT_AFTER_S, watch)
    try:
        return await work
    except asyncio.CancelledError:
        if not state["disconnected"]:
            raise
        task.uncancel()
        raise ClientClosedRequest("the client disconnected; its query was cancelled") from None
    finally:
        state["waiting"] = False
        timer.cancel()
        for watcher in watchers:
            watcher.cancel()
