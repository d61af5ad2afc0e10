"""Step 5: the JSON answers of `/api/v1/stats/*`, shaped from a run's rows (ingest/stats_run.py,
and ingest/stats_visits_run.py for visit metrics). A site or range without data answers zeros.

Visit metrics come from the visit tables, the other metrics from the event rollups, unless
the question is counted over visits altogether (stats_params.from_visits: a filter on a
visit's source or pages, a breakdown by one or of visit metrics): then views and visitors
are the visits' page views and visitors too."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec

from ingest import stats_run, stats_visits_run
from ingest.stats_params import (
    BreakdownRequest,
    StatsRequest,
    TimeseriesRequest,
    from_visits,
    visit_metrics,
)
from ingest.stats_run import Pool
from ingest.stats_visits import VisitSums, visit_values

Json = dict[str, Any]


def _envelope(request: StatsRequest) -> Json:
    return {
        "site_id": request.site_id,
        "timezone": request.range.timezone,
        "from": request.range.first.isoformat(),
        "to": request.range.last.isoformat(),
    }


def _event_part(request: StatsRequest) -> StatsRequest | None:
    """The request of the metrics the event rollups answer, if any."""
    if from_visits(request, None):
        return None
    metrics = tuple(m for m in request.metrics if m not in visit_metrics(request))
    return msgspec.structs.replace(request, metrics=metrics) if metrics else None


async def aggregate(pool: Pool, request: StatsRequest, exact_max_rows: int) -> Json:
    """Waits for the totals (stats_run.aggregate_values, stats_visits_run.visit_totals)."""
    values: dict[str, Any] = {}
    approximate = True
    events = _event_part(request)
    if events is not None:
        values, approximate = await stats_run.aggregate_values(pool, events, exact_max_rows)
    if events is None or visit_metrics(request):
        visits = visit_values(await stats_visits_run.visit_totals(pool, request))
        values = {**visits, **values}
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
    found: dict[dt.datetime, tuple[Any, Any, Any]] = {}
    exact = False
    events_part = _event_part(request.stats)
    if events_part is not None:
        events_request = msgspec.structs.replace(request, stats=events_part)
        rows, exact = await stats_run.timeseries_rows(pool, events_request)
        found = {t: (views, events, visitors) for t, views, events, visitors in rows}
    visits: dict[dt.datetime, VisitSums] | None = None
    if events_part is None or visit_metrics(request.stats):
        visits = await stats_visits_run.visit_series(pool, request)
    results: list[Json] = []
    for t in _periods(request):
        views, events, visitors = found.get(t, (0, 0, 0))
        values: dict[str, Any] = {
            "views": int(views),
            # NULL where the series was not asked for visitors (no sketch merged).
            "visitors": round(visitors or 0),
            "events": int(events),
        }
        if visits is not None:
            of_visits = visit_values(visits.get(t, _NO_VISITS))
            values = {**of_visits, **values} if events_part is not None else of_visits
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


_NO_VISITS = VisitSums(0, 0, 0, 0, 0)


async def breakdown_results(pool: Pool, request: BreakdownRequest) -> list[Json]:
    """Waits for the page's rows; one entry per value, the asked metrics only. A custom
    property's value is under "value" (a key may be named like a metric), with its "key"
    when every key is asked for."""
    results: list[Json] = []
    if from_visits(request.stats, request.dimension):
        for name, visit_sums in await stats_visits_run.visit_breakdown(pool, request):
            of_visits = visit_values(visit_sums)
            entry: Json = {request.dimension: name}
            entry.update((m, of_visits[m]) for m in request.stats.metrics)
            results.append(entry)
        return results
    for *names, views, events, visitors in await stats_run.breakdown_rows(pool, request):
        values = {"views": int(views), "visitors": round(visitors or 0), "events": int(events)}
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


def with_views_named(body: Json, name: str) -> Json:
    """The answer with page views under `name` (Plausible's `pageviews` when asked so)."""
    if name == "views":
        return body
    results = body["results"]
    rows = results if isinstance(results, list) else [results]
    for i, row in enumerate(rows):
        rows[i] = {name if k == "views" else k: v for k, v in row.items()}
    body["results"] = rows if isinstance(results, list) else rows[0]
    return body
