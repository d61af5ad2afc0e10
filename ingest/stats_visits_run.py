"""Running visit questions (ingest/stats_visits.py) on the stats pool.

Statements over buckets and daily dimension rows read rollups and run like every other stats
statement; those reading visits rows, or the 15-minute rows of a dimension whose values
clients write, run as raw reads do (ingest/stats_run.py fetch_raw: a slot of
STATS_RAW_CONCURRENCY, STATS_RAW_STATEMENT_TIMEOUT_MS), since what they read grows with the
site's traffic (stats_visits.raw_read).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from ingest import stats_visits_rank as rank
from ingest.stats_params import BreakdownRequest, Metric, StatsRequest, TimeseriesRequest
from ingest.stats_run import Pool, Row, fetch, fetch_raw
from ingest.stats_visits import (
    VisitPart,
    VisitSums,
    plan_visit_breakdown,
    plan_visit_series,
    plan_visit_totals,
    raw_read,
    sums,
    visit_breakdown_sql,
    visit_series_sql,
    visit_totals_sql,
)
from ingest.stats_visits_page import ranks_on_sums, visit_page_sql, visit_visitors_sql


async def _run(
    pool: Pool, parts: tuple[VisitPart, ...], built: tuple[Any, dict[str, Any]]
) -> list[Row]:
    query, params = built
    run = fetch_raw if raw_read(parts) else fetch
    return await run(pool, query, params)


async def visit_totals(pool: Pool, request: StatsRequest) -> VisitSums:
    """Waits for the sums of the visits started in the range that the filters keep."""
    parts = plan_visit_totals(request)
    [row] = await _run(pool, parts, visit_totals_sql(request, parts))
    return sums(row)


async def visit_series(pool: Pool, request: TimeseriesRequest) -> dict[dt.datetime, VisitSums]:
    """Waits for the sums per local period start (periods without visits left out)."""
    parts = plan_visit_series(request)
    rows = await _run(pool, parts, visit_series_sql(request, parts))
    return {row[0]: sums(row[1:]) for row in rows}


async def visit_breakdown(pool: Pool, request: BreakdownRequest) -> list[tuple[str, VisitSums]]:
    """Waits for one page of the dimension's values and their sums, in the page's order.
    Over daily rows, the page is ranked on exact sums and only its values' sketches are
    merged; sorted by visitors, candidates are merged a batch at a time (stats_visits_rank)."""
    parts = plan_visit_breakdown(request)
    if not ranks_on_sums(parts):
        rows = await _run(pool, parts, visit_breakdown_sql(request, parts))
        return [(row[0], sums(row[1:])) for row in rows]
    stats = request.stats
    key = stats.metrics[0]
    offset = request.limit * (request.page - 1)
    if key != "visitors":
        window = rank.page_window(request.limit, offset, "visitors" in stats.metrics)
        return await _window(pool, request, parts, key, window)
    search = rank.VisitorSearch(offset + request.limit)
    step: rank.Window | list[str] | None = search.first()
    while step is not None:
        if isinstance(step, rank.Window):
            search.add_window(step, await _window(pool, request, parts, "visitors", step))
        else:
            built = visit_visitors_sql(request, parts, step)
            search.add_visitors({row[0]: row[1] for row in await _run(pool, parts, built)})
        step = search.next()
    return search.page(offset, request.limit)


async def _window(
    pool: Pool,
    request: BreakdownRequest,
    parts: tuple[VisitPart, ...],
    key: Metric,
    window: rank.Window,
) -> list[tuple[str, VisitSums]]:
    rows = await _run(pool, parts, visit_page_sql(request, parts, key, window))
    return [(row[0], sums(row[1:])) for row in rows]
