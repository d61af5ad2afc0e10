"""Step 3: a plan's statements (ingest/stats_plan.py) as SQL with bound parameters. Pure.

Each statement form wraps the rows its parts' builders render (ingest/stats_sources.py). The
composed text depends only on the plan's shape and the filters' shape (values are bound), so
it is composed once per shape and kept in a bounded cache.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence
from typing import Any

from psycopg import sql

from ingest import stats_sources as sources
from ingest.stats_expect import has_choices
from ingest.stats_params import PAGE_VIEW, Dimension, Filter
from ingest.stats_plan_parts import (
    Form,
    IfKept,
    IfSealed,
    Part,
    PerValue,
    Statement,
    rendered_branches,
)
from ingest.stats_sources import KEPT, Kind

MAX_CACHED_STATEMENTS = 1024


class ShapeCache:
    """Composed statements by shape, the least recently used dropped past `size`."""

    def __init__(self, size: int = MAX_CACHED_STATEMENTS) -> None:
        self.size = size
        self._entries: collections.OrderedDict[Any, sql.Composable] = collections.OrderedDict()

    def get(self, key: Any, compose: Callable[[], sql.Composable]) -> sql.Composable:
        found = self._entries.get(key)
        if found is None:
            found = self._entries[key] = compose()
            if len(self._entries) > self.size:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(key)
        return found

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()


CACHE = ShapeCache()


def statement_shape(filters: tuple[Filter, ...]) -> tuple[Filter, ...]:
    """The filters as far as the SQL text depends on them: dimensions, operators and order,
    values blanked (they are bound as f0, f1…) except an event type of page_view, which the
    planner reads cheaper rows for. Keyed by values, a cache would hold one statement per
    value ever asked for."""
    return tuple(
        f
        if f.dimension == "event_type" and f.value == PAGE_VIEW
        else Filter(f.dimension, f.negated, "")
        for f in filters
    )


def bind_filters(filters: tuple[Filter, ...], params: dict[str, Any]) -> None:
    params.update((f"f{i}", f.value) for i, f in enumerate(filters))


def filter_clause(filters: tuple[Filter, ...]) -> sql.Composable:
    """The filters as SQL with placeholders f0, f1…; bind_filters gives them their values."""
    clauses: list[sql.Composable] = [sql.SQL("TRUE")]
    for i, f in enumerate(filters):
        op = sql.SQL("<>" if f.negated else "=")
        clauses.append(
            sql.SQL("{} {} {}").format(sql.Identifier(f.dimension), op, sql.Placeholder(f"f{i}"))
        )
    return sql.SQL(" AND ").join(clauses)


def visitor_rows(filters: tuple[Filter, ...]) -> sql.Composable:
    """Visitors are the visitors among page views, or among the filtered event type's events."""
    if any(f.dimension == "event_type" for f in filters):
        return sql.SQL("TRUE")
    return sql.SQL("event_type = 'page_view'")


class Walk:
    """Renders parts in the pre-order of stats_sources.nodes, so that each node's
    placeholders carry the prefix stats_sources.bind gives its values."""

    def __init__(self, prefix: str = "p") -> None:
        self.prefix = prefix
        self.index = 0

    def next(self) -> str:
        p = f"{self.prefix}{self.index}_"
        self.index += 1
        return p

    def union(
        self,
        kind: Kind,
        parts: tuple[Part, ...],
        gate: sql.Composable | None = None,
        match: sql.Composable | None = None,
    ) -> list[sql.Composable]:
        """The rows of every part, each branch's under its gate."""
        out: list[sql.Composable] = []
        for part in parts:
            p = self.next()
            if isinstance(part, IfKept | IfSealed):
                yes, no = self.gates(part, p, gate)
                first, second = rendered_branches(part)
                out += self.union(kind, first, yes, match)
                out += self.union(kind, second, no, match)
            elif isinstance(part, PerValue):
                self.union(kind, part.parts)  # rendered by the page's form
            else:
                out.append(sources.rows(kind, part, p, gate, match))
        return out

    @staticmethod
    def gates(
        part: IfKept | IfSealed, p: str, gate: sql.Composable | None
    ) -> tuple[sql.Composable, sql.Composable]:
        condition = KEPT if isinstance(part, IfKept) else sources.sealed(p)
        yes, no = condition, sql.SQL("NOT {}").format(condition)
        if gate is not None:
            yes, no = sql.SQL("{} AND {}").format(gate, yes), sql.SQL("{} AND {}").format(gate, no)
        return yes, no


def union_all(selects: Sequence[sql.Composable]) -> sql.Composable:
    return sql.SQL("\nUNION ALL\n").join(selects)


FACTS = sql.SQL(
    "SELECT {kept} AS kept, (SELECT nullif(sealed_before, '-infinity') FROM sealed_days) "
    "AS sealed_before"
).format(kept=KEPT)
# Each form's order, counted after the two facts' columns.
_ORDER_AFTER_FACTS: dict[Form, str] = {
    "totals": "",
    "series": "ORDER BY 3",
    "pages": "ORDER BY 4 DESC, 3",
    "pages by visitors": "ORDER BY 6 DESC, 3",
}


