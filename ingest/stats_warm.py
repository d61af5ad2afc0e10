"""Each new stats connection asks the dashboard's default view once before it serves anyone.

A fresh PostgreSQL backend knows nothing of the tables yet: its first statements load every
table's and index's description and column statistics into its own caches while planning,
and that costs a dashboard's first load several times a later one's (docs/benchmarks.md,
"dashboard"). Connections are opened at start and again each time the pool replaces one
(psycopg_pool's max_lifetime), so each one pays it once, here, instead of a visitor.

The view is asked for a site no one tracks (`WARM_SITE`) in UTC, a whole-hour zone and a
:45 zone, which between them read every rollup the view's plans read. Its answers are
dropped and nothing is noted (no zone request, no kept answer). It is best effort: any error
ends the warm-up of that connection and leaves it as it is.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import psycopg
from psycopg.rows import TupleRow

from ingest import stats_imported, stats_params
from ingest.database import Configure
from ingest.settings import Settings
from ingest.stats_run import Pool

log = logging.getLogger(__name__)

WARM_SITE = "stats-warm-up.invalid"
WARM_ZONES = ("UTC", "Europe/Berlin", "Asia/Kathmandu")
DEFAULT_PERIOD = "30d"
_TOP10 = {"metrics": "views,visitors", "limit": "10"}
_TOTALS = "visitors,visits,views,views_per_visit,bounce_rate,visit_duration,events"
# refresh() in ingest/dashboard/dashboard.js with its default tabs: totals, the chart, the
# sources and pages tabs, custom events, and the four context tables.
DASHBOARD_QUESTIONS: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("totals", "aggregate", {"metrics": _TOTALS}),
    ("chart", "timeseries", {"interval": "day", "metrics": "views"}),
    (
        "sources",
        "breakdown",
        {"property": "visit:source", "metrics": "visitors,visits,bounce_rate", "limit": "10"},
    ),
    ("pages", "breakdown", {"property": "event:page", **_TOP10}),
    (
        "custom events",
        "breakdown",
        {
            "property": "event:name",
            "filters": "event:name!=page_view",
            "metrics": "events,visitors",
            "limit": "10",
        },
    ),
    ("devices", "breakdown", {"property": "visit:device", **_TOP10}),
    ("browsers", "breakdown", {"property": "visit:browser", **_TOP10}),
    ("systems", "breakdown", {"property": "visit:os", **_TOP10}),
    ("countries", "breakdown", {"property": "visit:country", **_TOP10}),
)


class _OneConnection:
    """What the stats functions take of a pool (`connection()`), lending one connection."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._conn = conn

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        yield self._conn


def configure(settings: Settings) -> Configure | None:
    """The stats pool's `configure` callback: `warm`, unless STATS_WARM_CONNECTIONS=0."""
    if not settings.stats_warm_connections:
        return None

    async def warm_connection(conn: psycopg.AsyncConnection[TupleRow]) -> None:
        await warm(conn, settings.stats_exact_visitors_max_rows)

    return warm_connection


async def warm(conn: psycopg.AsyncConnection[Any], exact_max_rows: int) -> None:
    """Asks the dashboard's default view on `conn` in each of WARM_ZONES."""
    pool = cast(Pool, _OneConnection(conn))
    now = dt.datetime.now(dt.UTC)
    for zone in WARM_ZONES:
        for name, route, asked in DASHBOARD_QUESTIONS:
            params = {"site_id": WARM_SITE, "period": DEFAULT_PERIOD, "timezone": zone, **asked}
            try:
                await _compute(pool, route, params, now, exact_max_rows)
            # Best effort, whatever went wrong: the connection's first visitor pays instead.
            except Exception as exc:
                log.debug("stats warm-up stopped at %s in %s: %s", name, zone, exc)
                return


async def _compute(
    pool: Pool, route: str, params: dict[str, str], now: dt.datetime, exact_max_rows: int
) -> None:
    if route == "aggregate":
        parsed = stats_params.parse_stats(params, now=now)
        await stats_imported.aggregate(pool, parsed, params, exact_max_rows)
    elif route == "timeseries":
        series = stats_params.parse_timeseries(params, now=now)
        await stats_imported.timeseries(pool, series, params)
    else:
        breakdown = stats_params.parse_breakdown(params, now=now)
        await stats_imported.breakdown(pool, breakdown, params)
