"""The SQL answering each stats request (ingest/query.py), with its bound parameters. Pure.

A request's UTC interval is read as the UTC days lying wholly inside it (daily rollups;
whole UTC months from monthly_paths for top paths) plus at most two edges. Totals of the
edges come from 15-minute rollups (every zone in use today has an offset that is a multiple
of 15 minutes, so they are exact); breakdowns and filters of the edges come from the raw
events of those hours (BRIN index events_time), which the per-day rollups cannot split.
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any

import msgspec
from psycopg import sql

from core.calendar import next_month, one_whole_month
from ingest.query import (
    PAGE_VIEW,
    BreakdownRequest,
    Dimension,
    Filter,
    StatsRequest,
    TimeseriesRequest,
)


class Pieces(msgspec.Struct, frozen=True):
    """A UTC interval as whole UTC days [day_from, day_to) plus up to two bucket edges."""

    day_from: dt.date
    day_to: dt.date
    edges: tuple[tuple[dt.datetime, dt.datetime], ...]


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


def whole_months(day_from: dt.date, day_to: dt.date) -> tuple[dt.date, dt.date]:
    """The whole UTC months [month_from, month_to) inside days [day_from, day_to), as their
    first days; both equal day_to when there is none."""
    month_from = day_from if day_from.day == 1 else next_month(day_from)
    month_to = day_to.replace(day=1)
    if month_from >= month_to:
        return day_to, day_to
    return month_from, month_to


def _utc_days(start: dt.datetime, end: dt.datetime) -> tuple[dt.date, dt.date]:
    """The first and last UTC day that [start, end) touches (day partitions of `events`)."""
    last = end.astimezone(dt.UTC) - dt.timedelta(microseconds=1)
    return start.astimezone(dt.UTC).date(), max(start.astimezone(dt.UTC), last).date()


def _piece_params(site_id: str, pieces: Pieces) -> dict[str, Any]:
    edges = [*pieces.edges, (_EPOCH, _EPOCH), (_EPOCH, _EPOCH)]
    month_from, month_to = whole_months(pieces.day_from, pieces.day_to)
    params: dict[str, Any] = {
        "site": site_id,
        "day_from": pieces.day_from,
        "day_to": pieces.day_to,
        "month_from": month_from,
        "month_to": month_to,
    }
    for i, (a, b) in enumerate(edges[:2], start=1):
        params[f"a{i}"], params[f"b{i}"] = a, b
        params[f"d{i}a"], params[f"d{i}b"] = _utc_days(a, b)
    return params


_EDGE_BUCKETS = sql.SQL(
    "site_id = %(site)s AND ((bucket >= %(a1)s AND bucket < %(b1)s)"
    " OR (bucket >= %(a2)s AND bucket < %(b2)s))"
)
_FULL_DAYS = sql.SQL("site_id = %(site)s AND day >= %(day_from)s AND day < %(day_to)s")
# The same edges in raw events; the day bounds let PostgreSQL skip the other day partitions.
_RAW_EDGES = sql.SQL(
    "site_id = %(site)s AND ((day >= %(d1a)s AND day <= %(d1b)s"
    " AND event_time >= %(a1)s AND event_time < %(b1)s)"
    " OR (day >= %(d2a)s AND day <= %(d2b)s AND event_time >= %(a2)s AND event_time < %(b2)s))"
)
# A raw row's contribution to a sketch: the same hash the consumer's rollups add.
_RAW_USERS = sql.SQL("hll_add_agg(hll_hash_text(user_id))")

# The first day of the range's whole months [month_from, month_to) that is not sealed into
# sealed_monthly_paths (consumer/seal.py), read in the statement's snapshot.
SEALED_END_SQL = (
    "greatest(%(month_from)s::date, least(%(month_to)s::date, "
    "(SELECT sealed_before FROM sealed_days)))"
)
SEALED_END = sql.SQL(SEALED_END_SQL)

# Whether every day of the whole months [month_from, month_to) is sealed.
MONTH_SEALED_SQL = "(SELECT sealed_before >= %(month_to)s FROM sealed_days)"
MONTH_SEALED = sql.SQL(MONTH_SEALED_SQL)

# Unfiltered totals: daily rollups for whole days, quarter-hour rollups for the edges.
TOTALS_ROWS = sql.SQL(
    """
    SELECT s.page_views, s.events, s.unique_users, v.visitors
    FROM daily_stats s LEFT JOIN daily_visitors v USING (site_id, day)
    WHERE s.{full_days}
    UNION ALL
    SELECT page_views, events, NULL, visitors FROM quarter_hour_stats WHERE {edges}
    """
).format(full_days=_FULL_DAYS, edges=_EDGE_BUCKETS)

# Filtered rows: per (event type, path) rollups for whole days, raw events for the edges.
DETAIL_ROWS = sql.SQL(
    """
    SELECT event_type, path, events, users FROM daily_details WHERE {full_days}
    UNION ALL
    SELECT event_type, path, count(*), {raw_users} FROM events WHERE {raw_edges}
    GROUP BY event_type, path
    """
).format(full_days=_FULL_DAYS, raw_edges=_RAW_EDGES, raw_users=_RAW_USERS)

# The same columns per event type only (no path): a few rows a day instead of one per path,
# and one a month for the sealed days of whole months (consumer/seal.py).
TYPE_ROWS = sql.SQL(
    """
    SELECT event_type, NULL::text AS path, events, users FROM sealed_monthly_event_types
    WHERE site_id = %(site)s AND month >= %(month_from)s AND month < %(month_to)s
    UNION ALL
    SELECT event_type, NULL, events, users FROM daily_event_types
    WHERE site_id = %(site)s AND ((day >= %(day_from)s AND day < %(month_from)s)
                               OR (day >= {sealed_end} AND day < %(day_to)s))
    UNION ALL
    SELECT event_type, NULL, count(*), {raw_users} FROM events WHERE {raw_edges}
    GROUP BY event_type
    """
).format(sealed_end=SEALED_END, raw_edges=_RAW_EDGES, raw_users=_RAW_USERS)


def _uses_paths(filters: tuple[Filter, ...], dimension: Dimension | None = None) -> bool:
    return dimension == "path" or any(f.dimension == "path" for f in filters)


# Page-view rows per path: daily_details' page views for whole days, quarter_hour_paths for the
# edges. Answers any request whose filters keep page views only (a page breakdown does).
PAGE_ROWS = sql.SQL(
    """
    SELECT event_type, path, events, users FROM daily_details
    WHERE {full_days} AND event_type = 'page_view'
    UNION ALL
    SELECT 'page_view', path, views, visitors FROM quarter_hour_paths WHERE {edges}
    """
).format(full_days=_FULL_DAYS, edges=_EDGE_BUCKETS)


def _only_page_views(filters: tuple[Filter, ...]) -> bool:
    return any(
        f.dimension == "event_type" and not f.negated and f.value == PAGE_VIEW for f in filters
    )


def _detail_rows(filters: tuple[Filter, ...], dimension: Dimension | None = None) -> sql.Composed:
    """The cheapest rollup rows that can answer: per event type unless paths matter, page-view
    rows when the filters keep page views only, else every (event type, path)."""
    if not _uses_paths(filters, dimension):
        return TYPE_ROWS
    return PAGE_ROWS if _only_page_views(filters) else DETAIL_ROWS


# DISTINCT in a subquery lets the planner hash instead of sorting (faster than count(DISTINCT)).
EXACT_VISITORS_SQL = """
SELECT count(*) FROM (
    SELECT DISTINCT user_id FROM daily_users
    WHERE site_id = %(site)s AND day >= %(day_from)s AND day < %(day_to)s
) users
"""


def _filter_clause(filters: tuple[Filter, ...]) -> sql.Composable:
    """The filters as SQL with placeholders f0, f1…; _bind_filters gives them their values."""
    clauses: list[sql.Composable] = [sql.SQL("TRUE")]
    for i, f in enumerate(filters):
        op = sql.SQL("<>" if f.negated else "=")
        clauses.append(
            sql.SQL("{} {} {}").format(sql.Identifier(f.dimension), op, sql.Placeholder(f"f{i}"))
        )
    return sql.SQL(" AND ").join(clauses)


def statement_shape(filters: tuple[Filter, ...]) -> tuple[Filter, ...]:
    """The filters as far as the SQL text depends on them, the key of the composed-statement
    caches: dimensions, operators and order, values blanked (they are bound as f0, f1…)
    except an event type of page_view, which picks cheaper rollup rows (_only_page_views).
    Keyed by values, a cache would hold one statement per value ever asked for."""
    return tuple(
        f
        if f.dimension == "event_type" and f.value == PAGE_VIEW
        else Filter(f.dimension, f.negated, "")
        for f in filters
    )


def _bind_filters(filters: tuple[Filter, ...], params: dict[str, Any]) -> None:
    params.update((f"f{i}", f.value) for i, f in enumerate(filters))


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


# The unfiltered shapes are composed once (composing takes ~0.1 ms, a tenth of a request).
TOTALS_AGGREGATE = sql.SQL(
    """
    SELECT coalesce(sum(page_views), 0)::bigint, coalesce(sum(events), 0)::bigint,
           coalesce(hll_cardinality(hll_union_agg(visitors)), 0),
           sum(unique_users)::bigint
    FROM ({rows}) r
    """
).format(rows=TOTALS_ROWS)

DAILY_UTC_SERIES = sql.SQL(
    """
    SELECT day::timestamp, page_views, events, unique_users FROM daily_stats
    WHERE {full_days} ORDER BY day
    """
).format(full_days=_FULL_DAYS)


@functools.cache
def _unfiltered_series(interval: str, hourly: bool) -> sql.Composed:
    """Periods of the request's zone from 15-minute rows, or hourly ones where its hours are
    UTC hours: 24 rows a day, not 96."""
    return sql.SQL(
        """
        SELECT date_trunc('{unit}', {time} AT TIME ZONE %(tz)s) AS t, sum(page_views)::bigint,
               sum(events)::bigint, hll_cardinality(hll_union_agg(visitors))
        FROM {table}
        WHERE site_id = %(site)s AND {time} >= %(start)s AND {time} < %(end)s
        GROUP BY t ORDER BY t
        """
    ).format(
        unit=sql.SQL(interval),
        time=sql.Identifier("hour" if hourly else "bucket"),
        table=sql.Identifier("hourly_stats" if hourly else "quarter_hour_stats"),
    )


def aggregate_sql(request: StatsRequest) -> tuple[sql.Composed, dict[str, Any]]:
    """One row: views, events, sketched visitors, and the sum of daily exact unique users
    (the row count an exact distinct count would read, or NULL when it cannot be exact)."""
    pieces = split(request.range.start, request.range.end)
    params = _piece_params(request.site_id, pieces)
    if not request.filters:
        return TOTALS_AGGREGATE, params
    _bind_filters(request.filters, params)
    return _filtered_aggregate(statement_shape(request.filters)), params


# Composed once per shape of filters (composing costs ~0.1 ms; a dashboard repeats its
# filters). The caches below hold at most 1024 statements each, of a few kB.
@functools.lru_cache(maxsize=1024)
def _filtered_aggregate(filters: tuple[Filter, ...]) -> sql.Composed:
    return sql.SQL(
        """
        SELECT coalesce(sum(events) FILTER (WHERE event_type = 'page_view'), 0)::bigint,
               coalesce(sum(events), 0)::bigint,
               coalesce(hll_cardinality(hll_union_agg(users) FILTER (WHERE {visitor_rows})), 0),
               NULL::bigint
        FROM ({rows}) r WHERE {where}
        """
    ).format(
        rows=_detail_rows(filters),
        where=_filter_clause(filters),
        visitor_rows=_visitor_rows(filters),
    )


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
        return DAILY_UTC_SERIES, params, True
    if not stats.filters:
        hourly = request.interval == "hour" and stats.range.hour_aligned
        params.update(start=stats.range.start, end=stats.range.end)
        return _unfiltered_series(request.interval, hourly), params, False
    where = _filter_clause(stats.filters)
    _bind_filters(stats.filters, params)
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
        # Periods that are not whole UTC days: counted from raw events.
        source = sql.SQL(
            "SELECT date_trunc('{unit}', event_time AT TIME ZONE %(tz)s) AS t, event_type, path, "
            "count(*) AS events, {raw_users} AS users FROM events "
            "WHERE site_id = %(site)s AND day >= %(start_day)s AND day <= %(end_day)s "
            "AND event_time >= %(start)s AND event_time < %(end)s GROUP BY 1, 2, 3"
        ).format(unit=unit, raw_users=_RAW_USERS)
        start_day, end_day = _utc_days(stats.range.start, stats.range.end)
        params.update(
            start=stats.range.start, end=stats.range.end, start_day=start_day, end_day=end_day
        )
    query = sql.SQL(
        """
        SELECT t, coalesce(sum(events) FILTER (WHERE event_type = 'page_view'), 0)::bigint,
               sum(events)::bigint,
               coalesce(hll_cardinality(hll_union_agg(users) FILTER (WHERE {visitor_rows})), 0)
        FROM ({source}) r WHERE {where} GROUP BY t ORDER BY t
        """
    ).format(source=source, where=where, visitor_rows=_visitor_rows(stats.filters))
    return query, params, False


def _breakdown_filters(dimension: Dimension, filters: tuple[Filter, ...]) -> tuple[Filter, ...]:
    if dimension == "path" and not any(f.dimension == "event_type" for f in filters):
        # A page breakdown counts page views, as Plausible's does.
        filters = (*filters, Filter("event_type", False, PAGE_VIEW))
    return filters


def _breakdown_visitors(dimension: Dimension, filters: tuple[Filter, ...]) -> sql.Composed:
    # Grouping by event type selects each type's events, as an event type filter would.
    visitor_rows = sql.SQL("TRUE") if dimension == "event_type" else _visitor_rows(filters)
    return sql.SQL("coalesce(hll_cardinality(hll_union_agg(users) FILTER (WHERE {})), 0)").format(
        visitor_rows
    )


# Page views per path: whole UTC months from monthly_paths, the other whole days from
# daily_paths, the edges from quarter_hour_paths.
PATH_VIEWS_ROWS = sql.SQL(
    """
    SELECT path, views AS events FROM monthly_paths
    WHERE site_id = %(site)s AND month >= %(month_from)s AND month < %(month_to)s
    UNION ALL
    SELECT path, views FROM daily_paths
    WHERE site_id = %(site)s AND ((day >= %(day_from)s AND day < %(month_from)s)
                               OR (day >= %(month_to)s AND day < %(day_to)s))
    UNION ALL
    SELECT path, views FROM quarter_hour_paths WHERE {edges}
    """
).format(edges=_EDGE_BUCKETS)


# A range of exactly one UTC month: one row per path, nothing to add up (the period=month
# question; summing 1,000 rows as numerics took most of the time of the general form). Once
# all its days are sealed (consumer/seal.py), the page's first rows of sealed_monthly_paths_top
# with their visitors; until then monthly_paths, visitors NULL (breakdown_visitors_sql).
ONE_MONTH_PATHS = sql.SQL(
    """
    SELECT path, views, views, visitors FROM (
        (SELECT path, views, hll_cardinality(visitors) AS visitors FROM sealed_monthly_paths
         WHERE {sealed} AND site_id = %(site)s AND timezone = 'UTC' AND month = %(month_from)s
           AND views > 0
         ORDER BY views DESC, path LIMIT %(limit)s OFFSET %(offset)s)
        UNION ALL
        (SELECT path, views, NULL FROM monthly_paths
         WHERE NOT {sealed} AND site_id = %(site)s AND month = %(month_from)s AND views > 0
         ORDER BY views DESC, path LIMIT %(limit)s OFFSET %(offset)s)
    ) r
    ORDER BY views DESC, path
    """
).format(sealed=MONTH_SEALED)


def _one_whole_month(pieces: Pieces) -> bool:
    return not pieces.edges and one_whole_month(pieces.day_from, pieces.day_to)


def breakdown_sql(request: BreakdownRequest) -> tuple[sql.Composable, dict[str, Any]]:
    """One page of `limit` rows ordered by the first metric (most first, ties by value
    ascending), leaving out values whose first metric is zero.

    Rows (value, views, events, visitors). Sorted by views or events, visitors is NULL
    (except for a sealed month's pages): breakdown_visitors_sql adds them for the page's
    values. Sorted by visitors, or by event type with visitors asked for, every value's
    sketch is merged here.
    """
    stats = request.stats
    pieces = split(stats.range.start, stats.range.end)
    params = _piece_params(stats.site_id, pieces)
    params["limit"] = request.limit
    params["offset"] = request.limit * (request.page - 1)
    _bind_filters(_breakdown_filters(request.dimension, stats.filters), params)
    sort = stats.metrics[0]
    if request.dimension == "path" and stats.filters == () and sort != "visitors":
        if _one_whole_month(pieces):
            return ONE_MONTH_PATHS, params
        return PAGES_BY_VIEWS, params
    query = _breakdown_query(
        request.dimension, sort, "visitors" in stats.metrics, statement_shape(stats.filters)
    )
    return query, params


# The page breakdown without filters, sorted by views.
PAGES_BY_VIEWS = sql.SQL(
    """
    SELECT path, sum(events)::bigint AS views, sum(events)::bigint AS events, NULL::float8
    FROM ({rows}) r GROUP BY path HAVING sum(events) > 0
    ORDER BY 2 DESC, path LIMIT %(limit)s OFFSET %(offset)s
    """
).format(rows=PATH_VIEWS_ROWS)


@functools.lru_cache(maxsize=1024)
def _breakdown_query(
    dimension: Dimension, sort: str, with_visitors: bool, stats_filters: tuple[Filter, ...]
) -> sql.Composed:
    """breakdown_sql's statement, composed once per kind of request and shape of filters."""
    filters = _breakdown_filters(dimension, stats_filters)
    key = sql.Identifier(dimension)
    sums = sql.SQL(
        "coalesce(sum(events) FILTER (WHERE event_type = 'page_view'), 0)::bigint AS views, "
        "sum(events)::bigint AS events"
    )
    sort_rows = sql.SQL("event_type = 'page_view'" if sort == "views" else "TRUE")
    rows = _detail_rows(filters, dimension)
    where = _filter_clause(filters)
    # Event types are few: their sketches are merged in the ranking statement itself, which
    # saves a second statement reading the same rows.
    if sort == "visitors" or (dimension == "event_type" and with_visitors):
        visitors = _breakdown_visitors(dimension, filters)
        return sql.SQL(
            """
            SELECT {key}, {sums}, {visitors} AS visitors FROM ({rows}) r WHERE {where}
            GROUP BY {key} HAVING {having} > 0
            ORDER BY {sort} DESC, {key} LIMIT %(limit)s OFFSET %(offset)s
            """
        ).format(
            key=key,
            sums=sums,
            visitors=visitors,
            rows=rows,
            where=where,
            having=visitors
            if sort == "visitors"
            else sql.SQL("sum(events) FILTER (WHERE {})").format(sort_rows),
            sort=sql.Identifier(sort),
        )
    return sql.SQL(
        """
        SELECT {key}, {sums}, NULL::float8 FROM ({rows}) r WHERE {where} GROUP BY {key}
        HAVING sum(events) FILTER (WHERE {sort_rows}) > 0
        ORDER BY {sort} DESC, {key} LIMIT %(limit)s OFFSET %(offset)s
        """
    ).format(
        key=key, sums=sums, rows=rows, where=where, sort=sql.Identifier(sort), sort_rows=sort_rows
    )


# Visitors of given paths among page views: the sealed days of whole months from one sketch a
# month (sealed_monthly_paths), the other whole days' from daily_details (through
# daily_details_by_path), the edges' from quarter_hour_paths.
PATH_VISITORS_ROWS = sql.SQL(
    """
    SELECT path, visitors AS users FROM sealed_monthly_paths
    WHERE site_id = %(site)s AND timezone = 'UTC' AND month >= %(month_from)s
      AND month < %(month_to)s AND path = ANY(%(values)s)
    UNION ALL
    SELECT path, users FROM daily_details
    WHERE site_id = %(site)s AND path = ANY(%(values)s) AND event_type = 'page_view'
      AND ((day >= %(day_from)s AND day < %(month_from)s)
           OR (day >= {sealed_end} AND day < %(day_to)s))
    UNION ALL
    SELECT path, visitors FROM quarter_hour_paths WHERE {edges} AND path = ANY(%(values)s)
    """
).format(edges=_EDGE_BUCKETS, sealed_end=SEALED_END)


def breakdown_visitors_sql(
    request: BreakdownRequest, values: list[str]
) -> tuple[sql.Composed, dict[str, Any]]:
    """Rows (value, visitors) for the given values of the breakdown's dimension."""
    stats = request.stats
    params = _piece_params(stats.site_id, split(stats.range.start, stats.range.end))
    _bind_filters(_breakdown_filters(request.dimension, stats.filters), params)
    params["values"] = values
    return _breakdown_visitors_query(request.dimension, statement_shape(stats.filters)), params


@functools.lru_cache(maxsize=1024)
def _breakdown_visitors_query(
    dimension: Dimension, stats_filters: tuple[Filter, ...]
) -> sql.Composed:
    if dimension == "path" and stats_filters == ():
        return PAGE_VISITORS
    filters = _breakdown_filters(dimension, stats_filters)
    key = sql.Identifier(dimension)
    return sql.SQL(
        """
        SELECT {key}, {visitors} FROM ({rows}) r
        WHERE {where} AND {key} = ANY(%(values)s) GROUP BY {key}
        """
    ).format(
        key=key,
        visitors=_breakdown_visitors(dimension, filters),
        rows=_detail_rows(filters, dimension),
        where=_filter_clause(filters),
    )


PAGE_VISITORS = sql.SQL(
    "SELECT path, coalesce(hll_cardinality(hll_union_agg(users)), 0) FROM ({rows}) r GROUP BY path"
).format(rows=PATH_VISITORS_ROWS)
