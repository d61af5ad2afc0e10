"""Step 2 of a stats request: the plan, which sources answer each part of its range. Pure.

A plan is a small tree of frozen dataclasses (ingest/stats_plan_parts.py), printable,
decided here and nowhere else:

- `Days`, `Months`: UTC daily or monthly rollup rows over whole UTC days [first, end);
- `Edges`: 15-minute rollups, or raw events, for the parts of the range that are not whole
  UTC days (every zone in use today has an offset that is a multiple of 15 minutes);
- `Instants`: the whole range at a sub-day grain (hourly or 15-minute rollups, raw events);
- `LocalDays`, `LocalMonths`: the rollups of a zone the site keeps (site_zones);
- `Watermark`: sealed months from a monthly sketch table as far as sealed_days reaches, the
  other days from a daily table;
- `IfKept`, `IfSealed`: a choice that depends on data (is the zone kept, is the month sealed).
  Each is resolved inside the statement itself: the condition is an uncorrelated subquery,
  evaluated once in the statement's snapshot, gating each branch, so PostgreSQL reads one
  branch. The statement sent holds only the branch the site's last answer selected
  (ingest/stats_expect.py), and is asked again with every branch when its snapshot disagrees.
  What Python knows for certain is no choice: a month that has not ended before today is
  never sealed.

A plan is one `Statement` (a form, ingest/stats_sql.py, over parts, ingest/stats_sources.py)
and at most one follow-up statement, whose use depends on the first one's rows.
"""

from __future__ import annotations

import datetime as dt

from core.calendar import one_whole_month
from ingest import stats_days
from ingest.stats_days import ONE_DAY, Pieces, split, whole_months
from ingest.stats_params import (
    CONTEXT_DIMENSIONS,
    PAGE_VIEW,
    BreakdownRequest,
    Filter,
    StatsRequest,
    TimeseriesRequest,
)
from ingest.stats_plan_parts import (
    Days,
    Edges,
    ExactVisitors,
    IfKept,
    IfSealed,
    Instants,
    LocalDays,
    LocalMonths,
    Months,
    Part,
    PerValue,
    Plan,
    Statement,
    ValueVisitors,
    Watermark,
)


def _days(table: str, first: dt.date, end: dt.date) -> tuple[Part, ...]:
    return (Days(table, first, end),) if first < end else ()


def _page_days(first: dt.date, end: dt.date) -> tuple[Part, ...]:
    return (Days("daily_details", first, end, page_views_only=True),) if first < end else ()


def _edges(table: str, pieces: Pieces) -> tuple[Part, ...]:
    return (Edges(table, pieces.edges),) if pieces.edges else ()


def _path_edges(spans: tuple[stats_days.Span, ...], taken: bool = False) -> tuple[Part, ...]:
    """Page views per path over `spans`: their whole UTC hours from hourly rows, only the
    15-minute remainders (zones whose offset is not whole hours) from quarter-hour rows.
    The quarter hours are named first, as batches lock the two tables: a statement that read
    them in the other order could deadlock with a migration locking both (0017)."""
    hours, quarters = stats_days.by_hours(spans)
    return ((Edges("quarter_hour_paths", quarters, taken=taken),) if quarters else ()) + (
        (Edges("hourly_paths", hours, taken=taken),) if hours else ()
    )


def _local_zone(request: StatsRequest) -> bool:
    """Whether a kept zone's rollups may answer: no filters, and local days that UTC days
    cannot answer."""
    return not request.filters and not request.range.utc_aligned


def _totals_parts(pieces: Pieces) -> tuple[Part, ...]:
    """Whole UTC days from daily rows, the edges' whole UTC hours from hourly rows and only
    their remainders (zones whose offset is not whole hours) from 15-minute rows: at most 24
    + 6 sub-day rows (and sketches) where 96 were read."""
    hours, quarters = stats_days.by_hours(pieces.edges)
    return (
        _days("daily_stats", pieces.day_from, pieces.day_to)
        + ((Edges("hourly_stats", hours),) if hours else ())
        + ((Edges("quarter_hour_stats", quarters),) if quarters else ())
    )


