"""A page of an unfiltered visit breakdown over daily_visit_dimensions. Pure.

The values are ranked on exact sums (visits, bounces, duration, page views), read without
their sketches; the visitors' sketches are merged only for the rows of the page, each by
primary-key lookups of its (day, value) rows (stats_visits.days_clause) and (month, value)
rows of the sealed months, plus its (bucket, value) rows at the edges of another zone's range
from quarter_hour_visit_dimensions (a sealed month is one row and one sketch per value, its
daily rows thirty). A sort by
visitors ranks candidates by visits instead (ingest/stats_visits_rank.py) and asks for them a
batch at a time.
"""

from __future__ import annotations

from typing import Any

from psycopg import sql

from ingest.stats_params import BreakdownRequest, Metric
from ingest.stats_sql import CACHE
from ingest.stats_visits import (
    DimensionBuckets,
    DimensionDays,
    VisitPart,
    bind_parts,
    buckets_clause,
    days_clause,
    months_clause,
)
from ingest.stats_visits_rank import Window

# The rank of each exact metric over a value's sums, as visit_values rounds it (numeric
# round() is half away from zero: half up for these non-negative values); a sort by visitors
# takes its candidates by visits.
_KEYS: dict[Metric, str] = {
    "visitors": "visits",
    "visits": "visits",
    "views": "page_views",
    "bounce_rate": "round(100 * bounces::numeric / visits)",
    "visit_duration": "round(duration::numeric / visits)",
    "views_per_visit": "round(page_views::numeric / visits, 2)",
}
_SUMS = "visits, bounces, duration, page_views"


def ranks_on_sums(parts: tuple[VisitPart, ...]) -> bool:
    """Whether the plan reads dimension rows, whose sums rank without sketches (else it is
    the visits of a filtered question, whose sketches are built as they are read)."""
    return any(isinstance(part, DimensionDays | DimensionBuckets) for part in parts)


def _parts(
    parts: tuple[VisitPart, ...], wanted: sql.Composable
) -> tuple[list[sql.Composable], list[sql.Composable], list[sql.Composable]]:
    """Each part's CTEs, rows of sums (value, visits, bounces, duration, page views) and
    sketch of the value `g.value`. An edge's sketches are merged once per statement, for the
    values `wanted` selects: looked up value by value, each would scan every value's rows of
    the edge (the key's bucket comes before the value)."""
    ctes: list[sql.Composable] = []
    sums: list[sql.Composable] = []
    sketches: list[sql.Composable] = []
    for i, part in enumerate(parts):
        p = f"p{i}_"
        if isinstance(part, DimensionDays):
            months = part.months is not None
            dim = sql.Placeholder(p + "dimension")
            sums.append(
                sql.SQL(
                    "SELECT value, {sums} FROM daily_visit_dimensions WHERE site_id = %(site)s "
                    "AND {days} AND dimension = {dim}"
                ).format(sums=sql.SQL(_SUMS), days=days_clause(p, months=months), dim=dim)
            )
            sketches.append(
                sql.SQL(
                    "SELECT x.visitors FROM daily_visit_dimensions x WHERE x.site_id = %(site)s "
                    "AND {days} AND x.dimension = {dim} AND x.value = g.value"
                ).format(days=days_clause(p, "x.", months), dim=dim)
            )
            if months:
                sums.append(
                    sql.SQL(
                        "SELECT value, {sums} FROM sealed_monthly_visit_dimensions "
                        "WHERE site_id = %(site)s AND dimension = {dim} AND {months}"
                    ).format(sums=sql.SQL(_SUMS), dim=dim, months=months_clause(p))
                )
                sketches.append(
                    sql.SQL(
                        "SELECT x.visitors FROM sealed_monthly_visit_dimensions x "
                        "WHERE x.site_id = %(site)s AND x.dimension = {dim} AND {months} "
                        "AND x.value = g.value"
                    ).format(dim=dim, months=months_clause(p, "x."))
                )
        elif isinstance(part, DimensionBuckets):
            dim = sql.Placeholder(p + "dimension")
            sums.append(
                sql.SQL(
                    "SELECT value, {sums} FROM quarter_hour_visit_dimensions "
                    "WHERE site_id = %(site)s AND dimension = {dim} AND {buckets}"
                ).format(sums=sql.SQL(_SUMS), dim=dim, buckets=buckets_clause(part.spans, p))
            )
            name = sql.Identifier(f"edges{i}")
            ctes.append(
                sql.SQL(
                    "{name} AS MATERIALIZED (SELECT value, hll_union_agg(visitors) AS visitors "
                    "FROM quarter_hour_visit_dimensions WHERE site_id = %(site)s "
                    "AND dimension = {dim} AND {buckets} AND value IN ({wanted}) GROUP BY value)"
                ).format(name=name, dim=dim, buckets=buckets_clause(part.spans, p), wanted=wanted)
            )
            sketches.append(
                sql.SQL("SELECT e.visitors FROM {} e WHERE e.value = g.value").format(name)
            )
    return ctes, sums, sketches


