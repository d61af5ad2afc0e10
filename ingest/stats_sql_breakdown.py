"""Step 3, breakdowns: a page of values ranked by a metric, and the follow-up merging the
visitors of the page's values. Pure; see ingest/stats_sql.py for the other forms.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import sql

from core.calendar import next_month
from ingest import stats_sources as sources
from ingest.stats_params import BreakdownRequest, Dimension, Filter
from ingest.stats_plan_parts import (
    IfKept,
    IfSealed,
    LocalDays,
    LocalMonths,
    Months,
    Part,
    PerValue,
    Statement,
    ValueVisitors,
    rendered_branches,
)
from ingest.stats_sql import (
    CACHE,
    Walk,
    bind_filters,
    breakdown_filters,
    filter_clause,
    statement_shape,
    union_all,
    visitor_rows,
    with_facts,
)


def page_clause(limit: int, first_page: bool) -> sql.Composable:
    """The page's LIMIT written as a number (validated, 1 to MAX_BREAKDOWN_LIMIT): PostgreSQL
    costs a generic plan's parameter LIMIT as a tenth of the rows, so a statement whose branch
    reads a page in index order would be custom-planned at every execution; the first page
    needs no OFFSET, a later one binds it."""
    if first_page:
        return sql.SQL("LIMIT {}").format(sql.Literal(int(limit)))
    return sql.SQL("LIMIT {} OFFSET %(offset)s").format(sql.Literal(int(limit)))


def _one_row_per_path(part: Part) -> bool:
    """A single day or month of a rollup keyed by it: nothing to add up per path."""
    if isinstance(part, LocalDays):
        return (part.end - part.first).days == 1
    if isinstance(part, Months | LocalMonths):
        return next_month(part.first) == part.end
    return False


def _visitors(per_value: list[sql.Composable] | None) -> sql.Composable:
    if per_value is None:
        return sql.SQL("hll_cardinality(q.visitors)")
    return sql.SQL(
        "(SELECT coalesce(hll_cardinality(hll_union_agg(v.visitors)), 0) "
        "FROM ({}) v(path, visitors))"
    ).format(union_all(per_value))


def page_branches(
    parts: tuple[Part, ...], walk: Walk, gate: sql.Composable | None, page: sql.Composable
) -> list[sql.Composable]:
    """One ranked page per branch of the plan: the rows of each branch's parts, summed per
    path unless one part holds one row per path; visitors per path where a PerValue says."""
    plain: list[Part] = []
    rendered: list[sql.Composable] = []
    per_value: list[sql.Composable] | None = None
    out: list[sql.Composable] = []
    for part in parts:
        p = walk.next()
        if isinstance(part, IfKept | IfSealed):
            yes, no = walk.gates(part, p, gate)
            first, second = rendered_branches(part)
            out += page_branches(first, walk, yes, page)
            out += page_branches(second, walk, no, page)
        elif isinstance(part, PerValue):
            per_value = walk.union("visitors", part.parts, match=sql.SQL("path = q.path"))
        else:
            plain.append(part)
            rendered.append(sources.rows("page views", part, p, gate))
    if len(plain) == 1 and _one_row_per_path(plain[0]):
        ranked = sql.SQL("{} AND page_views > 0 ORDER BY page_views DESC, path {}").format(
            rendered[0], page
        )
    elif plain:
        ranked = sql.SQL(
            "SELECT path, sum(page_views)::bigint AS page_views, NULL::hll AS visitors FROM ({}) r "
            "GROUP BY path HAVING sum(page_views) > 0 ORDER BY 2 DESC, path {}"
        ).format(union_all(rendered), page)
    else:
        return out
    branch = sql.SQL(
        "SELECT q.path, q.page_views AS views, q.page_views AS events, {visitors} AS visitors "
        "FROM ({ranked}) q"
    ).format(visitors=_visitors(per_value), ranked=ranked)
    return [branch, *out]


def compose_pages(parts: tuple[Part, ...], page: sql.Composable) -> sql.Composable:
    branches = [sql.SQL("({})").format(b) for b in page_branches(parts, Walk(), None, page)]
    return sql.SQL("SELECT path, views, events, visitors FROM ({}) b ORDER BY 2 DESC, 1").format(
        union_all(branches)
    )


def compose_pages_by_visitors(
    parts: tuple[Part, ...], filters: tuple[Filter, ...], page: sql.Composable
) -> sql.Composable:
    """A kept zone's paths ranked by merged sketches, else the general ranking."""
    [choice] = parts
    assert isinstance(choice, IfKept)
    walk = Walk()
    yes, no = walk.gates(choice, walk.next(), None)
    first, second = rendered_branches(choice)
    branches: list[sql.Composable] = []
    if first:
        local = walk.union("page views", first, yes)
        branches.append(
            sql.SQL(
                "SELECT path, sum(page_views)::bigint AS views, sum(page_views)::bigint AS events, "
                "hll_cardinality(hll_union_agg(visitors)) AS visitors FROM ({}) r GROUP BY path "
                "HAVING hll_cardinality(hll_union_agg(visitors)) > 0 ORDER BY 4 DESC, path {}"
            ).format(union_all(local), page)
        )
    if second:
        rows = walk.union("details", second, no)
        branches.append(compose_ranking("path", "visitors", filters, rows, True, page))
    return sql.SQL("SELECT * FROM ({}) b ORDER BY 4 DESC, 1").format(
        union_all([sql.SQL("({})").format(b) for b in branches])
    )


