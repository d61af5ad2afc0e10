"""Step 3, a hit's context and custom properties: a page of one context dimension's values
(browser, os, device, country) from daily_dimensions and the range's edges (15-minute rows, or
raw events under a filter), a page of
custom property values from daily_props and the raw edges, and the questions no rollup can
answer (a filter on a context dimension or a custom property), from raw events over the whole
range. Pure.

Raw reads are bounded by the range limits of ingest/stats_params.py and by the stats pool's
statement_timeout (a 503 `stats_timeout` when a site's range holds too many events).
"""

from __future__ import annotations

from typing import Any

from psycopg import sql

from ingest import stats_sources as sources
from ingest.stats_days import utc_days
from ingest.stats_params import (
    CONTEXT_DIMENSIONS,
    NO_VALUE,
    NOT_SET,
    BreakdownRequest,
    Dimension,
    Filter,
    StatsRequest,
    TimeseriesRequest,
)
from ingest.stats_plan_parts import Days, Edges, Instants, Statement
from ingest.stats_sql import (
    CACHE,
    bind_filters,
    breakdown_filters,
    statement_shape,
    union_all,
    visitor_rows,
)
from ingest.stats_sql_breakdown import page_clause

PAGE_VIEWS = sql.SQL("count(*) FILTER (WHERE event_type = 'page_view')")
RAW_RANGE = sql.SQL(
    "site_id = %(site)s AND day >= %(day_from)s AND day <= %(day_to)s "
    "AND event_time >= %(start)s AND event_time < %(end)s"
)


def column(dimension: Dimension, key: sql.Composable | None = None) -> sql.Composable:
    """A raw event's value of `dimension`; a context dimension's missing value is NOT_SET,
    a custom property's (the key bound at `key`) NO_VALUE."""
    if dimension in CONTEXT_DIMENSIONS:
        return sql.SQL("coalesce({}, {})").format(sql.Identifier(dimension), sql.Literal(NOT_SET))
    if dimension == "props":
        assert key is not None
        return sql.SQL("coalesce(props ->> {}, {})").format(key, sql.Literal(NO_VALUE))
    return sql.Identifier(dimension)


def raw_filter_clause(filters: tuple[Filter, ...]) -> sql.Composable:
    """The filters over raw events, with placeholders f0, f1… and a custom property's key
    f0k, f1k… (bind_raw_filters)."""
    clauses: list[sql.Composable] = [sql.SQL("TRUE")]
    for i, f in enumerate(filters):
        op = sql.SQL("<>" if f.negated else "=")
        value = column(f.dimension, sql.Placeholder(f"f{i}k"))
        clauses.append(sql.SQL("{} {} {}").format(value, op, sql.Placeholder(f"f{i}")))
    return sql.SQL(" AND ").join(clauses)


def bind_raw_filters(filters: tuple[Filter, ...], params: dict[str, Any]) -> None:
    """The values of raw_filter_clause's placeholders: the filters' values and keys (a key is
    bound, not composed, so that the statement's text is one per filter shape)."""
    bind_filters(filters, params)
    params.update((f"f{i}k", f.key) for i, f in enumerate(filters) if f.dimension == "props")


def _visitors(filters: tuple[Filter, ...], by_event_type: bool = False) -> sql.Composable:
    # Grouping by event type selects each type's events, as an event type filter would (the
    # rollups' ranking counts them so: stats_sql_breakdown._breakdown_visitors).
    rows = sql.SQL("TRUE") if by_event_type else visitor_rows(filters)
    return sql.SQL(
        "coalesce(hll_cardinality(hll_add_agg(hll_hash_text(user_id)) FILTER (WHERE {})), 0)"
    ).format(rows)


def _raw_params(statement: Statement, request: StatsRequest) -> dict[str, Any]:
    [_raw_range] = statement.parts  # one Instants("events", start, end): the request's range
    r = request.range
    day_from, day_to = utc_days(r.start, r.end)
    params: dict[str, Any] = {"site": request.site_id, "tz": r.timezone, "start": r.start}
    params.update(end=r.end, day_from=day_from, day_to=day_to)
    return params


