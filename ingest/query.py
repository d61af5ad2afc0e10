"""The richer stats queries: parameters parsed into a request, and the SQL that answers it.

Pure (no I/O): `parse_*` turn query-string parameters into frozen requests or raise
BadRequest naming the field; `*_sql` build the statement and its bound parameters.

Time: a request covers whole local days [first, last] in an IANA time zone. Those days are
the UTC interval [start, end); it is read as the UTC days lying wholly inside it (daily
rollups) plus at most two edges made of 15-minute buckets (quarter-hour rollups). Every zone
in use today has an offset that is a multiple of 15 minutes, so the edges are exact.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import zoneinfo
from typing import Any, Literal

import msgspec
from psycopg import sql

from ingest.errors import BadRequest

Metric = Literal["views", "visitors", "events"]
Dimension = Literal["event_type", "path"]
Interval = Literal["hour", "day"]

METRICS: tuple[Metric, ...] = ("views", "visitors", "events")
DEFAULT_PERIOD = "30d"
MAX_RANGE_DAYS = 366
MAX_HOURLY_RANGE_DAYS = 31
MAX_BREAKDOWN_LIMIT = 1000
DEFAULT_BREAKDOWN_LIMIT = 100
PAGE_VIEW = "page_view"

_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_FILTER_RE = re.compile(r"(?P<key>[a-z:_]+)\s*(?P<op>==|!=)\s*(?P<value>.*)")
# Plausible's names first, then the plain column names.
_DIMENSIONS: dict[str, Dimension] = {
    "event:name": "event_type",
    "event:page": "path",
    "event_type": "event_type",
    "path": "path",
}
_ROLLING_PERIODS = {"7d": 7, "30d": 30}


class Filter(msgspec.Struct, frozen=True):
    dimension: Dimension
    negated: bool
    value: str


class DateRange(msgspec.Struct, frozen=True):
    """Local days [first, last] in `timezone`, and the UTC instants [start, end) they span."""

    first: dt.date
    last: dt.date
    timezone: str
    start: dt.datetime
    end: dt.datetime

    @property
    def utc_aligned(self) -> bool:
        """True when every local midnight in the range is a UTC midnight."""
        zone = zoneinfo.ZoneInfo(self.timezone)
        day = self.first
        while day <= self.last + dt.timedelta(days=1):
            if local_midnight(day, zone).astimezone(dt.UTC).time() != dt.time(0):
                return False
            day += dt.timedelta(days=1)
        return True


class Pieces(msgspec.Struct, frozen=True):
    """A UTC interval as whole UTC days [day_from, day_to) plus up to two bucket edges."""

    day_from: dt.date
    day_to: dt.date
    edges: tuple[tuple[dt.datetime, dt.datetime], ...]


class StatsRequest(msgspec.Struct, frozen=True):
    site_id: str
    range: DateRange
    metrics: tuple[Metric, ...]
    filters: tuple[Filter, ...] = ()


class TimeseriesRequest(msgspec.Struct, frozen=True):
    stats: StatsRequest
    interval: Interval


class BreakdownRequest(msgspec.Struct, frozen=True):
    stats: StatsRequest
    dimension: Dimension
    limit: int
    page: int


# --- parsing ----------------------------------------------------------------------------


@functools.cache
def _known_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def parse_timezone(params: dict[str, str]) -> str:
    """The `timezone` parameter (an IANA name), UTC when absent."""
    name = params.get("timezone", "").strip()
    if not name:
        return "UTC"
    if name not in _known_zones():
        raise BadRequest(
            f"`timezone` is not a known IANA time zone: {name!r} (e.g. Asia/Kolkata)",
            field="timezone",
        )
    return name


def parse_date(raw: str, field: str) -> dt.date:
    if not _DATE_RE.fullmatch(raw):
        raise BadRequest(f"`{field}` must be YYYY-MM-DD, got {raw!r}", field=field)
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise BadRequest(f"`{field}` is not a calendar day: {raw!r}", field=field) from None


def local_midnight(day: dt.date, zone: zoneinfo.ZoneInfo) -> dt.datetime:
    """The first instant of `day` in `zone`, as UTC (where midnight does not exist because
    of a daylight-saving jump, the instant the day actually starts)."""
    naive = dt.datetime.combine(day, dt.time(0))
    aware = naive.replace(tzinfo=zone)
    utc = aware.astimezone(dt.UTC)
    if utc.astimezone(zone).replace(tzinfo=None) == naive:
        return utc
    # Midnight falls in a gap: the day starts at the transition, which lies between the
    # instants midnight would be with the offsets after (fold=1) and before (fold=0) it.
    low, high = aware.replace(fold=1).astimezone(dt.UTC), utc
    while high - low > dt.timedelta(seconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(zone).date() >= day:
            high = middle
        else:
            low = middle
    return high.replace(microsecond=0)


def make_range(first: dt.date, last: dt.date, timezone: str) -> DateRange:
    zone = zoneinfo.ZoneInfo(timezone)
    return DateRange(
        first=first,
        last=last,
        timezone=timezone,
        start=local_midnight(first, zone),
        end=local_midnight(last + dt.timedelta(days=1), zone),
    )


def parse_range(
    params: dict[str, str], *, now: dt.datetime, max_days: int = MAX_RANGE_DAYS
) -> DateRange:
    """`period` (day, 7d, 30d, month, 6mo, 12mo, custom) with `date`, or `from` and `to`.

    `date` is the period's last day (day, 7d, 30d), a day of the month (month) or of the
    last month (6mo, 12mo), or `FIRST,LAST` with period=custom; it defaults to today in the
    request's time zone (`now` is an aware instant).
    """
    timezone = parse_timezone(params)
    today = now.astimezone(zoneinfo.ZoneInfo(timezone)).date()
    raw_from, raw_to = params.get("from", ""), params.get("to", "")
    period = params.get("period", "")
    if raw_from or raw_to:
        if not raw_from:
            raise BadRequest("`from` is required when `to` is given", field="from")
        if not raw_to:
            raise BadRequest("`to` is required when `from` is given", field="to")
        first, last = parse_date(raw_from, "from"), parse_date(raw_to, "to")
        order_field = "to"
    else:
        period = period or DEFAULT_PERIOD
        raw_date = params.get("date", "")
        order_field = "date"
        if period == "custom":
            parts = raw_date.split(",")
            if len(parts) != 2:
                raise BadRequest(
                    "`date` must be FIRST,LAST (YYYY-MM-DD,YYYY-MM-DD) with period=custom",
                    field="date",
                )
            first, last = parse_date(parts[0], "date"), parse_date(parts[1], "date")
        else:
            anchor = parse_date(raw_date, "date") if raw_date else today
            first, last = _period_days(period, anchor)
    if last < first:
        raise BadRequest(f"the range ends before it starts ({first} > {last})", field=order_field)
    days = (last - first).days + 1
    if days > max_days:
        raise BadRequest(
            f"the range covers {days} days; at most {max_days} are allowed here",
            field=order_field if order_field != "date" or period == "custom" else "period",
        )
    return make_range(first, last, timezone)


def _period_days(period: str, anchor: dt.date) -> tuple[dt.date, dt.date]:
    if period == "day":
        return anchor, anchor
    if period in _ROLLING_PERIODS:
        return anchor - dt.timedelta(days=_ROLLING_PERIODS[period] - 1), anchor
    if period in ("month", "6mo", "12mo"):
        months = {"month": 1, "6mo": 6, "12mo": 12}[period]
        month_index = anchor.year * 12 + anchor.month - 1 - (months - 1)
        first = dt.date(month_index // 12, month_index % 12 + 1, 1)
        following = anchor.replace(day=28) + dt.timedelta(days=4)
        return first, following - dt.timedelta(days=following.day)
    raise BadRequest(
        f"`period` must be one of day, 7d, 30d, month, 6mo, 12mo, custom; got {period!r}",
        field="period",
    )


def parse_metrics(params: dict[str, str], default: tuple[Metric, ...]) -> tuple[Metric, ...]:
    raw = params.get("metrics", "")
    if not raw:
        return default
    metrics: list[Metric] = []
    for name in raw.split(","):
        name = name.strip()
        if name not in METRICS:
            raise BadRequest(
                f"`metrics` may list views, visitors, events; got {name!r}", field="metrics"
            )
        if name not in metrics:
            metrics.append(name)
    return tuple(metrics)


def parse_filters(params: dict[str, str]) -> tuple[Filter, ...]:
    """Plausible's form, `event:page==/pricing;event:name==signup` (AND), `!=` negates."""
    raw = params.get("filters", "")
    if not raw:
        return ()
    filters = []
    for part in raw.split(";"):
        match = _FILTER_RE.fullmatch(part.strip())
        if not match or match["key"] not in _DIMENSIONS:
            raise BadRequest(
                "`filters` must look like event:page==/path;event:name==signup "
                f"(event:page or event:name, == or !=); got {part!r}",
                field="filters",
            )
        filters.append(
            Filter(_DIMENSIONS[match["key"]], match["op"] == "!=", match["value"].strip())
        )
    return tuple(filters)


