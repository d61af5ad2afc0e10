"""Each new stats connection asks the dashboard's default view once before it serves anyone.

A fresh PostgreSQL backend knows nothing of the tables yet: its first statements load every
table's and index's description and column statistics into its own caches while planning,
and that costs a dashboard's first load several times a later one's (docs/benchmarks.md,
"Warmed connections"). Connections are opened at start and again each time the pool replaces
one (psycopg_pool's max_lifetime), so each one pays it once, here, instead of a visitor.

The view is asked in UTC, a whole-hour zone and a :45 zone, which between them read every
rollup the view's plans read, for a site id longer than any event may carry (`WARM_SITE`:
nothing can be stored under it, so no one's traffic makes the warm-up costly). Its answers
are dropped and nothing is noted (no zone request, no kept answer). Then, once a process,
the zones sites keep seed the facts the planner guesses from (ingest/stats_expect.py), so
that after a restart a kept zone's first question is not guessed unkept. Last, the two
statements a page sends besides its questions: the kept answers' version read (unless
STATS_ANSWER_CACHE_MB=0) and the realtime count. It is best effort: any error ends the
warm-up of that connection (logged once a process at WARNING) and leaves it as it is.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast

import msgspec
import psycopg
from psycopg.rows import TupleRow

from core.settings import MAX_FUTURE_S
from ingest import stats_imported, stats_params
from ingest.database import Configure
from ingest.settings import Settings
from ingest.stats_answers import VERSION_SQL
from ingest.stats_days import data_horizon
from ingest.stats_expect import FACTS, Facts
from ingest.stats_params import MAX_SITE_ID_BYTES
from ingest.stats_realtime import current_visitors
from ingest.stats_run import Pool, fetch

log = logging.getLogger(__name__)

# Parsed as a valid id, then asked as one no event can carry (MAX_SITE_ID_BYTES + 1).
_PARSED_SITE = "stats-warm-up"
WARM_SITE = _PARSED_SITE + "~" * (MAX_SITE_ID_BYTES + 1 - len(_PARSED_SITE))
KEPT_ZONES_SQL = """
SELECT z.site_id, z.timezone, (SELECT nullif(sealed_before, '-infinity') FROM sealed_days)
FROM site_zones z LIMIT %(limit)s
"""
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
        await warm(conn, settings.stats_exact_visitors_max_rows, settings.max_future_s)

    return warm_connection


@dataclass
class _Process:
    """What this process's warm-ups have done once: logged a failure at WARNING (later ones
    go to DEBUG), seeded the kept zones."""

    warned: bool = False
    seeded: bool = False


_ONCE = _Process()


async def warm(
    conn: psycopg.AsyncConnection[Any],
    exact_max_rows: int,
    max_future_s: float = MAX_FUTURE_S.default,
) -> None:
    """Asks the dashboard's default view on `conn` in each of WARM_ZONES, then loads the
    zones sites keep into the planner's facts."""
    pool = cast(Pool, _OneConnection(conn))
    now = dt.datetime.now(dt.UTC)
    step = "the kept zones"
    try:
        # As the routes parse requests: the same statements get prepared.
        horizon = data_horizon(now, max_future_s)
        for zone in WARM_ZONES:
            for name, route, asked in DASHBOARD_QUESTIONS:
                step = f"{name} in {zone}"
                params = {"site_id": _PARSED_SITE, "period": DEFAULT_PERIOD, "timezone": zone}
                await _compute(pool, route, {**params, **asked}, (now, horizon), exact_max_rows)
        step = "the kept zones"
        await _remember_kept_zones(pool)
        step = "the answers' version"
        today = now.date()
        await fetch(pool, VERSION_SQL, {"sites": [WARM_SITE], "firsts": [today], "lasts": [today]})
        step = "the realtime count"
        await current_visitors(pool, WARM_SITE, now)
    # Best effort, whatever went wrong: the connection's first visitor pays instead.
    except Exception as exc:
        level = logging.DEBUG if _ONCE.warned else logging.WARNING
        _ONCE.warned = True
        log.log(level, "stats warm-up of a new connection stopped at %s: %r", step, exc)


async def _compute(
    pool: Pool,
    route: str,
    params: dict[str, str],
    when: tuple[dt.datetime, dt.datetime],
    exact_max_rows: int,
) -> None:
    now, horizon = when
    if route == "aggregate":
        parsed = _unstorable(stats_params.parse_stats(params, now=now, horizon=horizon))
        await stats_imported.aggregate(pool, parsed, params, exact_max_rows)
    elif route == "timeseries":
        series = stats_params.parse_timeseries(params, now=now, horizon=horizon)
        series = msgspec.structs.replace(series, stats=_unstorable(series.stats))
        await stats_imported.timeseries(pool, series, params)
    else:
        breakdown = stats_params.parse_breakdown(params, now=now, horizon=horizon)
        breakdown = msgspec.structs.replace(breakdown, stats=_unstorable(breakdown.stats))
        await stats_imported.breakdown(pool, breakdown, params)


def _unstorable(request: stats_params.StatsRequest) -> stats_params.StatsRequest:
    return msgspec.structs.replace(request, site_id=WARM_SITE)


async def _remember_kept_zones(pool: Pool) -> None:
    """Once a process: the (site, zone) pairs site_zones holds, up to half the facts cache,
    seeded as kept with the database's seal (never over facts a request has reported)."""
    if _ONCE.seeded:
        return
    for site_id, timezone, sealed_before in await fetch(
        pool, KEPT_ZONES_SQL, {"limit": FACTS.size // 2}
    ):
        FACTS.seed(site_id, timezone, Facts(kept=True, sealed_before=sealed_before))
    _ONCE.seeded = True