def _sub_day_series(request: TimeseriesRequest) -> Instants:
    """A range's local hours or days from sub-day rollups: hourly rows where every local
    period starts on a UTC hour, else hourly rows and the 15-minute rows of the hours in which
    a local period starts (a local hour there is never a UTC hour: 15-minute rows only)."""
    r = request.stats.range
    visitors = "visitors" in request.stats.metrics
    if r.hour_aligned:
        return Instants("hourly_stats", r.start, r.end, visitors=visitors)
    if request.interval == "hour":
        return Instants("quarter_hour_stats", r.start, r.end, visitors=visitors)
    return Instants(
        "hourly_stats",
        r.start,
        r.end,
        quarters_at_edges=True,
        visitors=visitors,
        period_starts=r.midnights,
    )


# Filters no rollup can apply: a hit's context and custom properties are kept per day, not per
# event type or path.
RAW_FILTER_DIMENSIONS = (*CONTEXT_DIMENSIONS, "props")


def _raw_filters(request: StatsRequest) -> bool:
    return any(f.dimension in RAW_FILTER_DIMENSIONS for f in request.filters)


def _raw(request: StatsRequest) -> tuple[Part, ...]:
    return (Instants("events", request.range.start, request.range.end),)


def plan_aggregate(request: StatsRequest, exact_max_rows: int) -> Plan:
    """Totals over the range. A kept zone answers local days when the UTC pieces would need
    edges; whole UTC days answer the same instants exactly and may count visitors exactly.
    One filter on a context dimension reads that dimension's rows of daily_dimensions (and
    raw edges); other filters on a context dimension or a custom property read raw events."""
    if context_filter(request) is not None:
        pieces = split(request.range.start, request.range.read_end)
        days = _days("daily_dimensions", pieces.day_from, pieces.day_to)
        return Plan(Statement("context totals", days + _edges("events", pieces)))
    if _raw_filters(request):
        return Plan(Statement("raw totals", _raw(request)))
    pieces = split(request.range.start, request.range.read_end)
    if not request.filters:
        parts = _totals_parts(pieces)
        if _local_zone(request) and pieces.edges:
            r = request.range
            local = LocalDays("local_daily_stats", r.timezone, r.first, r.last + ONE_DAY)
            parts = (IfKept(r.timezone, (local,), parts),)
        return Plan(Statement("totals", parts), _exact_visitors(request, pieces, exact_max_rows))
    rows = detail_parts(request, pieces, None)
    return Plan(
        Statement("filtered totals", rows), _exact_visitors(request, pieces, exact_max_rows)
    )


def _exact_visitors(request: StatsRequest, pieces: Pieces, max_rows: int) -> ExactVisitors | None:
    """daily_visitor_ids is the exact set of page-view visitors per UTC day: usable when the
    range is whole UTC days and the filters select all page views."""
    if "visitors" not in request.metrics or pieces.edges or not pieces.has_days:
        return None
    if any(f.dimension == "path" or f.negated or f.value != PAGE_VIEW for f in request.filters):
        return None
    return ExactVisitors(Days("daily_visitor_ids", pieces.day_from, pieces.day_to), max_rows)


def _page_view_edges(pieces: Pieces) -> tuple[Part, ...]:
    """The edges' page views and their visitors, every path together: whole UTC hours from
    hourly rows, the 15-minute remainders from quarter-hour rows (as totals read them)."""
    hours, quarters = stats_days.by_hours(pieces.edges)
    return ((Edges("hourly_stats", hours),) if hours else ()) + (
        (Edges("quarter_hour_stats", quarters),) if quarters else ()
    )


def _other_types_needed(request: StatsRequest, dimension: str | None) -> bool:
    """Whether events of other types than page views change the answer: never when the
    filters keep page views only; else when they are counted (`events`), broken down by, or
    selected by an event-type filter."""
    types = [f for f in request.filters if f.dimension == "event_type"]
    if any(not f.negated and f.value == PAGE_VIEW for f in types):
        return False
    return dimension == "event_type" or bool(types) or "events" in request.metrics


