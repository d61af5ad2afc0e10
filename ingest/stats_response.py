"""Step 5: the JSON answers of `/api/v1/stats/*`, shaped from a run's rows (ingest/stats_run.py).
A site or range without data answers zeros."""

from __future__ import annotations

import datetime as dt
from typing import Any

from ingest import stats_run
from ingest.stats_params import BreakdownRequest, StatsRequest, TimeseriesRequest
from ingest.stats_run import Pool

Json = dict[str, Any]


def _envelope(request: StatsRequest) -> Json:
    return {
        "site_id": request.site_id,
        "timezone": request.range.timezone,
        "from": request.range.first.isoformat(),
        "to": request.range.last.isoformat(),
    }


async def aggregate(pool: Pool, request: StatsRequest, exact_max_rows: int) -> Json:
    """Waits for the totals (stats_run.aggregate_values)."""
    values, approximate = await stats_run.aggregate_values(pool, request, exact_max_rows)
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
    """Waits for the rows; one entry per local day or hour of the range, zeros where nothing
    happened."""
    rows, exact = await stats_run.timeseries_rows(pool, request)
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


async def breakdown_results(pool: Pool, request: BreakdownRequest) -> list[Json]:
    """Waits for the page's rows; one entry per value, the asked metrics only. A custom
    property's value is under "value" (a key may be named like a metric), with its "key"
    when every key is asked for."""
    results: list[Json] = []
    for *names, views, events, visitors in await stats_run.breakdown_rows(pool, request):
        values = {"views": int(views), "visitors": round(visitors or 0), "events": int(events)}
        entry: Json
        if request.dimension != "props":
            entry = {request.dimension: names[0]}
        elif request.key is None:
            entry = {"key": names[0], "value": names[1]}
        else:
            entry = {"value": names[1]}
        entry.update((m, values[m]) for m in request.stats.metrics)
        results.append(entry)
    return results


def _property(request: BreakdownRequest) -> str:
    if request.dimension != "props":
        return request.dimension
    return "event:props" if request.key is None else f"event:props:{request.key}"


async def breakdown(pool: Pool, request: BreakdownRequest) -> Json:
    """Waits for the page (breakdown_results) and wraps it."""
    body = _envelope(request.stats)
    body["property"] = _property(request)
    body["page"] = request.page
    body["limit"] = request.limit
    body["results"] = await breakdown_results(pool, request)
    if "visitors" in request.stats.metrics:
        body["visitors_approximate"] = True
    return body
