"""The base contract's `GET /stats`: one site's page views, unique users and top paths on one
UTC day, kept apart from the richer API's steps (ingest/stats_params.py … stats_response.py).

Answers come from the rollup tables the consumer maintains, never from a scan of raw events,
and keep the original service's JSON shape byte for byte.

With `timezone` (an IANA name) the day is that zone's local day. Where its midnights are not
UTC midnights, the answer comes from the 15-minute rollups (ingest/stats_plan.py); unique users
are then a sketch's count: exact for small sets, within about 2% for large ones.
"""

from __future__ import annotations

import datetime as dt

import msgspec
import psycopg
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from ingest import stats_run
from ingest.database import RETRIABLE_ERRORS, unavailable
from ingest.errors import BadRequest
from ingest.stats_days import DateRange, make_range
from ingest.stats_params import (
    BreakdownRequest,
    StatsRequest,
    parse_date,
    parse_site,
    parse_timezone,
)

TOP_PATHS_LIMIT = 3

# One round trip: the day's totals (absent row -> NULLs) and its top paths as two arrays.
# Ties are broken by path so that answers are stable; daily_paths_top serves the order.
DAILY_STATS_SQL = """
SELECT s.page_views, s.visitors, top.paths, top.page_views
FROM (SELECT 1) AS one
LEFT JOIN daily_stats s ON s.site_id = %(site)s AND s.day = %(day)s
CROSS JOIN LATERAL (
    SELECT array_agg(path ORDER BY page_views DESC, path) AS paths,
           array_agg(page_views ORDER BY page_views DESC, path) AS page_views
    FROM (
        SELECT path, page_views FROM daily_paths
        WHERE site_id = %(site)s AND day = %(day)s AND page_views > 0
        ORDER BY page_views DESC, path ASC
        LIMIT %(limit)s
    ) t
) top
"""


class PathViews(msgspec.Struct):
    path: str
    views: int


class DailyStats(msgspec.Struct):
    """The original service's response; field order is part of the byte-compatible contract."""

    site_id: str
    date: str
    total_views: int
    unique_users: int
    top_paths: list[PathViews]


class StatsQuery(msgspec.Struct, frozen=True):
    site_id: str
    day: dt.date
    timezone: str = "UTC"


def parse_stats_query(params: dict[str, str]) -> StatsQuery:
    """Validates `site_id`, `date` (YYYY-MM-DD, a real calendar day in the supported range)
    and the optional `timezone` (IANA name, default UTC), or raises BadRequest naming the
    field."""
    site_id = parse_site(params)
    raw_date = params.get("date", "")
    if not raw_date:
        raise BadRequest("`date` query parameter is required (YYYY-MM-DD)", field="date")
    day = parse_date(raw_date, "date")
    return StatsQuery(site_id, day, parse_timezone(params))


async def daily_stats(
    pool: AsyncConnectionPool[psycopg.AsyncConnection[TupleRow]], query: StatsQuery
) -> DailyStats:
    """Reads one (site, day) from the rollups; a site or day with no data answers zeros.

    Raises DatabaseUnavailable when PostgreSQL cannot answer within the pool's timeout.
    """
    if query.timezone != "UTC":
        day_range = make_range(query.day, query.day, query.timezone)
        if not day_range.utc_aligned:
            return await _local_day_stats(pool, query, day_range)
    params = {"site": query.site_id, "day": query.day, "limit": TOP_PATHS_LIMIT}
    try:
        async with pool.connection() as conn:
            cur = await conn.execute(DAILY_STATS_SQL, params, prepare=True)
            row = await cur.fetchone()
    except RETRIABLE_ERRORS as exc:
        raise unavailable(exc) from exc
    views, users, paths, counts = row if row else (None, None, None, None)
    views, users = views or 0, users or 0
    paths = list(zip(paths or [], counts or [], strict=True))
    return DailyStats(
        site_id=query.site_id,
        date=query.day.isoformat(),
        total_views=views,
        unique_users=users,
        top_paths=[PathViews(path, count) for path, count in paths],
    )


async def _local_day_stats(
    pool: AsyncConnectionPool[psycopg.AsyncConnection[TupleRow]],
    query: StatsQuery,
    day_range: DateRange,
) -> DailyStats:
    request = StatsRequest(query.site_id, day_range, ("views", "visitors"))
    values, _ = await stats_run.aggregate_values(pool, request, exact_max_rows=0)
    top = BreakdownRequest(
        StatsRequest(query.site_id, day_range, ("views",)), "path", TOP_PATHS_LIMIT, 1
    )
    rows = await stats_run.breakdown_rows(pool, top)
    return DailyStats(
        site_id=query.site_id,
        date=query.day.isoformat(),
        total_views=values["views"],
        unique_users=values["visitors"],
        top_paths=[PathViews(path, int(views)) for path, views, _, _ in rows],
    )
