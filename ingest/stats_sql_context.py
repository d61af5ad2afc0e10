"""Step 3, a hit's context: a page of one context dimension's values (browser, os, device,
country) from daily_dimensions and the range's raw edges, and the questions no rollup can
answer (a filter on a context dimension), from raw events over the whole range. Pure.

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
    NOT_SET,
    BreakdownRequest,
    Dimension,
    Filter,
    StatsRequest,
    TimeseriesRequest,
)
from ingest.stats_plan_parts import Days, Edges, Statement
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


def column(dimension: Dimension) -> sql.Composable:
    """A raw event's value of `dimension`; a context dimension's missing value is NOT_SET."""
    if dimension in CONTEXT_DIMENSIONS:
        return sql.SQL("coalesce({}, {})").format(sql.Identifier(dimension), sql.Literal(NOT_SET))
    return sql.Identifier(dimension)


def raw_filter_clause(filters: tuple[Filter, ...]) -> sql.Composable:
    """The filters over raw events, with placeholders f0, f1… (bind_filters)."""
    clauses: list[sql.Composable] = [sql.SQL("TRUE")]
    for i, f in enumerate(filters):
        op = sql.SQL("<>" if f.negated else "=")
        clauses.append(
            sql.SQL("{} {} {}").format(column(f.dimension), op, sql.Placeholder(f"f{i}"))
        )
    return sql.SQL(" AND ").join(clauses)


def _visitors(filters: tuple[Filter, ...]) -> sql.Composable:
    return sql.SQL(
        "coalesce(hll_cardinality(hll_add_agg(hll_hash_text(user_id)) FILTER (WHERE {})), 0)"
    ).format(visitor_rows(filters))


def _raw_params(statement: Statement, request: StatsRequest) -> dict[str, Any]:
    [_raw_range] = statement.parts  # one Instants("events", start, end): the request's range
    r = request.range
    day_from, day_to = utc_days(r.start, r.end)
    params: dict[str, Any] = {"site": request.site_id, "tz": r.timezone, "start": r.start}
    params.update(end=r.end, day_from=day_from, day_to=day_to)
    return params


def raw_totals_sql(
    statement: Statement, request: StatsRequest
) -> tuple[sql.Composable, dict[str, Any]]:
    """One row: views, events, sketched visitors, NULL (no exact count)."""
    params = _raw_params(statement, request)
    bind_filters(request.filters, params)
    shape = statement_shape(request.filters)
    return CACHE.get(
        ("raw totals", shape),
        lambda: sql.SQL(
            "SELECT {views}::bigint, count(*)::bigint, {visitors}, NULL::bigint "
            "FROM events WHERE {range} AND {filters}"
        ).format(
            views=PAGE_VIEWS,
            visitors=_visitors(shape),
            range=RAW_RANGE,
            filters=raw_filter_clause(shape),
        ),
    ), params


def raw_series_sql(
    statement: Statement, request: TimeseriesRequest
) -> tuple[sql.Composable, dict[str, Any]]:
    """Rows (local period start, views, events, visitors), in order."""
    stats = request.stats
    params = _raw_params(statement, stats)
    params["unit"] = request.interval
    bind_filters(stats.filters, params)
    shape = statement_shape(stats.filters)
    return CACHE.get(
        ("raw series", shape),
        lambda: sql.SQL(
            "SELECT date_trunc(%(unit)s, event_time AT TIME ZONE %(tz)s) AS t, "
            "{views}::bigint, count(*)::bigint, {visitors} "
            "FROM events WHERE {range} AND {filters} GROUP BY 1 ORDER BY 1"
        ).format(
            views=PAGE_VIEWS,
            visitors=_visitors(shape),
            range=RAW_RANGE,
            filters=raw_filter_clause(shape),
        ),
    ), params


_SORTS = {"views": PAGE_VIEWS, "events": sql.SQL("count(*)")}


def raw_ranking_sql(
    statement: Statement, request: BreakdownRequest
) -> tuple[sql.Composable, dict[str, Any]]:
    """Rows (value, views, events, visitors) of one page, most first, ties by value."""
    stats = request.stats
    filters = breakdown_filters(request.dimension, stats.filters)
    params = _raw_params(statement, stats)
    params["offset"] = request.limit * (request.page - 1)
    bind_filters(filters, params)
    shape = statement_shape(filters)
    sort = stats.metrics[0]

    def compose() -> sql.Composable:
        visitors = _visitors(shape)
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
    range's edges from raw events."""
    stats = request.stats
    params: dict[str, Any] = {"site": stats.site_id, "dimension": request.dimension}
    sources.bind(statement.parts, params)
    params["offset"] = request.limit * (request.page - 1)
    sort = stats.metrics[0]

    def compose() -> sql.Composable:
        rows: list[sql.Composable] = []
        for i, part in enumerate(statement.parts):
            p = f"p{i}_"
            if isinstance(part, Days):
                rows.append(
                    sql.SQL(
                        "SELECT value, page_views, events, visitors FROM daily_dimensions "
                        "WHERE site_id = %(site)s AND dimension = %(dimension)s "
                        "AND day >= {first} AND day < {end}"
                    ).format(first=sql.Placeholder(p + "first"), end=sql.Placeholder(p + "end"))
                )
            else:
                assert isinstance(part, Edges)
                rows.append(
                    sql.SQL(
                        "SELECT {key}, {views}, count(*), hll_add_agg(hll_hash_text(user_id)) "
                        "FILTER (WHERE event_type = 'page_view') "
                        "FROM events WHERE site_id = %(site)s AND {spans} GROUP BY 1"
                    ).format(
                        key=column(request.dimension),
                        views=PAGE_VIEWS,
                        spans=sources.spans(part, p, raw=True),
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
        request.limit,
        request.page == 1,
    )
    return CACHE.get(key, compose), params