def _raw_counts(
    shape: tuple[Filter, ...], head: str = "", more: str = "", tail: str = ""
) -> sql.Composable:
    """SELECT `head` views, events, visitors `more` FROM the range's raw events, filtered,
    then `tail`."""
    return sql.SQL(
        "SELECT "
        + head
        + "{views}::bigint, count(*)::bigint, {visitors}"
        + more
        + " FROM events WHERE {range} AND {filters}"
        + tail
    ).format(
        views=PAGE_VIEWS,
        visitors=_visitors(shape),
        range=RAW_RANGE,
        filters=raw_filter_clause(shape),
    )


def raw_totals_sql(
    statement: Statement, request: StatsRequest
) -> tuple[sql.Composable, dict[str, Any]]:
    """One row: views, events, sketched visitors, NULL (no exact count)."""
    params = _raw_params(statement, request)
    bind_raw_filters(request.filters, params)
    shape = statement_shape(request.filters)
    compose = lambda: _raw_counts(shape, more=", NULL::bigint")  # noqa: E731
    return CACHE.get(("raw totals", shape), compose), params


def raw_series_sql(
    statement: Statement, request: TimeseriesRequest
) -> tuple[sql.Composable, dict[str, Any]]:
    """Rows (local period start, views, events, visitors), in order."""
    stats = request.stats
    params = _raw_params(statement, stats)
    params["unit"] = request.interval
    bind_raw_filters(stats.filters, params)
    shape = statement_shape(stats.filters)
    head = "date_trunc(%(unit)s, event_time AT TIME ZONE %(tz)s) AS t, "
    compose = lambda: _raw_counts(shape, head=head, tail=" GROUP BY 1 ORDER BY 1")  # noqa: E731
    return CACHE.get(("raw series", shape), compose), params


_SORTS = {"views": PAGE_VIEWS, "events": sql.SQL("count(*)")}


def raw_ranking_sql(
    statement: Statement, request: BreakdownRequest
) -> tuple[sql.Composable, dict[str, Any]]:
    """Rows (value, views, events, visitors) of one page, most first, ties by value."""
    stats = request.stats
    filters = breakdown_filters(request.dimension, stats.filters)
    params = _raw_params(statement, stats)
    params["offset"] = request.limit * (request.page - 1)
    bind_raw_filters(filters, params)
    shape = statement_shape(filters)
    sort = stats.metrics[0]

    def compose() -> sql.Composable:
        visitors = _visitors(shape, by_event_type=request.dimension == "event_type")
        return sql.SQL(
            "SELECT {key}, {views}::bigint, count(*)::bigint, {visitors} "
            "FROM events WHERE {range} AND {filters} GROUP BY 1 HAVING {sort} > 0 "
            "ORDER BY {sort} DESC, 1 {page}"
        ).format(
            key=column(request.dimension),
            views=PAGE_VIEWS,
            visitors=visitors,
            range=RAW_RANGE,
            filters=raw_filter_clause(shape),
            sort=visitors if sort == "visitors" else _SORTS[sort],
            page=page_clause(request.limit, request.page == 1),
        )

    key = ("raw ranking", request.dimension, sort, shape, request.limit, request.page == 1)
    return CACHE.get(key, compose), params


_SUMS = {
    "views": sql.SQL("sum(page_views)"),
    "events": sql.SQL("sum(events)"),
    "visitors": sql.SQL("hll_cardinality(hll_union_agg(visitors))"),
}