def _edges_details(
    request: StatsRequest, pieces: Pieces, dimension: str | None, paths: bool
) -> tuple[Part, ...]:
    """The edges' (event type, path) rows: page views from sub-day rollups (per path from
    hourly_paths and quarter_hour_paths when paths matter), other event types only where the
    answer needs them: from quarter_hour_event_types, or quarter_hour_event_paths when paths
    matter, within the range's partial UTC days."""
    if not pieces.edges:
        return ()
    views = _path_edges(pieces.edges) if paths else _page_view_edges(pieces)
    if any(
        f.dimension == "event_type" and not f.negated and f.value != PAGE_VIEW
        for f in request.filters
    ):
        views = ()  # one other event type: no page view passes the filter
    if not _other_types_needed(request, dimension):
        return views
    others = "quarter_hour_event_paths" if paths else "quarter_hour_event_types"
    return (*views, Edges(others, pieces.edges, per_path=paths, other_types=True))


def detail_parts(request: StatsRequest, pieces: Pieces, dimension: str | None) -> tuple[Part, ...]:
    """The cheapest rows (event type, path, events, visitors) that can answer filters: per event
    type unless paths matter (sealed months from one row a month), page-view rows when the
    filters keep page views only, else every (event type, path). The edges of a range that
    is not whole UTC days: _edges_details."""
    filters = request.filters
    if dimension == "path" and not any(f.dimension == "event_type" for f in filters):
        filters = (*filters, _PAGE_VIEWS)
    if dimension != "path" and not any(f.dimension == "path" for f in filters):
        month_from, month_to = whole_months(pieces.day_from, pieces.day_to)
        sealed: tuple[Part, ...] = ()
        if month_from < month_to:
            sealed = (
                Watermark(
                    "sealed_monthly_event_types",
                    "daily_event_types",
                    "UTC",
                    month_from,
                    month_to,
                    pieces.day_to,
                ),
            )
            day_end = month_from
        else:
            day_end = pieces.day_to
        return (
            _days("daily_event_types", pieces.day_from, day_end)
            + sealed
            + _edges_details(request, pieces, dimension, paths=False)
        )
    if any(f.dimension == "event_type" and not f.negated and f.value == PAGE_VIEW for f in filters):
        return _page_days(pieces.day_from, pieces.day_to) + _path_edges(pieces.edges)
    days = _days("daily_details", pieces.day_from, pieces.day_to)
    return days + _edges_details(request, pieces, dimension, paths=True)


_PAGE_VIEWS = Filter("event_type", False, PAGE_VIEW)


def plan_timeseries(request: TimeseriesRequest) -> Plan:
    stats = request.stats
    r = stats.range
    daily_utc = request.interval == "day" and r.utc_aligned
    if daily_utc and context_filter(stats) is not None:
        pieces = split(r.start, r.read_end)
        days = _days("daily_dimensions", pieces.day_from, pieces.day_to)
        return Plan(Statement("context series", days))
    if _raw_filters(stats):
        return Plan(Statement("raw series", _raw(stats)))
    pieces = split(r.start, r.read_end)
    if not stats.filters:
        if daily_utc:
            return Plan(
                Statement("series", _days("daily_stats", pieces.day_from, pieces.day_to)),
                exact=True,
            )
        quarter = _sub_day_series(request)
        if request.interval == "day":
            local = LocalDays("local_daily_stats", r.timezone, r.first, r.last + ONE_DAY)
            return Plan(Statement("series", (IfKept(r.timezone, (local,), (quarter,)),)))
        return Plan(Statement("series", (quarter,)))
    if daily_utc:
        paths = any(f.dimension == "path" for f in stats.filters)
        table = "daily_details" if paths else "daily_event_types"
        return Plan(Statement("filtered series", _days(table, pieces.day_from, pieces.day_to)))
    return Plan(Statement("filtered series", (Instants("events", r.start, r.end),)))