def parse_site(params: dict[str, str]) -> str:
    site_id = params.get("site_id", "")
    if not site_id:
        raise BadRequest("`site_id` query parameter is required", field="site_id")
    return site_id


def parse_stats(
    params: dict[str, str],
    *,
    now: dt.datetime,
    default_metrics: tuple[Metric, ...] = METRICS,
    max_days: int = MAX_RANGE_DAYS,
) -> StatsRequest:
    return StatsRequest(
        site_id=parse_site(params),
        range=parse_range(params, now=now, max_days=max_days),
        metrics=parse_metrics(params, default_metrics),
        filters=parse_filters(params),
    )


def parse_timeseries(params: dict[str, str], *, now: dt.datetime) -> TimeseriesRequest:
    interval = params.get("interval", "") or "day"
    if interval not in ("hour", "day"):
        raise BadRequest(f"`interval` must be hour or day; got {interval!r}", field="interval")
    max_days = MAX_HOURLY_RANGE_DAYS if interval == "hour" else MAX_RANGE_DAYS
    stats = parse_stats(params, now=now, max_days=max_days)
    return TimeseriesRequest(stats, interval)  # type: ignore[arg-type]


def parse_breakdown(params: dict[str, str], *, now: dt.datetime) -> BreakdownRequest:
    raw_property = params.get("property", "") or "event:page"
    if raw_property not in _DIMENSIONS:
        raise BadRequest(
            f"`property` must be event:page (path) or event:name (event_type); "
            f"got {raw_property!r}",
            field="property",
        )
    default: tuple[Metric, ...] = ("views", "visitors")
    if _DIMENSIONS[raw_property] == "event_type":
        default = ("events", "visitors")
    stats = parse_stats(params, now=now, default_metrics=default)
    limit = _parse_int(params, "limit", DEFAULT_BREAKDOWN_LIMIT, 1, MAX_BREAKDOWN_LIMIT)
    page = _parse_int(params, "page", 1, 1, 1_000_000)
    return BreakdownRequest(stats, _DIMENSIONS[raw_property], limit, page)