def context_ranking_sql(
    statement: Statement, request: BreakdownRequest
) -> tuple[sql.Composable, dict[str, Any]]:
    """A page of a context dimension's values: whole UTC days from daily_dimensions, the
    range's edges from quarter_hour_dimensions. With one filter on a context dimension (the
    planner's only other case), the days read the filter's rows of daily_dimension_pairs, or
    of daily_dimensions when it is on the breakdown's own dimension, and the edges raw events."""
    stats = request.stats
    params: dict[str, Any] = {"site": stats.site_id, "dimension": request.dimension}
    sources.bind(statement.parts, params)
    params["offset"] = request.limit * (request.page - 1)
    bind_raw_filters(stats.filters, params)
    shape = statement_shape(stats.filters)
    sort = stats.metrics[0]

    def compose() -> sql.Composable:
        rows: list[sql.Composable] = []
        for i, part in enumerate(statement.parts):
            p = f"p{i}_"
            if isinstance(part, Days):
                rows.append(_context_days(part, p, request.dimension, shape))
            elif isinstance(part, Edges) and part.table == "quarter_hour_dimensions":
                rows.append(
                    sql.SQL(
                        "SELECT value, page_views, events, visitors FROM quarter_hour_dimensions "
                        "WHERE site_id = %(site)s AND dimension = %(dimension)s AND {spans}"
                    ).format(spans=sources.spans(part, p, raw=False))
                )
            else:
                assert isinstance(part, Edges)
                rows.append(
                    sql.SQL(
                        "SELECT {key}, {views}, count(*), hll_add_agg(hll_hash_text(user_id)) "
                        "FILTER (WHERE event_type = 'page_view') "
                        "FROM events WHERE site_id = %(site)s AND {spans} AND {filters} "
                        "GROUP BY 1"
                    ).format(
                        key=column(request.dimension),
                        views=PAGE_VIEWS,
                        spans=sources.spans(part, p, raw=True),
                        filters=raw_filter_clause(shape),
                    )
                )
        return sql.SQL(
            "SELECT value, sum(page_views)::bigint, sum(events)::bigint, "
            "coalesce(hll_cardinality(hll_union_agg(visitors)), 0) "
            "FROM ({rows}) r (value, page_views, events, visitors) "
            "GROUP BY value HAVING {sort} > 0 ORDER BY {sort} DESC, value {page}"
        ).format(
            rows=union_all(rows),
            sort=_SUMS[sort],
            page=page_clause(request.limit, request.page == 1),
        )

    key = (
        "context ranking",
        sources.shape(statement.parts),
        request.dimension,
        sort,
        shape,
        request.limit,
        request.page == 1,
    )
    return CACHE.get(key, compose), params


def _context_days(
    part: Days, p: str, dimension: Dimension, filters: tuple[Filter, ...]
) -> sql.Composable:
    """Whole UTC days of one dimension's values, of the events that pass `filters` (none, or
    one on a context dimension: the table the planner chose holds its value's rows)."""
    days = sql.SQL("day >= {first} AND day < {end}").format(
        first=sql.Placeholder(p + "first"), end=sql.Placeholder(p + "end")
    )
    if not filters:
        return sql.SQL(
            "SELECT value, page_views, events, visitors FROM daily_dimensions "
            "WHERE site_id = %(site)s AND dimension = %(dimension)s AND {days}"
        ).format(days=days)
    [f] = filters
    op = sql.SQL("<>" if f.negated else "=")
    if part.table == "daily_dimensions":
        return sql.SQL(
            "SELECT value, page_views, events, visitors FROM daily_dimensions "
            "WHERE site_id = %(site)s AND dimension = %(dimension)s AND {days} "
            "AND value {op} %(f0)s"
        ).format(days=days, op=op)
    assert part.table == "daily_dimension_pairs"
    # Each pair is kept once, its dimensions in CONTEXT_DIMENSIONS' order: the filter's value
    # is on whichever side its dimension is.
    filter_first = CONTEXT_DIMENSIONS.index(f.dimension) < CONTEXT_DIMENSIONS.index(dimension)
    kept, shown = ("value_a", "value_b") if filter_first else ("value_b", "value_a")
    first, second = (f.dimension, dimension) if filter_first else (dimension, f.dimension)
    return sql.SQL(
        "SELECT {shown}, page_views, events, visitors FROM daily_dimension_pairs "
        "WHERE site_id = %(site)s AND dimension_a = {first} AND dimension_b = {second} "
        "AND {days} AND {kept} {op} %(f0)s"
    ).format(
        shown=sql.Identifier(shown),
        first=sql.Literal(first),
        second=sql.Literal(second),
        days=days,
        kept=sql.Identifier(kept),
        op=op,
    )