def plan_breakdown(request: BreakdownRequest, today: dt.date) -> Plan:
    """A page of values by the first metric. `today` (UTC) bounds what may be sealed."""
    stats = request.stats
    pieces = split(stats.range.start, stats.range.read_end)
    sort = stats.metrics[0]
    if request.dimension == "props":
        return _props_ranking(stats, pieces)
    if request.dimension in CONTEXT_DIMENSIONS and context_filter(stats) is not None:
        return _filtered_context_ranking(request, pieces)
    if _raw_filters(stats) or (request.dimension in CONTEXT_DIMENSIONS and stats.filters):
        return Plan(Statement("raw ranking", _raw(stats)))
    if request.dimension in CONTEXT_DIMENSIONS:
        days = _days("daily_dimensions", pieces.day_from, pieces.day_to)
        edges = _edges("quarter_hour_dimensions", pieces)
        return Plan(Statement("context ranking", days + edges))
    if request.dimension != "path" or stats.filters:
        visitors_later = sort != "visitors" and (
            request.dimension == "path" and "visitors" in stats.metrics
        )
        rows = detail_parts(stats, pieces, request.dimension)
        then = ValueVisitors(rows) if visitors_later else None
        return Plan(Statement("ranking", rows), then)
    utc = _utc_pages(stats, pieces, sort, today)
    if not _local_zone(stats):
        return utc
    kept = _local_pages(stats, sort, today)
    answer = Statement(utc.answer.form, (IfKept(stats.range.timezone, kept, utc.answer.parts),))
    if sort == "visitors":
        answer = Statement("pages by visitors", answer.parts)
    return Plan(answer, utc.then)


def context_filter(stats: StatsRequest) -> Filter | None:
    """The request's filter when it is its only one and on a context dimension, which the
    dimension rollups hold per value; else None."""
    if len(stats.filters) != 1 or stats.filters[0].dimension not in CONTEXT_DIMENSIONS:
        return None
    return stats.filters[0]


def _filtered_context_ranking(request: BreakdownRequest, pieces: Pieces) -> Plan:
    """A context dimension's values among the events of one context filter's value (or all
    other values): whole UTC days from daily_dimension_pairs (daily_dimensions when the filter
    is on the same dimension), the edges of other zones' days from raw events."""
    f = context_filter(request.stats)
    assert f is not None
    table = "daily_dimensions" if f.dimension == request.dimension else "daily_dimension_pairs"
    days = _days(table, pieces.day_from, pieces.day_to)
    return Plan(Statement("context ranking", days + _edges("events", pieces)))


def _props_ranking(stats: StatsRequest, pieces: Pieces) -> Plan:
    """Custom property values: daily_props holds them per (UTC day, event type), so event-type
    filters select its rows and whole UTC days read it, the edges of other zones' days read raw
    events; any other filter reads raw events over the range."""
    if any(f.dimension != "event_type" for f in stats.filters):
        return Plan(Statement("raw props ranking", _raw(stats)))
    days = _days("daily_props", pieces.day_from, pieces.day_to)
    return Plan(Statement("props ranking", days + _edges("events", pieces)))


def _utc_pages(stats: StatsRequest, pieces: Pieces, sort: str, today: dt.date) -> Plan:
    """UTC pages: whole months from one row per path a month (sealed ones with their visitors,
    one month that has not ended before today never sealed), the other days per day."""
    if sort == "visitors":
        return Plan(Statement("ranking", detail_parts(stats, pieces, "path")))
    month_from, month_to = whole_months(pieces.day_from, pieces.day_to)
    then = ValueVisitors(page_visitor_parts(pieces)) if "visitors" in stats.metrics else None
    one_month = not pieces.edges and one_whole_month(pieces.day_from, pieces.day_to)
    if one_month and month_to < today:
        sealed = IfSealed(
            month_to,
            (Months("sealed_monthly_paths", month_from, month_to),),
            (Months("monthly_paths", month_from, month_to),),
        )
        return Plan(Statement("pages", (sealed,)), then)
    cover = stats_days.cover(stats.range.start, stats.range.read_end)
    if cover is None:
        parts = _days("daily_paths", pieces.day_from, pieces.day_to) + _path_edges(pieces.edges)
        return Plan(Statement("pages", parts), then)
    return Plan(Statement("pages", signed_page_views(cover)), then)