def with_facts(statement: Statement, query: sql.Composable) -> sql.Composable:
    """A statement whose parts hold choices (stats_expect.has_choices) reports the facts of
    its snapshot in two first columns, kept and sealed_before (stats_expect.Facts): its rows
    after them, or one row of NULLs when it has none (every form's first column is never
    NULL in a row). Other statements are left as they are."""
    if not has_choices(statement.parts):
        return query
    return sql.SQL(
        "SELECT f.kept, f.sealed_before, r.* FROM ({facts}) f "
        "LEFT JOIN LATERAL ({query}) r ON TRUE {order}"
    ).format(facts=FACTS, query=query, order=sql.SQL(_ORDER_AFTER_FACTS[statement.form]))


def compose_totals(statement: Statement) -> sql.Composable:
    return sql.SQL(
        """
        SELECT coalesce(sum(page_views), 0)::bigint, coalesce(sum(events), 0)::bigint,
               coalesce(hll_cardinality(hll_union_agg(visitors)), 0),
               sum(exact_visitors)::bigint
        FROM ({rows}) r
        """
    ).format(rows=union_all(Walk().union("totals", statement.parts)))


def _kept_path(filters: tuple[Filter, ...]) -> sql.Composable | None:
    """A path the filters keep, as a condition for every part's rows: 15-minute page rows are
    then probed per (bucket, path) rather than read for every path of the edges and kept after
    (stats_sources.rows)."""
    for i, f in enumerate(filters):
        if f.dimension == "path" and not f.negated:
            return sql.SQL("path = {}").format(sql.Placeholder(f"f{i}"))
    return None


def compose_filtered_totals(statement: Statement, filters: tuple[Filter, ...]) -> sql.Composable:
    match = _kept_path(filters)
    return sql.SQL(
        """
        SELECT coalesce(sum(events) FILTER (WHERE event_type = 'page_view'), 0)::bigint,
               coalesce(sum(events), 0)::bigint,
               coalesce(hll_cardinality(hll_union_agg(visitors) FILTER (WHERE {visitor_rows})), 0),
               NULL::bigint
        FROM ({rows}) r WHERE {where}
        """
    ).format(
        rows=union_all(Walk().union("details", statement.parts, match=match)),
        where=filter_clause(filters),
        visitor_rows=visitor_rows(filters),
    )


def compose_series(statement: Statement, filters: tuple[Filter, ...]) -> sql.Composable:
    if statement.form == "series":
        return sql.SQL("{} ORDER BY 1").format(union_all(Walk().union("series", statement.parts)))
    return sql.SQL(
        """
        SELECT t, coalesce(sum(events) FILTER (WHERE event_type = 'page_view'), 0)::bigint,
               sum(events)::bigint,
               coalesce(hll_cardinality(hll_union_agg(visitors) FILTER (WHERE {visitor_rows})), 0)
        FROM ({rows}) r WHERE {where} GROUP BY t ORDER BY t
        """
    ).format(
        rows=union_all(Walk().union("detail series", statement.parts)),
        where=filter_clause(filters),
        visitor_rows=visitor_rows(filters),
    )


def breakdown_filters(dimension: Dimension, filters: tuple[Filter, ...]) -> tuple[Filter, ...]:
    if dimension == "path" and not any(f.dimension == "event_type" for f in filters):
        # A page breakdown counts page views, as Plausible's does.
        filters = (*filters, Filter("event_type", False, PAGE_VIEW))
    return filters


def _base_params(site_id: str, timezone: str, parts: tuple[Part, ...]) -> dict[str, Any]:
    params: dict[str, Any] = {"site": site_id, "tz": timezone}
    sources.bind(parts, params)
    return params


def aggregate_sql(
    statement: Statement, site_id: str, timezone: str, filters: tuple[Filter, ...]
) -> tuple[sql.Composable, dict[str, Any]]:
    """One row: views, events, sketched visitors, and the sum of daily exact visitors
    (the row count an exact distinct count would read, or NULL when it cannot be exact)."""
    params = _base_params(site_id, timezone, statement.parts)
    bind_filters(filters, params)
    shape = statement_shape(filters)
    key = ("aggregate", statement.form, sources.shape(statement.parts), shape)
    if statement.form == "totals":
        return CACHE.get(key, lambda: with_facts(statement, compose_totals(statement))), params
    return CACHE.get(key, lambda: compose_filtered_totals(statement, shape)), params


def series_sql(
    statement: Statement, site_id: str, timezone: str, interval: str, filters: tuple[Filter, ...]
) -> tuple[sql.Composable, dict[str, Any]]:
    """Rows (local period start as timestamp, views, events, visitors), in order."""
    params = _base_params(site_id, timezone, statement.parts)
    params["unit"] = interval
    bind_filters(filters, params)
    shape = statement_shape(filters)
    key = ("series", statement.form, sources.shape(statement.parts), shape)
    return CACHE.get(key, lambda: with_facts(statement, compose_series(statement, shape))), params


EXACT_VISITORS = sql.SQL(
    """
    SELECT count(*) FROM (
        SELECT DISTINCT user_id FROM ({rows}) u
    ) ids
    """
)


def exact_visitors_sql(
    parts: tuple[Part, ...], site_id: str
) -> tuple[sql.Composable, dict[str, Any]]:
    """The distinct visitors of daily_visitor_ids rows (DISTINCT in a subquery lets PostgreSQL hash
    instead of sorting)."""
    params = _base_params(site_id, "UTC", parts)
    key = ("exact visitors", sources.shape(parts))
    return CACHE.get(
        key,
        lambda: EXACT_VISITORS.format(rows=union_all(Walk().union("visitor ids", parts))),
    ), params