def _parse_int(params: dict[str, str], field: str, default: int, low: int, high: int) -> int:
    raw = params.get(field, "")
    if not raw:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise BadRequest(
            f"`{field}` must be a whole number from {low} to {high}; got {raw!r}", field=field
        )
    return int(raw)


# --- SQL --------------------------------------------------------------------------------

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def split(start: dt.datetime, end: dt.datetime) -> Pieces:
    """[start, end) as whole UTC days plus edges before and after them."""
    last_full_end = end.astimezone(dt.UTC).date()
    first_full = start.astimezone(dt.UTC).date()
    if start.astimezone(dt.UTC).time() != dt.time(0):
        first_full += dt.timedelta(days=1)
    if first_full >= last_full_end:
        return Pieces(first_full, first_full, ((start, end),))
    edges = []
    day_start = dt.datetime.combine(first_full, dt.time(0), dt.UTC)
    day_end = dt.datetime.combine(last_full_end, dt.time(0), dt.UTC)
    if start < day_start:
        edges.append((start, day_start))
    if day_end < end:
        edges.append((day_end, end))
    return Pieces(first_full, last_full_end, tuple(edges))


def _whole_months(day_from: dt.date, day_to: dt.date) -> tuple[dt.date, dt.date]:
    """The whole UTC months [month_from, month_to) inside days [day_from, day_to), as their
    first days; both equal day_to when there is none."""
    month_from = (
        day_from
        if day_from.day == 1
        else (day_from.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    )
    month_to = day_to.replace(day=1)
    if month_from >= month_to:
        return day_to, day_to
    return month_from, month_to


def _piece_params(site_id: str, pieces: Pieces) -> dict[str, Any]:
    edges = [*pieces.edges, (_EPOCH, _EPOCH), (_EPOCH, _EPOCH)]
    month_from, month_to = _whole_months(pieces.day_from, pieces.day_to)
    return {
        "site": site_id,
        "day_from": pieces.day_from,
        "day_to": pieces.day_to,
        "month_from": month_from,
        "month_to": month_to,
        "a1": edges[0][0],
        "b1": edges[0][1],
        "a2": edges[1][0],
        "b2": edges[1][1],
    }


_EDGE_BUCKETS = sql.SQL(
    "site_id = %(site)s AND ((bucket >= %(a1)s AND bucket < %(b1)s)"
    " OR (bucket >= %(a2)s AND bucket < %(b2)s))"
)
_FULL_DAYS = sql.SQL("site_id = %(site)s AND day >= %(day_from)s AND day < %(day_to)s")

# Unfiltered totals: daily rollups for whole days, quarter-hour rollups for the edges.
TOTALS_ROWS = sql.SQL(
    """
    SELECT s.page_views, s.events, s.unique_users, v.visitors, NULL::timestamptz AS bucket,
           s.day
    FROM daily_stats s LEFT JOIN daily_visitors v USING (site_id, day)
    WHERE s.{full_days}
    UNION ALL
    SELECT page_views, events, NULL, visitors, bucket, NULL FROM quarter_hour_stats
    WHERE {edges}
    """
).format(full_days=_FULL_DAYS, edges=_EDGE_BUCKETS)

# Filtered rows: per (event type, path) rollups, daily for whole days, quarter-hour edges.
DETAIL_ROWS = sql.SQL(
    """
    SELECT event_type, path, events, users, NULL::timestamptz AS bucket, day
    FROM daily_details WHERE {full_days}
    UNION ALL
    SELECT event_type, path, events, users, bucket, NULL FROM quarter_hour_details
    WHERE {edges}
    """
).format(full_days=_FULL_DAYS, edges=_EDGE_BUCKETS)

# DISTINCT in a subquery lets the planner hash instead of sorting (faster than count(DISTINCT)).
# The same columns per event type only (no path): a few rows a day instead of one per path.
TYPE_ROWS = sql.SQL(
    """
    SELECT event_type, NULL::text AS path, events, users, NULL::timestamptz AS bucket, day
    FROM daily_event_types WHERE {full_days}
    UNION ALL
    SELECT event_type, path, events, users, bucket, NULL FROM quarter_hour_details
    WHERE {edges}
    """
).format(full_days=_FULL_DAYS, edges=_EDGE_BUCKETS)


def _uses_paths(filters: tuple[Filter, ...], dimension: Dimension | None = None) -> bool:
    return dimension == "path" or any(f.dimension == "path" for f in filters)


def _detail_rows(filters: tuple[Filter, ...], dimension: Dimension | None = None) -> sql.Composed:
    """The cheapest rollup rows that can answer: per event type unless paths matter."""
    return DETAIL_ROWS if _uses_paths(filters, dimension) else TYPE_ROWS


EXACT_VISITORS_SQL = """
SELECT count(*) FROM (
    SELECT DISTINCT user_id FROM daily_users
    WHERE site_id = %(site)s AND day >= %(day_from)s AND day < %(day_to)s
) users
"""


def _filter_clause(filters: tuple[Filter, ...], params: dict[str, Any]) -> sql.Composable:
    clauses: list[sql.Composable] = [sql.SQL("TRUE")]
    for i, f in enumerate(filters):
        name = f"f{i}"
        params[name] = f.value
        op = sql.SQL("<>" if f.negated else "=")
        clauses.append(
            sql.SQL("{} {} {}").format(sql.Identifier(f.dimension), op, sql.Placeholder(name))
        )
    return sql.SQL(" AND ").join(clauses)


def _visitor_rows(filters: tuple[Filter, ...]) -> sql.Composable:
    """Visitors are the users among page views, or among the filtered event type's events."""
    if any(f.dimension == "event_type" for f in filters):
        return sql.SQL("TRUE")
    return sql.SQL("event_type = 'page_view'")


def exact_visitors_possible(request: StatsRequest, pieces: Pieces) -> bool:
    """daily_users is the exact page-view user set per UTC day: usable when the range is
    whole UTC days and the filters select all page views."""
    if pieces.edges or pieces.day_from >= pieces.day_to:
        return False
    for f in request.filters:
        if f.dimension == "path":
            return False
        if f.negated or f.value != PAGE_VIEW:
            return False
    return True


def aggregate_sql(request: StatsRequest) -> tuple[sql.Composed, dict[str, Any]]:
    """One row: views, events, sketched visitors, and the sum of daily exact unique users
    (the row count an exact distinct count would read, or NULL when it cannot be exact)."""
    pieces = split(request.range.start, request.range.end)
    params = _piece_params(request.site_id, pieces)
    if not request.filters:
        query = sql.SQL(
            """
            SELECT coalesce(sum(page_views), 0)::bigint, coalesce(sum(events), 0)::bigint,
                   coalesce(hll_cardinality(hll_union_agg(visitors)), 0),
                   sum(unique_users)::bigint
            FROM ({rows}) r
            """
        ).format(rows=TOTALS_ROWS)
        return query, params
    where = _filter_clause(request.filters, params)
    query = sql.SQL(
        """
        SELECT coalesce(sum(events) FILTER (WHERE event_type = 'page_view'), 0)::bigint,
               coalesce(sum(events), 0)::bigint,
               coalesce(hll_cardinality(hll_union_agg(users) FILTER (WHERE {visitor_rows})), 0),
               NULL::bigint
        FROM ({rows}) r WHERE {where}
        """
    ).format(
        rows=_detail_rows(request.filters),
        where=where,
        visitor_rows=_visitor_rows(request.filters),
    )
    return query, params


def timeseries_sql(request: TimeseriesRequest) -> tuple[sql.Composed, dict[str, Any], bool]:
    """Rows (local period start as timestamp, views, events, visitors); the flag says whether
    visitors are exact (daily buckets of whole UTC days, unfiltered)."""
    stats = request.stats
    pieces = split(stats.range.start, stats.range.end)
    params = _piece_params(stats.site_id, pieces)
    params["tz"] = stats.range.timezone
    unit = sql.SQL(request.interval)
    daily_utc = request.interval == "day" and stats.range.utc_aligned
    if daily_utc and not stats.filters:
        query = sql.SQL(
            """
            SELECT day::timestamp, page_views, events, unique_users FROM daily_stats
            WHERE {full_days} ORDER BY day
            """
        ).format(full_days=_FULL_DAYS)
        return query, params, True
    if not stats.filters:
        query = sql.SQL(
            """
            SELECT date_trunc('{unit}', bucket AT TIME ZONE %(tz)s) AS t, sum(page_views)::bigint,
                   sum(events)::bigint, hll_cardinality(hll_union_agg(visitors))
            FROM quarter_hour_stats
            WHERE site_id = %(site)s AND bucket >= %(start)s AND bucket < %(end)s
            GROUP BY t ORDER BY t
            """
        ).format(unit=unit)
        params.update(start=stats.range.start, end=stats.range.end)
        return query, params, False
    where = _filter_clause(stats.filters, params)
    paths = _uses_paths(stats.filters)
    source = sql.SQL(
        "SELECT day::timestamp AS t, event_type, {path}, events, users FROM {table} "
        "WHERE {full_days}"
    ).format(
        path=sql.SQL("path" if paths else "NULL::text AS path"),
        table=sql.Identifier("daily_details" if paths else "daily_event_types"),
        full_days=_FULL_DAYS,
    )
    if not daily_utc:
        source = sql.SQL(
            "SELECT date_trunc('{unit}', bucket AT TIME ZONE %(tz)s) AS t, event_type, path, "
            "events, users FROM quarter_hour_details "
            "WHERE site_id = %(site)s AND bucket >= %(start)s AND bucket < %(end)s"
        ).format(unit=unit)
        params.update(start=stats.range.start, end=stats.range.end)
    query = sql.SQL(
        """
        SELECT t, coalesce(sum(events) FILTER (WHERE event_type = 'page_view'), 0)::bigint,
               sum(events)::bigint,
               coalesce(hll_cardinality(hll_union_agg(users) FILTER (WHERE {visitor_rows})), 0)
        FROM ({source}) r WHERE {where} GROUP BY t ORDER BY t
        """
    ).format(source=source, where=where, visitor_rows=_visitor_rows(stats.filters))
    return query, params, False


def _breakdown_filters(request: BreakdownRequest) -> tuple[Filter, ...]:
    filters = request.stats.filters
    if request.dimension == "path" and not any(f.dimension == "event_type" for f in filters):
        # A page breakdown counts page views, as Plausible's does.
        filters = (*filters, Filter("event_type", False, PAGE_VIEW))
    return filters


def _breakdown_visitors(request: BreakdownRequest, filters: tuple[Filter, ...]) -> sql.Composed:
    # Grouping by event type selects each type's events, as an event type filter would.
    visitor_rows = sql.SQL("TRUE") if request.dimension == "event_type" else _visitor_rows(filters)
    return sql.SQL("coalesce(hll_cardinality(hll_union_agg(users) FILTER (WHERE {})), 0)").format(
        visitor_rows
    )


# Page views per path: whole UTC months from monthly_paths, the other whole days from
# daily_paths, the edges from the quarter-hour details.
PATH_VIEWS_ROWS = sql.SQL(
    """
    SELECT path, views AS events FROM monthly_paths
    WHERE site_id = %(site)s AND month >= %(month_from)s AND month < %(month_to)s
    UNION ALL
    SELECT path, views FROM daily_paths
    WHERE site_id = %(site)s AND ((day >= %(day_from)s AND day < %(month_from)s)
                               OR (day >= %(month_to)s AND day < %(day_to)s))
    UNION ALL
    SELECT path, events FROM quarter_hour_details WHERE {edges} AND event_type = 'page_view'
    """
).format(edges=_EDGE_BUCKETS)


def breakdown_sql(request: BreakdownRequest) -> tuple[sql.Composed, dict[str, Any]]:
    """One page of `limit` rows ordered by the first metric (most first, ties by value
    ascending), leaving out values whose first metric is zero.

    Sorted by views or events: rows (value, views, events), visitors to be added for the
    page's values by breakdown_visitors_sql. Sorted by visitors: rows (value, views, events,
    visitors), every value's sketch merged to rank them (slower).
    """
    stats = request.stats
    pieces = split(stats.range.start, stats.range.end)
    params = _piece_params(stats.site_id, pieces)
    filters = _breakdown_filters(request)
    params["limit"] = request.limit
    params["offset"] = request.limit * (request.page - 1)
    key = sql.Identifier(request.dimension)
    sort = stats.metrics[0]
    sums = sql.SQL(
        "coalesce(sum(events) FILTER (WHERE event_type = 'page_view'), 0)::bigint AS views, "
        "sum(events)::bigint AS events"
    )
    if sort == "visitors":
        visitors = _breakdown_visitors(request, filters)
        where = _filter_clause(filters, params)
        query = sql.SQL(
            """
            SELECT {key}, {sums}, {visitors} AS visitors FROM ({rows}) r WHERE {where}
            GROUP BY {key} HAVING {visitors} > 0
            ORDER BY visitors DESC, {key} LIMIT %(limit)s OFFSET %(offset)s
            """
        ).format(
            key=key,
            sums=sums,
            visitors=visitors,
            rows=_detail_rows(filters, request.dimension),
            where=where,
        )
        return query, params
    if request.dimension == "path" and stats.filters == ():
        query = sql.SQL(
            """
            SELECT path, sum(events)::bigint AS views, sum(events)::bigint AS events
            FROM ({rows}) r GROUP BY path HAVING sum(events) > 0
            ORDER BY 2 DESC, path LIMIT %(limit)s OFFSET %(offset)s
            """
        ).format(rows=PATH_VIEWS_ROWS)
        return query, params
    where = _filter_clause(filters, params)
    query = sql.SQL(
        """
        SELECT {key}, {sums} FROM ({rows}) r WHERE {where} GROUP BY {key}
        HAVING sum(events) FILTER (WHERE {sort_rows}) > 0
        ORDER BY {sort} DESC, {key} LIMIT %(limit)s OFFSET %(offset)s
        """
    ).format(
        key=key,
        sums=sums,
        rows=_detail_rows(filters, request.dimension),
        where=where,
        sort=sql.Identifier(sort),
        sort_rows=sql.SQL("event_type = 'page_view'" if sort == "views" else "TRUE"),
    )
    return query, params


def breakdown_visitors_sql(
    request: BreakdownRequest, values: list[str]
) -> tuple[sql.Composed, dict[str, Any]]:
    """Rows (value, visitors) for the given values of the breakdown's dimension."""
    stats = request.stats
    params = _piece_params(stats.site_id, split(stats.range.start, stats.range.end))
    filters = _breakdown_filters(request)
    where = _filter_clause(filters, params)
    params["values"] = values
    key = sql.Identifier(request.dimension)
    query = sql.SQL(
        """
        SELECT {key}, {visitors} FROM ({rows}) r
        WHERE {where} AND {key} = ANY(%(values)s) GROUP BY {key}
        """
    ).format(
        key=key,
        visitors=_breakdown_visitors(request, filters),
        rows=_detail_rows(filters, request.dimension),
        where=where,
    )
    return query, params