def _breakdown_visitors(dimension: Dimension, filters: tuple[Filter, ...]) -> sql.Composable:
    # Grouping by event type selects each type's events, as an event type filter would.
    rows = sql.SQL("TRUE") if dimension == "event_type" else visitor_rows(filters)
    return sql.SQL(
        "coalesce(hll_cardinality(hll_union_agg(visitors) FILTER (WHERE {})), 0)"
    ).format(rows)


def compose_ranking(
    dimension: Dimension,
    sort: str,
    stats_filters: tuple[Filter, ...],
    rows: Sequence[sql.Composable],
    with_visitors: bool,
    page: sql.Composable,
) -> sql.Composable:
    """One page of `limit` values ordered by `sort` (most first, ties by value ascending),
    leaving out values whose `sort` is zero. Event types are few: their sketches are merged
    here, which saves a second statement reading the same rows."""
    filters = breakdown_filters(dimension, stats_filters)
    key = sql.Identifier(dimension)
    sums = sql.SQL(
        "coalesce(sum(events) FILTER (WHERE event_type = 'page_view'), 0)::bigint AS views, "
        "sum(events)::bigint AS events"
    )
    sort_rows = sql.SQL("event_type = 'page_view'" if sort == "views" else "TRUE")
    where = filter_clause(filters)
    if sort == "visitors" or (dimension == "event_type" and with_visitors):
        visitors = _breakdown_visitors(dimension, filters)
        having = (
            visitors
            if sort == "visitors"
            else sql.SQL("sum(events) FILTER (WHERE {})").format(sort_rows)
        )
    else:
        visitors = sql.SQL("NULL::float8")
        having = sql.SQL("sum(events) FILTER (WHERE {})").format(sort_rows)
    return sql.SQL(
        """
        SELECT {key}, {sums}, {visitors} AS visitors FROM ({rows}) r WHERE {where}
        GROUP BY {key} HAVING {having} > 0
        ORDER BY {sort} DESC, {key} {page}
        """
    ).format(
        key=key,
        sums=sums,
        visitors=visitors,
        rows=union_all(rows),
        where=where,
        having=having,
        sort=sql.Identifier(sort),
        page=page,
    )


def compose_value_visitors(
    dimension: Dimension, stats_filters: tuple[Filter, ...], parts: tuple[Part, ...]
) -> sql.Composable:
    """Rows (value, visitors) for the values bound as %(values)s."""
    if dimension == "path" and stats_filters == ():
        rows = Walk().union("visitors", parts, match=sql.SQL("path = ANY(%(values)s)"))
        return sql.SQL(
            "SELECT path, coalesce(hll_cardinality(hll_union_agg(visitors)), 0) "
            "FROM ({}) r(path, visitors) GROUP BY path"
        ).format(union_all(rows))
    filters = breakdown_filters(dimension, stats_filters)
    key = sql.Identifier(dimension)
    return sql.SQL(
        "SELECT {key}, {visitors} FROM ({rows}) r WHERE {where} AND {key} = ANY(%(values)s) "
        "GROUP BY {key}"
    ).format(
        key=key,
        visitors=_breakdown_visitors(dimension, filters),
        rows=union_all(Walk().union("details", parts)),
        where=filter_clause(filters),
    )


def breakdown_sql(
    statement: Statement, request: BreakdownRequest
) -> tuple[sql.Composable, dict[str, Any]]:
    """Rows (value, views, events, visitors or NULL where the follow-up adds them)."""
    stats = request.stats
    params: dict[str, Any] = {"site": stats.site_id, "tz": stats.range.timezone}
    sources.bind(statement.parts, params)
    params["limit"] = request.limit
    params["offset"] = request.limit * (request.page - 1)
    bind_filters(breakdown_filters(request.dimension, stats.filters), params)
    shape = statement_shape(stats.filters)
    sort = stats.metrics[0]
    with_visitors = "visitors" in stats.metrics
    first_page = request.page == 1
    key = (
        "breakdown",
        statement.form,
        sources.shape(statement.parts),
        request.dimension,
        sort,
        with_visitors,
        shape,
        request.limit,
        first_page,
    )

    def compose() -> sql.Composable:
        page = page_clause(request.limit, first_page)
        if statement.form == "pages":
            return with_facts(statement, compose_pages(statement.parts, page))
        if statement.form == "pages by visitors":
            return with_facts(statement, compose_pages_by_visitors(statement.parts, shape, page))
        rows = Walk().union("details", statement.parts)
        return compose_ranking(request.dimension, sort, shape, rows, with_visitors, page)

    return CACHE.get(key, compose), params


def value_visitors_sql(
    then: ValueVisitors, request: BreakdownRequest, values: list[str]
) -> tuple[sql.Composable, dict[str, Any]]:
    """Rows (value, visitors) for the given values of the breakdown's dimension."""
    stats = request.stats
    params: dict[str, Any] = {"site": stats.site_id, "tz": stats.range.timezone, "values": values}
    sources.bind(then.parts, params)
    bind_filters(breakdown_filters(request.dimension, stats.filters), params)
    shape = statement_shape(stats.filters)
    key = ("value visitors", sources.shape(then.parts), request.dimension, shape)
    return CACHE.get(
        key, lambda: compose_value_visitors(request.dimension, shape, then.parts)
    ), params
