"""The API's PostgreSQL connection pool: the only module of the API that opens connections.

Only the stats endpoints need the database; event ingest never does, so `/event` keeps
answering 202 while PostgreSQL is down.
"""

from __future__ import annotations

import psycopg
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ingest.settings import Settings


class DatabaseUnavailable(Exception):
    """No connection could be had in time, or the server went away mid-query."""


def make_pool(settings: Settings) -> AsyncConnectionPool[psycopg.AsyncConnection[TupleRow]]:
    return AsyncConnectionPool(
        settings.database_url,
        min_size=settings.db_pool_min_size,
        max_size=settings.db_pool_max_size,
        timeout=settings.db_timeout_s,
        # Stats queries read a few thousand rollup rows: starting parallel workers, or JIT
        # compiling a plan whose estimate crosses jit_above_cost (tens of ms: seen on a
        # misestimated one-row table), would cost more than it saves.
        kwargs={
            "autocommit": True,
            "application_name": "analytics-api",
            "options": "-c max_parallel_workers_per_gather=0 -c jit=off",
        },
        open=False,
        name="api",
    )


RETRIABLE_ERRORS = (PoolTimeout, psycopg.OperationalError)