def _merged(sketches: list[sql.Composable]) -> sql.Composable:
    return sql.SQL(
        "(SELECT hll_cardinality(hll_union_agg(s.visitors)) FROM ({}) s (visitors))"
    ).format(sql.SQL("\nUNION ALL\n").join(sketches))


def compose_page(parts: tuple[VisitPart, ...], key: Metric, with_visitors: bool) -> sql.Composable:
    """Rows (value, visits, bounces, duration, page views, visitors or NULL) of the values
    ranked by `key` (most first, ties by value), %(limit)s of them from %(offset)s; the
    visitors of the first %(merge)s of those only (the others NULL)."""
    edges, sums, sketches = _parts(parts, sql.SQL("SELECT value FROM page WHERE n <= %(merge)s"))
    ctes: list[sql.Composable] = [
        sql.SQL(
            "ranked AS (SELECT value, sum(visits)::bigint AS visits, "
            "sum(bounces)::bigint AS bounces, sum(duration)::bigint AS duration, "
            "sum(page_views)::bigint AS page_views FROM ({rows}) r (value, {sums}) "
            "GROUP BY value HAVING sum(visits) > 0)"
        ).format(rows=sql.SQL("\nUNION ALL\n").join(sums), sums=sql.SQL(_SUMS))
    ]
    order = sql.SQL("{} DESC, value").format(sql.SQL(_KEYS[key]))
    ctes.append(
        sql.SQL(
            "page AS MATERIALIZED (SELECT *, row_number() OVER (ORDER BY {order}) AS n "
            "FROM (SELECT * FROM ranked ORDER BY {order} LIMIT %(limit)s OFFSET %(offset)s) t)"
        ).format(order=order)
    )
    visitors: sql.Composable = sql.SQL("NULL::float8")
    if with_visitors:
        ctes += edges
        visitors = sql.SQL("CASE WHEN g.n <= %(merge)s THEN {} END").format(_merged(sketches))
    final = "WITH {ctes} SELECT value, {sums}, {visitors} FROM page g ORDER BY n"
    return sql.SQL(final).format(
        ctes=sql.SQL(",\n").join(ctes), sums=sql.SQL(_SUMS), visitors=visitors
    )


def compose_visitors(parts: tuple[VisitPart, ...]) -> sql.Composable:
    """Rows (value, visitors) of the values bound as %(values)s."""
    edges, _, sketches = _parts(parts, sql.SQL("SELECT unnest(%(values)s::text[])"))
    with_ctes = sql.SQL("WITH {} ").format(sql.SQL(",\n").join(edges)) if edges else sql.SQL("")
    return sql.SQL("{}SELECT g.value, {} FROM unnest(%(values)s::text[]) g (value)").format(
        with_ctes, _merged(sketches)
    )


def _shape(parts: tuple[VisitPart, ...]) -> tuple[Any, ...]:
    return tuple(
        ("days", part.months is not None)
        if isinstance(part, DimensionDays)
        else ("edges", len(part.spans))
        for part in parts
        if isinstance(part, DimensionDays | DimensionBuckets)
    )


def _params(request: BreakdownRequest, parts: tuple[VisitPart, ...]) -> dict[str, Any]:
    params: dict[str, Any] = {"site": request.stats.site_id}
    bind_parts(parts, params)
    return params


def visit_page_sql(
    request: BreakdownRequest,
    parts: tuple[VisitPart, ...],
    key: Metric,
    window: Window,
) -> tuple[sql.Composable, dict[str, Any]]:
    """The statement of compose_page and its parameters (no visitors when `window.merge` is
    0)."""
    with_visitors = window.merge > 0
    cache_key = ("visit page", _shape(parts), request.dimension, key, with_visitors)
    query = CACHE.get(cache_key, lambda: compose_page(parts, key, with_visitors))
    params = _params(request, parts)
    params.update(limit=window.limit, offset=window.offset, merge=window.merge)
    return query, params


def visit_visitors_sql(
    request: BreakdownRequest, parts: tuple[VisitPart, ...], values: list[str]
) -> tuple[sql.Composable, dict[str, Any]]:
    """The statement of compose_visitors and its parameters."""
    cache_key = ("visit visitors", _shape(parts), request.dimension)
    query = CACHE.get(cache_key, lambda: compose_visitors(parts))
    params = _params(request, parts)
    params["values"] = values
    return query, params
