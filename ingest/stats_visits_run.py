"""Running visit questions (ingest/stats_visits.py) on the stats pool.

Statements over buckets and daily dimension rows read rollups and run like every other stats
statement; those reading visits rows run as raw reads do (ingest/stats_run.py fetch_raw: a
slot of STATS_RAW_CONCURRENCY, STATS_RAW_STATEMENT_TIMEOUT_MS), since a range of visits
grows with the site's traffic.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from ingest.stats_params import BreakdownRequest, StatsRequest, TimeseriesRequest
from ingest.stats_run import Pool, Row, fetch, fetch_raw
from ingest.stats_visits import (
    VisitPart,
    VisitSums,
    plan_visit_breakdown,
    plan_visit_series,
    plan_visit_totals,
    reads_visit_rows,
    sums,
    visit_breakdown_sql,
    visit_series_sql,
    visit_totals_sql,
)


async def _run(
    pool: Pool, parts: tuple[VisitPart, ...], built: tuple[Any, dict[str, Any]]
) -> list[Row]:
    query, params = built
    run = fetch_raw if reads_visit_rows(parts) else fetch
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
    """Waits for one page of the dimension's values and their sums, in the page's order."""
    parts = plan_visit_breakdown(request)
    rows = await _run(pool, parts, visit_breakdown_sql(request, parts))
    return [(row[0], sums(row[1:])) for row in rows]
