"""The imported layer of `/api/v1/stats/*`: the rows of Plausible CSV imports
(consumer/imports.py) added to the native answer (ingest/stats_response.py), as Plausible
shows imported history beside native data.

A question gets imported rows when it does not say `with_imported=false`, has no filter (the
imported files hold one dimension each, so a filtered question cannot be answered from them:
Plausible leaves imports out there too), and its site has an import covering some of its days.
Imported days are whole days and count as the request's local days.

- Aggregates and daily timeseries add the day sums of imported_visitors (and the events of
  imported_custom_events); hourly series have no imported part.
- Breakdowns add, per value, the imported file of the dimension (pages, sources and UTM,
  entry and exit pages, countries, devices, browsers, operating systems, event names), then
  rank and cut the page again. The native side is read `page * limit` deep, and so is the
  imported one: a value outside both is left out (exact when the native values number fewer).
- Counts add (`views`, `visitors`, `events`, `visits`); visitors then are a sum of daily
  visitors and flagged approximate. `bounce_rate`, `visit_duration` and `views_per_visit`
  are recomputed from native visit sums (quarter_hour_visits, daily_visit_dimensions) plus
  imported ones. The answer says `imports_included: true` when imported rows were added.

Whether a site has imports is read for every site at once and kept for the epoch the answer
is computed for (imports bump it: ingest/stats_answers.py), or IMPORT_SPANS_TTL_S when answers
are not kept, so questions of sites without imports cost no statement of their own; the
questions that find them stale together wait for one read.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import math
import time
import weakref
from collections.abc import Sequence
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any

import msgspec
from psycopg import sql

from ingest import stats_response
from ingest.errors import BadRequest
from ingest.stats_answers import ANSWER_EPOCH
from ingest.stats_params import BreakdownRequest, StatsRequest, TimeseriesRequest
from ingest.stats_run import Pool, fetch

Json = dict[str, Any]
SQL_PATH = Path(__file__).resolve().parent / "stats_imported.sql"
IMPORT_SPANS_TTL_S = 5.0
PARAMETER = "with_imported"
ADDED = ("views", "pageviews", "visitors", "events", "visits")
RECOMPUTED = ("bounce_rate", "visit_duration", "views_per_visit")


def _sections(path: Path) -> dict[str, str]:
    sections: dict[str, list[str]] = {}
    current: list[str] = []
    for line in path.read_text().splitlines():
        if line.startswith("-- name: "):
            current = sections.setdefault(line.removeprefix("-- name: ").strip(), [])
        else:
            current.append(line)
    return {name: "\n".join(lines).strip() for name, lines in sections.items()}


STATEMENTS = _sections(SQL_PATH)


@dataclass(frozen=True)
class Sums:
    """What a set of rows adds up to: page views, visitors (summed per day), events, and the
    visit sums (visits, bounces, duration in seconds, page views of those visits)."""

    views: int = 0
    visitors: int = 0
    events: int = 0
    visits: int = 0
    bounces: int = 0
    duration: int = 0
    visit_views: int = 0

    @classmethod
    def of(cls, row: Sequence[Any]) -> Sums:
        return cls(*(int(v or 0) for v in row))

    def __add__(self, other: Sums) -> Sums:
        return Sums(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))

    @classmethod
    def of_visits(cls, row: Sequence[Any]) -> Sums:
        """From (visits, bounces, duration, page views) of the native visit rollups."""
        return cls(0, 0, 0, *(int(v or 0) for v in row))


def _half_up(x: float) -> int:
    """Rounds halves up, as Plausible (Elixir's round) does; Python's round takes them even."""
    return math.floor(x + 0.5)


def ratios(s: Sums) -> dict[str, int | float]:
    """The visit ratios of `s`: bounce rate (whole percent), mean duration (whole seconds),
    page views per visit (two decimals); zeros without visits."""
    if s.visits == 0:
        return {"bounce_rate": 0, "visit_duration": 0, "views_per_visit": 0.0}
    return {
        "bounce_rate": _half_up(100 * s.bounces / s.visits),
        "visit_duration": _half_up(s.duration / s.visits),
        "views_per_visit": _half_up(100 * s.visit_views / s.visits) / 100,
    }


def added(metric: str, s: Sums) -> int:
    return {
        "views": s.views,
        "pageviews": s.views,
        "visitors": s.visitors,
        "events": s.events,
        "visits": s.visits,
    }[metric]


def merge_values(
    values: dict[str, Any], metrics: tuple[str, ...], imported: Sums, native: Sums | None
) -> None:
    """Adds `imported` to one answer's metric values in place: counts are summed, ratios
    recomputed from `native` visit sums plus imported ones (left as they are without
    `native`)."""
    recomputed = ratios(native + imported) if native is not None else {}
    for metric in metrics:
        if metric in ADDED:
            values[metric] = int(values.get(metric, 0)) + added(metric, imported)
        elif metric in recomputed:
            values[metric] = recomputed[metric]


def parse_with_imported(params: dict[str, str]) -> bool:
    raw = params.get(PARAMETER, "") or "true"
    if raw not in ("true", "false"):
        raise BadRequest(f"`{PARAMETER}` must be true or false; got {raw!r}", field=PARAMETER)
    return raw == "true"


Spans = dict[str, tuple[dt.date, dt.date]]


class _Spans:
    """Per site, the first and last day its imports cover; read for every site at once."""

    def __init__(self) -> None:
        self.read_at = -math.inf
        self.epoch: str | None = None  # the answers' epoch they were read for, if any
        self.spans: Spans = {}
        # The read in flight, and the epoch it reads for: a page's questions arrive together
        # and all find the spans stale; they wait for one read rather than each send one.
        self.reading: asyncio.Task[Spans] | None = None
        self.reading_for: str | None = None


_SPANS: weakref.WeakKeyDictionary[Pool, _Spans] = weakref.WeakKeyDictionary()


async def _read_spans(pool: Pool, spans: _Spans, epoch: str | None) -> Spans:
    """Reads every site's spans; keeps them as the pool's unless a later read started
    meanwhile (that one's are newer)."""
    rows = await fetch(pool, STATEMENTS["import_spans"], {})
    found = {site: (first, last) for site, first, last in rows}
    if spans.reading is asyncio.current_task():
        spans.spans, spans.read_at, spans.epoch = found, time.monotonic(), epoch
    return found


def _read_done(spans: _Spans, task: asyncio.Task[Spans]) -> None:
    # Marks a failure seen even if every request waiting for it was cancelled, and lets go
    # of the task (a failure's traceback holds the pool, which keys the spans).
    if not task.cancelled():
        task.exception()
    if spans.reading is task:
        spans.reading = None


async def _covers(pool: Pool, request: StatsRequest) -> bool:
    spans = _SPANS.setdefault(pool, _Spans())
    # An answer kept for an epoch (ingest/stats_answers.py) reads spans read at that epoch or
    # later: one kept with older spans would miss an import until the next epoch, however
    # long that is.
    epoch = ANSWER_EPOCH.get()
    stale = (
        spans.epoch != epoch
        if epoch is not None
        else time.monotonic() - spans.read_at > IMPORT_SPANS_TTL_S
    )
    found = spans.spans
    if stale:
        reading = spans.reading
        if reading is None or spans.reading_for != epoch:
            reading = asyncio.create_task(_read_spans(pool, spans, epoch), name="import-spans")
            reading.add_done_callback(functools.partial(_read_done, spans))
            spans.reading, spans.reading_for = reading, epoch
        # Shielded: a request going away does not cancel the read the others wait for. Its
        # own result, not the pool's latest: a read for an older epoch may end after it.
        found = await asyncio.shield(reading)
    span = found.get(request.site_id)
    return span is not None and span[0] <= request.range.last and request.range.first <= span[1]


async def _applies(pool: Pool, request: StatsRequest, params: dict[str, str]) -> bool:
    return parse_with_imported(params) and not request.filters and await _covers(pool, request)


def _days(request: StatsRequest) -> dict[str, Any]:
    r = request.range
    return {
        "site": request.site_id,
        "first": r.first,
        "last": r.last,
        "start": r.start,
        "end": r.end,
        "timezone": r.timezone,
    }


def _wants_ratios(metrics: tuple[str, ...]) -> bool:
    return any(m in RECOMPUTED for m in metrics)


async def aggregate(
    pool: Pool, request: StatsRequest, params: dict[str, str], exact_max_rows: int
) -> Json:
    """Waits for the native totals (stats_response.aggregate), then, where imports apply,
    for the imported sums and the native visit sums, and adds them."""
    with_imported = await _applies(pool, request, params)
    body = await stats_response.aggregate(pool, request, exact_max_rows)
    if not with_imported:
        return body
    days = _days(request)
    [row] = await fetch(pool, STATEMENTS["totals"], days)
    imported = Sums.of(row)
    native = None
    if _wants_ratios(request.metrics):
        [visit_row] = await fetch(pool, STATEMENTS["native_totals"], days)
        native = Sums.of_visits(visit_row)
    values: dict[str, Any] = {m: body["results"][m]["value"] for m in request.metrics}
    merge_values(values, request.metrics, imported, native)
    body["results"] = {m: {"value": values[m]} for m in request.metrics}
    return _included(body, request.metrics)


def _included(body: Json, metrics: tuple[str, ...]) -> Json:
    body["imports_included"] = True
    if "visitors" in metrics:
        body["visitors_approximate"] = True
    return body


async def timeseries(pool: Pool, request: TimeseriesRequest, params: dict[str, str]) -> Json:
    """Waits for the native series, then adds the imported days (daily intervals only)."""
    stats = request.stats
    with_imported = request.interval == "day" and await _applies(pool, stats, params)
    body = await stats_response.timeseries(pool, request)
    if not with_imported:
        return body
    days = _days(stats)
    imported = {
        day.isoformat(): Sums.of(rest)
        for day, *rest in await fetch(pool, STATEMENTS["series"], days)
    }
    native: dict[str, Sums] = {}
    if _wants_ratios(stats.metrics):
        for day, *visit_row in await fetch(pool, STATEMENTS["native_series"], days):
            native[day.isoformat()] = Sums.of_visits(visit_row)
    for entry in body["results"]:
        label = entry["date"]
        if label in imported:
            merge_values(entry, stats.metrics, imported[label], native.get(label, Sums()))
    return _included(body, stats.metrics)


@dataclass(frozen=True)
class Source:
    """Where a breakdown dimension's imported rows are: the table, its value column, the
    column counted as visits, and the dimension's name in daily_visit_dimensions (None: not
    a visit dimension, so its ratios are not recomputed)."""

    table: str
    column: str
    visits: str = "visits"
    visit_dimension: str | None = None


UTM_AND_SOURCE = (
    "source", "referrer", "utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term"
)  # fmt: skip
SOURCES: dict[str, Source] = {
    "path": Source("imported_pages", "page"),
    "browser": Source("imported_browsers", "browser", visit_dimension="browser"),
    "os": Source("imported_operating_systems", "operating_system", visit_dimension="os"),
    "device": Source("imported_devices", "device", visit_dimension="device"),
    "country": Source("imported_locations", "country", visit_dimension="country"),
    "entry_page": Source("imported_entry_pages", "entry_page", "entrances", "entry_page"),
    "exit_page": Source("imported_exit_pages", "exit_page", "exits", "exit_page"),
    **{name: Source("imported_sources", name, visit_dimension=name) for name in UTM_AND_SOURCE},
}


def ranking_sql(source: Source) -> sql.Composed:
    """The imported values of a dimension over the days, with their Sums columns. Pages have
    no visit sums (their visits are counted, not their bounces or duration)."""
    visit_columns = (
        sql.SQL("0, 0, 0")
        if source.table == "imported_pages"
        else sql.SQL("sum(bounces), sum(visit_duration), sum(pageviews)")
    )
    return sql.SQL(
        "SELECT {column}, sum(pageviews), sum(visitors), sum(pageviews), sum({visits}), {rest}"
        " FROM {table} WHERE site_id = %(site)s AND day BETWEEN %(first)s AND %(last)s"
        " GROUP BY 1"
    ).format(
        column=sql.Identifier(source.column),
        visits=sql.Identifier(source.visits),
        rest=visit_columns,
        table=sql.Identifier(source.table),
    )


def rank(
    native: list[Json],
    imported: dict[str, Sums],
    key: str,
    metrics: tuple[str, ...],
    natives: dict[str, Sums],
) -> list[Json]:
    """The native rows with the imported sums added by value, and the imported values the
    native rows lack, ordered by the first metric (most first, ties by value). `natives`
    holds the native visit sums of values whose ratios are recomputed."""
    merged: dict[str, Json] = {str(row[key]): dict(row) for row in native}
    for value, sums in imported.items():
        row = merged.setdefault(value, {key: value} | dict.fromkeys(metrics, 0))
        merge_values(row, metrics, sums, natives.get(value))
    sort = metrics[0]
    return sorted(merged.values(), key=lambda row: (-row[sort], str(row[key])))


async def breakdown(pool: Pool, request: BreakdownRequest, params: dict[str, str]) -> Json:
    """Waits for the native page read `page * limit` deep and the imported values, then
    merges, ranks and cuts the asked page."""
    stats = request.stats
    source = SOURCES.get(request.dimension)
    wanted = parse_with_imported(params)
    known = source is not None or request.dimension == "event_type"
    if not (wanted and known and await _applies(pool, stats, params)):
        return await stats_response.breakdown(pool, request)
    depth = request.page * request.limit
    deep = msgspec.structs.replace(request, page=1, limit=depth)
    body = await stats_response.breakdown(pool, deep)
    days = _days(stats)
    statement = STATEMENTS["event_types"] if source is None else ranking_sql(source)
    imported = {str(v): Sums.of(rest) for v, *rest in await fetch(pool, statement, days)}
    sort = stats.metrics[0]
    by = sort if sort in ADDED else "visits"
    imported = dict(
        sorted(imported.items(), key=lambda item: (-added(by, item[1]), item[0]))[:depth]
    )
    natives: dict[str, Sums] = {}
    if source is not None and source.visit_dimension and _wants_ratios(stats.metrics):
        found = await fetch(
            pool,
            STATEMENTS["native_values"],
            days | {"dimension": source.visit_dimension, "values": list(imported)},
        )
        natives = {v: Sums.of_visits(rest) for v, *rest in found}
        natives = {v: natives.get(v, Sums()) for v in imported}
    ranked = rank(body["results"], imported, request.dimension, stats.metrics, natives)
    first = (request.page - 1) * request.limit
    body["results"] = ranked[first : first + request.limit]
    body["page"], body["limit"] = request.page, request.limit
    body["imports_included"] = True
    return body