def signed_page_views(cover: stats_days.Cover) -> tuple[Part, ...]:
    """Page views per path as exact sums over a Cover: one monthly_paths row per path a
    month, daily_paths rows for the days added or taken away around the months, and
    hourly_paths and quarter_hour_paths rows for the spans added or taken away around the
    days. Ranked on the sums, so the rows read are bounded by months + ~15 days + ~24 hours
    of rows per path, whatever the zone and the range (stats_days.cover)."""
    parts: list[Part] = []
    if cover.has_months:
        parts.append(Months("monthly_paths", cover.month_from, cover.month_to))
    parts += [Days("daily_paths", a, b) for a, b in cover.add_days if a < b]
    parts += [Days("daily_paths", a, b, taken=True) for a, b in cover.take_days if a < b]
    parts += _path_edges(cover.add_spans)
    parts += _path_edges(cover.take_spans, taken=True)
    return tuple(parts)


def page_visitor_parts(pieces: Pieces) -> tuple[Part, ...]:
    """Visitors of paths among page views: the sealed days of whole months from one sketch a
    month, the other whole days' from daily page-view details, the edges' from 15 minutes."""
    month_from, month_to = whole_months(pieces.day_from, pieces.day_to)
    if month_from < month_to:
        sealed: tuple[Part, ...] = (
            Watermark(
                "sealed_monthly_paths", "daily_details", "UTC", month_from, month_to, pieces.day_to
            ),
        )
        before = _page_days(pieces.day_from, month_from)
    else:
        sealed, before = (), _page_days(pieces.day_from, pieces.day_to)
    return before + sealed + _path_edges(pieces.edges)


def _local_pages(stats: StatsRequest, sort: str, today: dt.date) -> tuple[Part, ...]:
    """A kept zone's pages: one local day or month reads one row per path; a month whose
    local days are all sealed (never one that has not ended before today) reads its sealed
    sketches, visitors included."""
    r = stats.range
    zone, end = r.timezone, r.last + ONE_DAY
    if sort == "visitors":
        return (LocalDays("local_daily_paths", zone, r.first, end),)
    visitors: tuple[Part, ...] = ()
    if "visitors" in stats.metrics:
        visitors = (PerValue(local_page_visitors(stats)),)
    month_from, month_to = whole_months(r.first, end)
    if r.first == r.last:
        return (LocalDays("local_daily_paths", zone, r.first, end), *visitors)
    if one_whole_month(r.first, end):
        month = (LocalMonths("local_monthly_paths", zone, month_from, month_to), *visitors)
        if month_to >= today:
            return month
        sealed = LocalMonths("sealed_monthly_paths", zone, month_from, month_to)
        return (IfSealed(month_to, (sealed,), month),)
    months: tuple[Part, ...] = ()
    if month_from < month_to:
        months = (LocalMonths("local_monthly_paths", zone, month_from, month_to),)
    before = LocalDays("local_daily_paths", zone, r.first, min(month_from, end))
    after = LocalDays("local_daily_paths", zone, month_to, end)
    return months + tuple(p for p in (before, after) if p.first < p.end) + visitors


def local_page_visitors(stats: StatsRequest) -> tuple[Part, ...]:
    """Each path's visitors in a kept zone: sealed months from one sketch a month, the other
    days from the zone's daily paths (read per path of the page, in the same statement)."""
    r = stats.range
    end = r.last + ONE_DAY
    month_from, month_to = whole_months(r.first, end)
    before = LocalDays("local_daily_paths", r.timezone, r.first, min(month_from, end))
    if month_from >= month_to:
        return (before,)
    sealed = Watermark(
        "sealed_monthly_paths", "local_daily_paths", r.timezone, month_from, month_to, end
    )
    return ((before,) if before.first < before.end else ()) + (sealed,)
