"""Running the richer stats queries (ingest/query.py, ingest/query_sql.py) on the pool,
shaping their answers.

Every function reads rollups only and raises DatabaseUnavailable when PostgreSQL cannot
answer within the pool's timeout (QueryTimedOut when a statement ran past the connection's
statement_timeout or lock_timeout). A site or range without data answers zeros.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from ingest import query_local
from ingest.database import RETRIABLE_ERRORS, unavailable
from ingest.query import BreakdownRequest, StatsRequest, TimeseriesRequest
from ingest.query_sql import (
    EXACT_VISITORS_SQL,
    aggregate_sql,
    breakdown_sql,
    breakdown_visitors_sql,
    exact_visitors_possible,
    split,
    timeseries_sql,
)

Pool = AsyncConnectionPool[psycopg.AsyncConnection[TupleRow]]
Json = dict[str, Any]


async def _fetch(pool: Pool, statements: list[tuple[Any, Any]]) -> list[list[tuple[Any, ...]]]:
    try:
        async with pool.connection() as conn:
            results = []
            for query, params in statements:
                cur = await conn.execute(query, params, prepare=True)
                results.append(await cur.fetchall())
            return results
    except RETRIABLE_ERRORS as exc:
        raise unavailable(exc) from exc


async def _kept_zone_rows(
    pool: Pool, statement: tuple[str, dict[str, Any]] | None
) -> list[tuple[Any, ...]] | None:
    """The rows of an ingest/query_local.py statement without its first column, or None when
    there is no such statement or it cannot answer (the site does not keep the request's
    zone; for a sealed month's statement, the month is not sealed)."""
    if statement is None:
        return None
    [rows] = await _fetch(pool, [statement])
    if not rows[0][0]:
        return None
    return [row[1:] for row in rows if row[1] is not None]


def _envelope(request: StatsRequest) -> Json:
    return {
        "site_id": request.site_id,
        "timezone": request.range.timezone,
        "from": request.range.first.isoformat(),
        "to": request.range.last.isoformat(),
    }


async def aggregate_values(
    pool: Pool, request: StatsRequest, exact_max_rows: int
) -> tuple[dict[str, int], bool]:
    """(views, visitors, events) over the range, and whether visitors is approximate.

    Visitors are exact when the range is whole UTC days and the filters select all page
    views: one day reads the daily count; several days count distinct users in daily_users
    when that set holds at most `exact_max_rows` rows. Otherwise a union of sketches answers:
    of the site's zone rollups when it keeps the request's zone (ingest/query_local.py).
    """
    if (local_rows := await _kept_zone_rows(pool, query_local.aggregate_sql(request))) is not None:
        [(views, events, sketched)] = local_rows
        return {"views": int(views), "visitors": round(sketched), "events": int(events)}, True
    query, params = aggregate_sql(request)
    [[(views, events, sketched, exact_rows)]] = await _fetch(pool, [(query, params)])
    values = {"views": int(views), "visitors": round(sketched), "events": int(events)}
    approximate = True
    pieces = split(request.range.start, request.range.end)
    if "visitors" in request.metrics and exact_visitors_possible(request, pieces):
        days = (pieces.day_to - pieces.day_from).days
        if exact_rows is not None and days == 1:
            values["visitors"], approximate = int(exact_rows), False
        elif (exact_rows if exact_rows is not None else sketched * days) <= exact_max_rows:
            [[(exact,)]] = await _fetch(pool, [(EXACT_VISITORS_SQL, params)])
            values["visitors"], approximate = int(exact), False
    return values, approximate


async def aggregate(pool: Pool, request: StatsRequest, exact_max_rows: int) -> Json:
    values, approximate = await aggregate_values(pool, request, exact_max_rows)
    body = _envelope(request)
    body["results"] = {m: {"value": values[m]} for m in request.metrics}
    if "visitors" in request.metrics:
        body["visitors_approximate"] = approximate
    return body


def _periods(request: TimeseriesRequest) -> list[dt.datetime]:
    first, last = request.stats.range.first, request.stats.range.last
    step = dt.timedelta(hours=1) if request.interval == "hour" else dt.timedelta(days=1)
    t = dt.datetime.combine(first, dt.time(0))
    end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(0))
    periods = []
    while t < end:
        periods.append(t)
        t += step
    return periods


async def timeseries(pool: Pool, request: TimeseriesRequest) -> Json:
    """One entry per local day or hour of the range, zeros where nothing happened."""
    rows = await _kept_zone_rows(pool, query_local.timeseries_sql(request))
    exact = False
    if rows is None:
        query, params, exact = timeseries_sql(request)
        [rows] = await _fetch(pool, [(query, params)])
    found = {t: (views, events, visitors) for t, views, events, visitors in rows}
    results: list[Json] = []
    for t in _periods(request):
        views, events, visitors = found.get(t, (0, 0, 0))
        values = {"views": int(views), "visitors": round(visitors), "events": int(events)}
        label = t.date().isoformat() if request.interval == "day" else f"{t:%Y-%m-%d %H:%M:%S}"
        entry: Json = {"date": label}
        entry.update((m, values[m]) for m in request.stats.metrics)
        results.append(entry)
    body = _envelope(request.stats)
    body["interval"] = request.interval
    body["results"] = results
    if "visitors" in request.stats.metrics:
        body["visitors_approximate"] = not exact
    return body


async def breakdown_rows(pool: Pool, request: BreakdownRequest) -> list[Json]:
    today = dt.datetime.now(dt.UTC).date()
    rows = await _kept_zone_rows(pool, query_local.sealed_month_sql(request, today))
    if rows is None:
        rows = await _kept_zone_rows(pool, query_local.breakdown_sql(request))
    if rows is None:
        query, params = breakdown_sql(request)
        [rows] = await _fetch(pool, [(query, params)])
    if "visitors" in request.stats.metrics and any(row[3] is None for row in rows):
        more, more_params = breakdown_visitors_sql(request, [row[0] for row in rows])
        [visitor_rows] = await _fetch(pool, [(more, more_params)])
        visitors = dict(visitor_rows)
        rows = [(value, views, events, visitors.get(value, 0)) for value, views, events, _ in rows]
    results: list[Json] = []
    for value, views, events, visitors_or_none in rows:
        values = {
            "views": int(views),
            "visitors": round(visitors_or_none or 0),
            "events": int(events),
        }
        entry: Json = {request.dimension: value}
        entry.update((m, values[m]) for m in request.stats.metrics)
        results.append(entry)
    return results


async def breakdown(pool: Pool, request: BreakdownRequest) -> Json:
    body = _envelope(request.stats)
    body["property"] = request.dimension
    body["page"] = request.page
    body["limit"] = request.limit
    body["results"] = await breakdown_rows(pool, request)
    if "visitors" in request.stats.metrics:
        body["visitors_approximate"] = True
    return body