def _one_value_rows(part: Days | Edges, p: str, f: Filter, day: bool) -> sql.Composable:
    """Rows ([UTC day,] page views, events, visitors' sketch) of the events that pass one
    filter on a context dimension: its value's rows of daily_dimensions for whole UTC days
    (every other value's for a negated filter), raw events for the edges."""
    op = sql.SQL("<>" if f.negated else "=")
    head = sql.SQL("day::timestamp, " if day else "")
    if isinstance(part, Days):
        assert part.table == "daily_dimensions"
        return sql.SQL(
            "SELECT {head}page_views, events, visitors FROM daily_dimensions "
            "WHERE site_id = %(site)s AND dimension = {dimension} AND value {op} %(f0)s "
            "AND day >= {first} AND day < {end}"
        ).format(
            head=head,
            dimension=sql.Literal(f.dimension),
            op=op,
            first=sql.Placeholder(p + "first"),
            end=sql.Placeholder(p + "end"),
        )
    assert not day  # a daily series reads whole UTC days only
    return sql.SQL(
        "SELECT {views}, count(*), hll_add_agg(hll_hash_text(user_id)) "
        "FILTER (WHERE event_type = 'page_view') "
        "FROM events WHERE site_id = %(site)s AND {spans} AND {filters}"
    ).format(
        views=PAGE_VIEWS, spans=sources.spans(part, p, raw=True), filters=raw_filter_clause((f,))
    )


def _one_value_params(statement: Statement, stats: StatsRequest) -> dict[str, Any]:
    params: dict[str, Any] = {"site": stats.site_id}
    sources.bind(statement.parts, params)
    bind_raw_filters(stats.filters, params)
    return params


def context_totals_sql(
    statement: Statement, request: StatsRequest
) -> tuple[sql.Composable, dict[str, Any]]:
    """One row: views, events, sketched visitors, NULL (no exact count), of the events that
    pass the request's one filter on a context dimension."""
    [f] = statement_shape(request.filters)

    def compose() -> sql.Composable:
        rows = [
            _one_value_rows(part, f"p{i}_", f, day=False)
            for i, part in enumerate(statement.parts)
            if isinstance(part, Days | Edges)
        ]
        return sql.SQL(
            "SELECT coalesce(sum(page_views), 0)::bigint, coalesce(sum(events), 0)::bigint, "
            "coalesce(hll_cardinality(hll_union_agg(visitors)), 0), NULL::bigint "
            "FROM ({rows}) r (page_views, events, visitors)"
        ).format(rows=union_all(rows))

    key = ("context totals", sources.shape(statement.parts), f)
    return CACHE.get(key, compose), _one_value_params(statement, request)


def context_series_sql(
    statement: Statement, request: TimeseriesRequest
) -> tuple[sql.Composable, dict[str, Any]]:
    """Rows (UTC day, views, events, visitors), in order, of the events that pass the
    request's one filter on a context dimension: whole UTC days only."""
    stats = request.stats
    [f] = statement_shape(stats.filters)
    [days] = statement.parts
    assert isinstance(days, Days)

    def compose() -> sql.Composable:
        # A negated filter reads every other value's row of each day: summed per day.
        return sql.SQL(
            "SELECT t, sum(page_views)::bigint, sum(events)::bigint, "
            "coalesce(hll_cardinality(hll_union_agg(visitors)), 0) "
            "FROM ({rows}) r (t, page_views, events, visitors) GROUP BY t ORDER BY t"
        ).format(rows=_one_value_rows(days, "p0_", f, day=True))

    key = ("context series", sources.shape(statement.parts), f)
    return CACHE.get(key, compose), _one_value_params(statement, stats)


