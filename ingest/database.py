"""The API's PostgreSQL connection pools, the stats pool and the salt keeper's connection:
the only module of the API that opens connections.

Only the stats endpoints need the database; event ingest never does, so `/event` keeps
answering 202 while PostgreSQL is down.

Every connection runs with a `statement_timeout` (no request holds a connection longer) and
a `lock_timeout` (a read queued behind DDL, such as the consumer creating or dropping a day
partition, gives up instead of holding its connection and queueing more readers behind it).
Both are set once per connection, at connect: no request pays a round trip for them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import psycopg
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ingest.settings import Settings

log = logging.getLogger(__name__)


class DatabaseUnavailable(Exception):
    """No connection could be had in time, or the server went away mid-query."""


class QueryTimedOut(DatabaseUnavailable):
    """The statement was cancelled by statement_timeout (SQLSTATE 57014) or gave up waiting
    for a lock (55P03): the database is up but the request is too costly right now."""


Configure = Callable[[psycopg.AsyncConnection[TupleRow]], Awaitable[None]]


def make_pool(
    settings: Settings, configure: Configure | None = None
) -> AsyncConnectionPool[psycopg.AsyncConnection[TupleRow]]:
    """The stats pool; `configure` runs on each new connection before it serves (the app's
    warm-up, ingest/stats_warm.py)."""
    return AsyncConnectionPool(
        settings.database_url,
        # A smaller DB_POOL_MAX_SIZE alone lowers the connections kept open too.
        min_size=min(settings.db_pool_min_size, settings.db_pool_max_size),
        max_size=settings.db_pool_max_size,
        timeout=settings.db_timeout_s,
        kwargs={
            "autocommit": True,
            "application_name": "analytics-api",
            "options": connection_options(
                settings.stats_statement_timeout_ms, settings.stats_lock_timeout_ms
            ),
        },
        configure=configure,
        open=False,
        name="api",
    )


# How often `keep_pool_filled` checks the stats pool's idle connections. Not on every loan
# (psycopg_pool's `check=`): that round trip added about 0.5 ms to every question's p99.
POOL_CHECK_INTERVAL_S = 5.0


async def keep_pool_filled(
    pool: AsyncConnectionPool[psycopg.AsyncConnection[TupleRow]],
    interval_s: float = POOL_CHECK_INTERVAL_S,
) -> None:
    """Runs until cancelled: checks the pool's idle connections every `interval_s`, replacing
    dead ones and growing it back to its kept size. After PostgreSQL restarts, every kept
    connection is dead: each would fail one question. And the pool gives up reconnecting
    after five minutes of failures, then regrows only when a question asks: after a longer
    outage, the first page would wait for new connections and their warm-ups. The checks
    also keep idle connections from being cut by a firewall's idle timeout."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await pool.check()
        except Exception as exc:  # a failed check changes nothing: the next one retries
            log.debug("stats pool check failed: %s", exc)


def make_salt_pool(settings: Settings) -> AsyncConnectionPool[psycopg.AsyncConnection[TupleRow]]:
    """The visitor salt keeper's own connection (ingest/salts.py): stats questions holding
    every connection of the stats pool cannot keep the day's salt from being made or loaded."""
    return AsyncConnectionPool(
        settings.database_url,
        min_size=1,
        max_size=1,
        timeout=settings.db_timeout_s,
        kwargs={
            "autocommit": True,
            "application_name": "analytics-api-salts",
            "options": connection_options(
                settings.stats_statement_timeout_ms, settings.stats_lock_timeout_ms
            ),
        },
        open=False,
        name="api-salts",
    )


def connection_options(statement_timeout_ms: int, lock_timeout_ms: int) -> str:
    """The server settings of every API connection (0 turns a timeout off)."""
    # Stats queries read a few thousand rollup rows: starting parallel workers, or JIT
    # compiling a plan whose estimate crosses jit_above_cost (seen on a misestimated one-row
    # table), would cost more than it saves (docs/decisions, record 14).
    # TimeZone=UTC: what the statements compute is UTC days and hours, whatever zone the
    # server, database or role was given.
    return (
        "-c max_parallel_workers_per_gather=0 -c jit=off -c TimeZone=UTC"
        f" -c statement_timeout={statement_timeout_ms} -c lock_timeout={lock_timeout_ms}"
    )


RETRIABLE_ERRORS = (PoolTimeout, psycopg.OperationalError)


def unavailable(exc: Exception) -> DatabaseUnavailable:
    """What a RETRIABLE_ERRORS exception means for the caller."""
    if isinstance(exc, psycopg.errors.QueryCanceled | psycopg.errors.LockNotAvailable):
        return QueryTimedOut(str(exc))
    return DatabaseUnavailable(str(exc))
