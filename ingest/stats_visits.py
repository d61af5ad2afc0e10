"""Visit questions: which visit table answers each part of a range, and the SQL. Pure.

The consumer keeps visits (one row per visit, counted on the UTC day and in the 15-minute
bucket of its start) and two rollups of them, kept by deltas as visits grow
(consumer/migrations/0007_visits.sql). A visit question reads:

- `Buckets`: quarter_hour_visits over the range's instants. Every zone in use has offsets in
  whole quarter hours, so any local day or hour is a union of buckets and the sums (visits,
  bounces, duration, page views) are exact in any zone; no visitors (no sketch per bucket:
  unfiltered visitors come from the event rollups, ingest/stats_plan.py);
- `DimensionDays`: daily_visit_dimensions rows of one dimension over whole UTC days. Each
  visit is in exactly one value row of each dimension, so one filter (== or !=) or a
  breakdown by that dimension reads them; the visitors' sketches are merged (a breakdown's
  for the values it shows only: ingest/stats_visits_page.py). A breakdown reads the whole
  months among those days from sealed_monthly_visit_dimensions as far as sealed_days reaches
  (one row per value a month), which the statement decides in its own snapshot;
- `DimensionBuckets`: quarter_hour_visit_dimensions rows of one dimension in the partial UTC
  days at the ends of another zone's range, for what DimensionDays answers over whole days
  (the buckets are a local day's exact pieces, as for quarter_hour_visits);
- `VisitRows`: visits rows started inside the spans: every question the rollups cannot
  answer (two filters or more, a filtered breakdown, hourly or local-day series with a
  filter). Like raw events, they are read under the raw statements' share of the pool
  (ingest/stats_run.py RawReads).

The metrics are Plausible's, computed from the sums (visit_values): a bounce is a visit of
one event, a page view; bounce_rate is the percentage of bounces among visits, rounded half
up to a whole number; visit_duration the mean of the visits' whole seconds, rounded half up;
views_per_visit page views per visit, rounded half up to 2 decimals.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal, NamedTuple

from psycopg import sql

from ingest.stats_days import Span, split, utc_days, whole_months
from ingest.stats_params import (
    NOT_SET,
    SESSION_DIMENSIONS,
    BreakdownRequest,
    Dimension,
    Filter,
    Metric,
    StatsRequest,
    TimeseriesRequest,
)
from ingest.stats_sql import CACHE, bind_filters, statement_shape, union_all
from ingest.stats_sql_breakdown import page_clause


@dataclass(frozen=True)
class Buckets:
    """quarter_hour_visits rows whose bucket lies in [start, end)."""

    start: dt.datetime
    end: dt.datetime


@dataclass(frozen=True)
class DimensionDays:
    """daily_visit_dimensions rows of `dimension`, UTC days [first, end); `filtered`: only the
    value rows the request's one filter keeps. `months`: the whole UTC months [from, to)
    inside the days, read from sealed_monthly_visit_dimensions as far as sealed_days reaches
    (decided in the statement's snapshot), their other days from the daily rows."""

    dimension: Dimension
    first: dt.date
    end: dt.date
    filtered: bool = False
    months: tuple[dt.date, dt.date] | None = None


@dataclass(frozen=True)
class DimensionBuckets:
    """quarter_hour_visit_dimensions rows of `dimension` whose bucket lies in the spans;
    `filtered`: only the value rows the request's one filter keeps."""

    dimension: Dimension
    spans: tuple[Span, ...]
    filtered: bool = False


@dataclass(frozen=True)
class VisitRows:
    """visits rows started inside the spans, the request's filters applied."""

    spans: tuple[Span, ...]


VisitPart = Buckets | DimensionDays | DimensionBuckets | VisitRows


def plan_visit_totals(request: StatsRequest) -> tuple[VisitPart, ...]:
    """Sums over the range: buckets without filters; one filter's rows of whole UTC days
    and of the buckets at the edges; visits over the whole range for more filters."""
    r = request.range
    if not request.filters:
        return (Buckets(r.start, r.end),)
    if len(request.filters) == 1:
        return _dimension_parts(request.filters[0].dimension, r.start, r.read_end, filtered=True)
    return (VisitRows(((r.start, r.end),)),)


def _dimension_parts(
    dimension: Dimension,
    start: dt.datetime,
    end: dt.datetime,
    filtered: bool = False,
    months: bool = False,
) -> tuple[VisitPart, ...]:
    """One dimension's rows over [start, end): its whole UTC days (their whole months from
    the sealed ones if `months`), and the buckets of the edges."""
    pieces = split(start, end)
    sealed = whole_months(pieces.day_from, pieces.day_to) if months else None
    days = DimensionDays(
        dimension,
        pieces.day_from,
        pieces.day_to,
        filtered,
        sealed if sealed and sealed[0] < sealed[1] else None,
    )
    return ((days,) if pieces.has_days else ()) + (
        (DimensionBuckets(dimension, pieces.edges, filtered),) if pieces.edges else ()
    )


def plan_visit_series(request: TimeseriesRequest) -> tuple[VisitPart, ...]:
    """Sums per local period: buckets without filters, one filter's rows for daily series of
    UTC days, else visits over the range."""
    stats = request.stats
    r = stats.range
    if not stats.filters:
        return (Buckets(r.start, r.end),)
    if request.interval == "day" and r.utc_aligned and len(stats.filters) == 1:
        pieces = split(r.start, r.read_end)
        return (DimensionDays(stats.filters[0].dimension, pieces.day_from, pieces.day_to, True),)
    return (VisitRows(((r.start, r.end),)),)


def plan_visit_breakdown(request: BreakdownRequest) -> tuple[VisitPart, ...]:
    """A page of values: the dimension's rows of whole UTC days and of the buckets at the
    edges; with filters, visits over the range."""
    r = request.stats.range
    if request.stats.filters:
        return (VisitRows(((r.start, r.end),)),)
    return _dimension_parts(request.dimension, r.start, r.read_end, months=True)


def raw_read(parts: tuple[VisitPart, ...]) -> bool:
    """Whether a statement reads what grows with what clients send, and so takes a raw
    read's slot and timeout: visits rows, or the buckets of a session dimension, whose values
    clients write (up to 192 buckets of VISIT_VALUES_PER_DAY values each)."""
    return any(
        isinstance(part, VisitRows)
        or (isinstance(part, DimensionBuckets) and part.dimension in SESSION_DIMENSIONS)
        for part in parts
    )


# A visit's value of each dimension, as the consumer files it in daily_visit_dimensions.
_SOURCE = sql.SQL("coalesce(referrer_source, referrer_host, {})").format(sql.Literal(NOT_SET))


def visit_column(dimension: Dimension) -> sql.Composable:
    """The value of `dimension` in a visits row; a missing one is NOT_SET."""
    if dimension == "source":
        return _SOURCE
    if dimension == "referrer":
        return sql.SQL("coalesce(referrer_host, {})").format(sql.Literal(NOT_SET))
    if dimension in ("entry_page", "exit_page"):
        return sql.Identifier(dimension)
    return sql.SQL("coalesce({}, {})").format(sql.Identifier(dimension), sql.Literal(NOT_SET))


def _visit_filters(filters: tuple[Filter, ...]) -> sql.Composable:
    clauses: list[sql.Composable] = [sql.SQL("TRUE")]
    for i, f in enumerate(filters):
        op = sql.SQL("<>" if f.negated else "=")
        clauses.append(
            sql.SQL("{} {} {}").format(visit_column(f.dimension), op, sql.Placeholder(f"f{i}"))
        )
    return sql.SQL(" AND ").join(clauses)


Lead = Literal["none", "period", "value"]

# Sums of a visits row set: visits, bounces, whole seconds, page views, visitors' sketch.
_VISIT_SUMS = sql.SQL(
    "count(*), count(*) FILTER (WHERE events = 1 AND page_views = 1), "
    "coalesce(sum(floor(extract(epoch FROM last_at - started_at))), 0), sum(page_views), "
    "hll_add_agg(hll_hash_text(visitor))"
)
_ROLLUP_SUMS = sql.SQL("visits, bounces, duration, page_views")


def _ph(p: str, name: str) -> sql.Placeholder:
    return sql.Placeholder(p + name)


def _visit_spans(spans: tuple[Span, ...], p: str) -> sql.Composable:
    """Visits started inside the spans, also bounded by their UTC day (visits_by_day_and_site)."""
    clauses = [
        sql.SQL("(day >= {da} AND day <= {db} AND started_at >= {a} AND started_at < {b})").format(
            da=_ph(p, f"d{i}a"), db=_ph(p, f"d{i}b"), a=_ph(p, f"a{i}"), b=_ph(p, f"b{i}")
        )
        for i in range(len(spans))
    ]
    return sql.SQL("({})").format(sql.SQL(" OR ").join(clauses))


def _filtered_value(filtered: bool, filters: tuple[Filter, ...]) -> sql.Composable:
    """The value rows a dimension part keeps: those of the request's one filter, or all."""
    if not filtered:
        return sql.SQL("TRUE")
    [f] = filters
    return sql.SQL("value {} %(f0)s").format(sql.SQL("<>" if f.negated else "="))


def buckets_clause(spans: tuple[Span, ...], p: str, alias: str = "") -> sql.Composable:
    """A DimensionBuckets part's buckets, a range of the primary key after the dimension for
    each span."""
    return sql.SQL("({})").format(
        sql.SQL(" OR ").join(
            sql.SQL("({a}bucket >= {lo} AND {a}bucket < {hi})").format(
                a=sql.SQL(alias), lo=_ph(p, f"a{i}"), hi=_ph(p, f"b{i}")
            )
            for i in range(len(spans))
        )
    )


def part_rows(
    part: VisitPart, p: str, lead: Lead, dimension: Dimension | None, filters: tuple[Filter, ...]
) -> sql.Composable:
    """One part's rows: (lead,) visits, bounces, duration, page_views, visitors' sketch (NULL
    from buckets). `lead` is nothing, the local period (%(unit)s in %(tz)s) or the value of
    `dimension`."""
    if isinstance(part, Buckets):
        head = {
            "none": sql.SQL(""),
            "period": sql.SQL("date_trunc(%(unit)s, bucket AT TIME ZONE %(tz)s), "),
            "value": sql.SQL("NULL::text, "),  # never planned: no dimension per bucket
        }[lead]
        return sql.SQL(
            "SELECT {head}{sums}, NULL::hll FROM quarter_hour_visits "
            "WHERE site_id = %(site)s AND bucket >= {a} AND bucket < {b}"
        ).format(head=head, sums=_ROLLUP_SUMS, a=_ph(p, "first"), b=_ph(p, "end"))
    if isinstance(part, DimensionDays):
        if part.months is not None:
            raise ValueError("sealed months are planned for breakdown pages only")
        head = {
            "none": sql.SQL(""),
            "period": sql.SQL("day::timestamp, "),
            "value": sql.SQL("value, "),
        }[lead]
        return sql.SQL(
            "SELECT {head}{sums}, visitors FROM daily_visit_dimensions "
            "WHERE site_id = %(site)s AND {days} AND dimension = {dim} AND {value}"
        ).format(
            head=head,
            sums=_ROLLUP_SUMS,
            days=days_clause(p),
            dim=_ph(p, "dimension"),
            value=_filtered_value(part.filtered, filters),
        )
    if isinstance(part, DimensionBuckets):
        # Series never read them, and breakdown pages read them their own way
        # (ingest/stats_visits_page.py): only totals come here.
        if lead != "none":
            raise ValueError("a dimension's buckets are planned for totals and pages only")
        return sql.SQL(
            "SELECT {sums}, visitors FROM quarter_hour_visit_dimensions "
            "WHERE site_id = %(site)s AND dimension = {dim} AND {buckets} AND {value}"
        ).format(
            sums=_ROLLUP_SUMS,
            dim=_ph(p, "dimension"),
            buckets=buckets_clause(part.spans, p),
            value=_filtered_value(part.filtered, filters),
        )
    if lead == "period":
        key: sql.Composable = sql.SQL("date_trunc(%(unit)s, started_at AT TIME ZONE %(tz)s)")
    elif lead == "value":
        assert dimension is not None
        key = visit_column(dimension)
    query = sql.SQL(
        "SELECT {head}{sums} FROM visits WHERE site_id = %(site)s AND {spans} AND {filters}"
    ).format(
        head=sql.SQL("") if lead == "none" else sql.SQL("{}, ").format(key),
        sums=_VISIT_SUMS,
        spans=_visit_spans(part.spans, p),
        filters=_visit_filters(filters),
    )
    return query if lead == "none" else sql.SQL("{} GROUP BY 1").format(query)


# The first month not wholly sealed: the watermark's (sealed_before is the first day not
# sealed, so some of its month's days are not). '-infinity' before the first seal: no month.
_SEALED_TO = sql.SQL(
    "(SELECT date_trunc('month', sealed_before::timestamp)::date FROM sealed_days)"
)


def days_clause(p: str, alias: str = "", months: bool = False) -> sql.Composable:
    """A DimensionDays part's days as the primary key's second column sees them: one descent
    of the index per day straight to the dimension's rows, where a range of days would walk
    every dimension's rows of those days (13 dimensions; entry and exit pages are most).
    With `months`, the days of the sealed months (months_clause) are left out of the array,
    so that no descent is made for them."""
    if not months:
        return sql.SQL("{}day = ANY({})").format(sql.SQL(alias), _ph(p, "days"))
    return sql.SQL(
        "{}day = ANY(ARRAY(SELECT d FROM unnest({}::date[]) d WHERE d < {} OR d >= least({}, {})))"
    ).format(sql.SQL(alias), _ph(p, "days"), _ph(p, "mfrom"), _ph(p, "mto"), _SEALED_TO)


def months_clause(p: str, alias: str = "") -> sql.Composable:
    """A DimensionDays part's sealed months: those of [mfrom, mto) before the watermark's."""
    return sql.SQL("{a}month >= {f} AND {a}month < least({t}, {sealed})").format(
        a=sql.SQL(alias), f=_ph(p, "mfrom"), t=_ph(p, "mto"), sealed=_SEALED_TO
    )


def bind_parts(parts: tuple[VisitPart, ...], params: dict[str, Any]) -> None:
    """The values of each part's placeholders, prefixed p0_, p1_…"""
    for i, part in enumerate(parts):
        p = f"p{i}_"
        if isinstance(part, Buckets):
            params[p + "first"], params[p + "end"] = part.start, part.end
        elif isinstance(part, DimensionDays):
            params.update({p + "first": part.first, p + "end": part.end})
            params[p + "dimension"] = part.dimension
            count = (part.end - part.first).days
            params[p + "days"] = [part.first + dt.timedelta(days=i) for i in range(count)]
            if part.months is not None:
                params[p + "mfrom"], params[p + "mto"] = part.months
        elif isinstance(part, DimensionBuckets):
            params[p + "dimension"] = part.dimension
            for j, (a, b) in enumerate(part.spans):
                params[f"{p}a{j}"], params[f"{p}b{j}"] = a, b
        else:
            for j, (a, b) in enumerate(part.spans):
                params[f"{p}a{j}"], params[f"{p}b{j}"] = a, b
                params[f"{p}d{j}a"], params[f"{p}d{j}b"] = utc_days(a, b)


def _shape(parts: tuple[VisitPart, ...]) -> tuple[Any, ...]:
    return tuple(
        (type(part).__name__, len(part.spans) if isinstance(part, VisitRows) else 0)
        + ((part.filtered, part.months is not None) if isinstance(part, DimensionDays) else ())
        + ((part.filtered, len(part.spans)) if isinstance(part, DimensionBuckets) else ())
        for part in parts
    )


_SUMMED = sql.SQL(
    "coalesce(sum(visits), 0)::bigint, coalesce(sum(bounces), 0)::bigint, "
    "coalesce(sum(duration), 0)::bigint, coalesce(sum(page_views), 0)::bigint, "
    "coalesce(hll_cardinality(hll_union_agg(visitors)), 0)"
)
_COLUMNS = "visits, bounces, duration, page_views, visitors"


def _params(request: StatsRequest, parts: tuple[VisitPart, ...]) -> dict[str, Any]:
    params: dict[str, Any] = {"site": request.site_id, "tz": request.range.timezone}
    bind_parts(parts, params)
    bind_filters(request.filters, params)
    return params


def _rows(
    parts: tuple[VisitPart, ...],
    lead: Lead,
    dimension: Dimension | None,
    filters: tuple[Filter, ...],
) -> sql.Composable:
    return union_all(
        [part_rows(part, f"p{i}_", lead, dimension, filters) for i, part in enumerate(parts)]
    )


def visit_totals_sql(
    request: StatsRequest, parts: tuple[VisitPart, ...]
) -> tuple[sql.Composable, dict[str, Any]]:
    """One row: visits, bounces, duration, page views, visitors (0 without a sketch)."""
    shape = statement_shape(request.filters)
    key = ("visit totals", _shape(parts), shape)
    compose = lambda: sql.SQL("SELECT {} FROM ({}) r ({})").format(  # noqa: E731
        _SUMMED, _rows(parts, "none", None, shape), sql.SQL(_COLUMNS)
    )
    return CACHE.get(key, compose), _params(request, parts)


def visit_series_sql(
    request: TimeseriesRequest, parts: tuple[VisitPart, ...]
) -> tuple[sql.Composable, dict[str, Any]]:
    """Rows (local period start, visits, bounces, duration, page views, visitors), in order."""
    stats = request.stats
    shape = statement_shape(stats.filters)
    key = ("visit series", _shape(parts), shape)
    compose = lambda: sql.SQL(  # noqa: E731
        "SELECT t, {} FROM ({}) r (t, {}) GROUP BY t ORDER BY t"
    ).format(_SUMMED, _rows(parts, "period", None, shape), sql.SQL(_COLUMNS))
    params = _params(stats, parts)
    params["unit"] = request.interval
    return CACHE.get(key, compose), params


# The sort of a visit breakdown by each metric, computed as visit_values rounds it
# (numeric round() is half away from zero: half up for these non-negative values).
_SORTS: dict[Metric, sql.Composable] = {
    # As shown: the estimate rounded (half to even, as Python's round), at most the visits.
    "visitors": sql.SQL(
        "least(round(coalesce(hll_cardinality(hll_union_agg(visitors)), 0)), sum(visits))"
    ),
    "visits": sql.SQL("sum(visits)"),
    "views": sql.SQL("sum(page_views)"),
    "bounce_rate": sql.SQL("round(100 * sum(bounces)::numeric / nullif(sum(visits), 0))"),
    "visit_duration": sql.SQL("round(sum(duration)::numeric / nullif(sum(visits), 0))"),
    "views_per_visit": sql.SQL("round(sum(page_views)::numeric / nullif(sum(visits), 0), 2)"),
}


def visit_breakdown_sql(
    request: BreakdownRequest, parts: tuple[VisitPart, ...]
) -> tuple[sql.Composable, dict[str, Any]]:
    """Rows (value, visits, bounces, duration, page views, visitors) of one page, by the first
    metric (most first, ties by value ascending); values without visits are left out."""
    stats = request.stats
    shape = statement_shape(stats.filters)
    sort = stats.metrics[0]
    first_page = request.page == 1

    def compose() -> sql.Composable:
        return sql.SQL(
            "SELECT value, {sums} FROM ({rows}) r (value, {columns}) GROUP BY value "
            "HAVING sum(visits) > 0 ORDER BY {sort} DESC, value {page}"
        ).format(
            sums=_SUMMED,
            rows=_rows(parts, "value", request.dimension, shape),
            columns=sql.SQL(_COLUMNS),
            sort=_SORTS[sort],
            page=page_clause(request.limit, first_page),
        )

    key = (
        "visit breakdown",
        _shape(parts),
        request.dimension,
        sort,
        shape,
        request.limit,
        first_page,
    )
    params = _params(stats, parts)
    params["offset"] = request.limit * (request.page - 1)
    return CACHE.get(key, compose), params


class VisitSums(NamedTuple):
    visits: int
    bounces: int
    duration: int
    page_views: int
    visitors: float


def _half_up(numerator: int, denominator: int, places: int = 0) -> Decimal:
    if denominator <= 0:
        return Decimal(0)
    exact = Decimal(numerator) / Decimal(denominator)
    return exact.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


def visit_values(sums: VisitSums) -> dict[str, int | float]:
    """Every metric a visit question may ask, from the sums of its visits (0 without
    visits). Visitors, sketched, are held to the visits: each has at least one."""
    visits, bounces, duration, page_views, visitors = sums
    return {
        "visits": int(visits),
        "bounce_rate": int(_half_up(100 * bounces, visits)),
        "visit_duration": int(_half_up(duration, visits)),
        "views_per_visit": float(_half_up(page_views, visits, 2)),
        "views": int(page_views),
        "visitors": min(round(visitors or 0), int(visits)),
    }


def sums(row: tuple[Any, ...]) -> VisitSums:
    visits, bounces, duration, page_views, visitors = row
    return VisitSums(int(visits), int(bounces), int(duration), int(page_views), visitors or 0)