_PROP_SUMS = {
    "views": sql.SQL("coalesce(sum(events) FILTER (WHERE event_type = 'page_view'), 0)"),
    "events": sql.SQL("sum(events)"),
    "visitors": sql.SQL("coalesce(hll_cardinality(hll_union_agg(visitors)), 0)"),
}


def _prop_rows(
    part: Days | Edges | Instants, p: str, one_key: bool, filters: tuple[Filter, ...]
) -> sql.Composable:
    """One part's rows (event_type, key, value, events, visitors' sketch), filters applied:
    daily_props rows (the planner leaves only event-type filters for them), or raw events'
    properties, one row per property an event carries."""
    if isinstance(part, Days):
        assert all(f.dimension == "event_type" for f in filters)
        return sql.SQL(
            "SELECT event_type, key, value, events, visitors FROM daily_props "
            "WHERE site_id = %(site)s AND day >= {first} AND day < {end} {key} AND {filters}"
        ).format(
            first=sql.Placeholder(p + "first"),
            end=sql.Placeholder(p + "end"),
            key=sql.SQL("AND key = %(key)s" if one_key else ""),
            filters=raw_filter_clause(filters),
        )
    where = (
        sql.SQL("site_id = %(site)s AND {}").format(sources.spans(part, p, raw=True))
        if isinstance(part, Edges)
        else RAW_RANGE
    )
    return sql.SQL(
        "SELECT event_type, kv.key, kv.value, count(*), hll_add_agg(hll_hash_text(user_id)) "
        "FROM events CROSS JOIN LATERAL jsonb_each_text(props) AS kv "
        "WHERE {where} {key} AND {filters} GROUP BY 1, 2, 3"
    ).format(
        where=where,
        key=sql.SQL("AND kv.key = %(key)s" if one_key else ""),
        filters=raw_filter_clause(filters),
    )


def props_ranking_sql(
    statement: Statement, request: BreakdownRequest
) -> tuple[sql.Composable, dict[str, Any]]:
    """Rows (key, value, views, events, visitors) of one page of custom property values (of
    request.key, or of every key), most first by the first metric, ties by key and value.
    Visitors are those among the events counted. Events without the key are not listed: no
    rollup holds their visitors (daily_props is keyed by the key), and a filter on NO_VALUE
    counts them."""
    stats = request.stats
    if statement.form == "raw props ranking":
        params = _raw_params(statement, stats)
    else:
        params = {"site": stats.site_id}
        sources.bind(statement.parts, params)
    params.update(key=request.key, offset=request.limit * (request.page - 1))
    bind_raw_filters(stats.filters, params)
    shape = statement_shape(stats.filters)
    sort = _PROP_SUMS[stats.metrics[0]]
    one_key = request.key is not None

    def compose() -> sql.Composable:
        rows: list[sql.Composable] = []
        for i, part in enumerate(statement.parts):
            assert isinstance(part, Days | Edges | Instants)
            rows.append(_prop_rows(part, f"p{i}_", one_key, shape))
        return sql.SQL(
            "SELECT key, value, {views}::bigint, sum(events)::bigint, {visitors} "
            "FROM ({rows}) r (event_type, key, value, events, visitors) "
            "GROUP BY key, value HAVING {sort} > 0 ORDER BY {sort} DESC, key, value {page}"
        ).format(
            views=_PROP_SUMS["views"],
            visitors=_PROP_SUMS["visitors"],
            rows=union_all(rows),
            sort=sort,
            page=page_clause(request.limit, request.page == 1),
        )

    key = (
        statement.form,
        sources.shape(statement.parts),
        one_key,
        stats.metrics[0],
        shape,
        request.limit,
        request.page == 1,
    )
    return CACHE.get(key, compose), params
