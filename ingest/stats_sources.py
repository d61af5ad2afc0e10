"""Step 3a: one SQL builder per source of a plan (ingest/stats_plan.py). Pure.

Each builder renders one part's rows in one of the row kinds a statement form consumes
(ingest/stats_sql.py), with its bounds as placeholders `{p}first`, `{p}end`… named by the
part's prefix (`bind` gives them their values) and `gate`, the conditions of the branches
it sits in, added to its WHERE.

Row kinds: "totals" (page_views, events, exact visitors or NULL, the visitors' sketch);
"details" (event_type, path, events, visitors); "page views" (path, page_views, the visitors'
sketch or NULL); "visitors" (path, visitors) of the paths `match` selects; "series" (t,
page_views, events, visitors); "detail series" (t, event_type, path, events, visitors);
"visitor ids" (user_id).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from psycopg import sql

from core.calendar import next_month
from ingest.stats_days import QUARTER, hour_floor, utc_days
from ingest.stats_plan_parts import (
    Days,
    Edges,
    IfKept,
    IfSealed,
    Instants,
    LocalDays,
    LocalMonths,
    Months,
    Part,
    PerValue,
    Watermark,
    rendered_branches,
)

Kind = Literal[
    "totals", "details", "page views", "visitors", "series", "detail series", "visitor ids"
]
Leaf = Days | Months | Watermark | Edges | Instants | LocalDays | LocalMonths

SITE = sql.SQL("site_id = %(site)s")
# A raw row's contribution to a sketch: the same hash the consumer's rollups add.
RAW_VISITORS = sql.SQL("hll_add_agg(hll_hash_text(user_id))")
KEPT = sql.SQL(
    "(SELECT EXISTS (SELECT 1 FROM site_zones WHERE site_id = %(site)s AND timezone = %(tz)s))"
)


def sealed(p: str) -> sql.Composable:
    """Whether every day before `{p}end` is sealed (consumer/seal.py), in the snapshot."""
    return sql.SQL("(SELECT sealed_before >= {} FROM sealed_days)").format(
        sql.Placeholder(p + "end")
    )


def sealed_end(p: str) -> sql.Composable:
    """The first day of the months [{p}first, {p}end) that is not sealed."""
    return sql.SQL(
        "greatest({first}::date, least({end}::date, (SELECT sealed_before FROM sealed_days)))"
    ).format(first=sql.Placeholder(p + "first"), end=sql.Placeholder(p + "end"))


def _ph(p: str, name: str) -> sql.Placeholder:
    return sql.Placeholder(p + name)


def _between(column: str, p: str, single: bool = False) -> sql.Composable:
    """[{p}first, {p}end); one day or month is asked as an equality, so that an index on
    (…, day, page_views DESC, path) serves a ranking in order instead of a sort of every row."""
    if single:
        return sql.SQL("{c} = {a}").format(c=sql.Identifier(column), a=_ph(p, "first"))
    return sql.SQL("{c} >= {a} AND {c} < {b}").format(
        c=sql.Identifier(column), a=_ph(p, "first"), b=_ph(p, "end")
    )


def single_unit(leaf: object) -> bool:
    """Whether a leaf's range is exactly one day (days) or one calendar month (months)."""
    if isinstance(leaf, Days | LocalDays):
        return leaf.end == leaf.first + dt.timedelta(days=1)
    if isinstance(leaf, Months | LocalMonths):
        return leaf.end == next_month(leaf.first)
    return False


def _zone(p: str) -> sql.Composable:
    return sql.SQL("site_id = %(site)s AND timezone = {}").format(_ph(p, "zone"))


def spans(leaf: Edges, p: str, raw: bool) -> sql.Composable:
    """The edges as an OR of intervals; raw events also bound by day (partition pruning)."""
    clauses = []
    for i in range(len(leaf.spans)):
        a, b = _ph(p, f"a{i}"), _ph(p, f"b{i}")
        if raw:
            clauses.append(
                sql.SQL(
                    "(day >= {da} AND day <= {db} AND event_time >= {a} AND event_time < {b})"
                ).format(da=_ph(p, f"d{i}a"), db=_ph(p, f"d{i}b"), a=a, b=b)
            )
        else:
            column = sql.Identifier(_TIME.get(leaf.table, "bucket"))
            clauses.append(sql.SQL("({c} >= {a} AND {c} < {b})").format(c=column, a=a, b=b))
    return sql.SQL("({})").format(sql.SQL(" OR ").join(clauses))


def listed_buckets(leaf: Edges, p: str) -> sql.Composable:
    """The spans' 15-minute buckets (or hours) as a list, for a lookup of a few paths: the
    primary key (site_id, bucket, path) is then probed per (bucket, path) instead of read for
    every path of every bucket in the spans (PostgreSQL 15 uses only the first range column)."""
    column = _TIME.get(leaf.table, "bucket")
    step = "1 hour" if column == "hour" else "15 minutes"
    series = [
        sql.SQL(
            # truncated in UTC, not the session's zone: a :30 or :45 session would list
            # instants that are no hour
            "SELECT generate_series(date_trunc('hour', {a}::timestamptz, 'UTC'), "
            "{b}::timestamptz, interval {step})"
        ).format(a=_ph(p, f"a{i}"), b=_ph(p, f"b{i}"), step=sql.Literal(step))
        for i in range(len(leaf.spans))
    ]
    return sql.SQL("{} = ANY(ARRAY({}))").format(
        sql.Identifier(column), sql.SQL(" UNION ALL ").join(series)
    )


def _where(*conditions: sql.Composable, gate: sql.Composable | None) -> sql.Composable:
    return sql.SQL(" AND ").join([*conditions, *([gate] if gate is not None else [])])


def rows(
    kind: Kind,
    leaf: Leaf,
    p: str,
    gate: sql.Composable | None = None,
    match: sql.Composable | None = None,
) -> sql.Composable:
    """`leaf`'s rows of `kind`."""
    # Only page views are exact sums a plan may take away from (never sketches).
    assert kind == "page views" or not getattr(leaf, "taken", False), (kind, leaf)
    t = sql.Identifier(leaf.table)
    where: list[sql.Composable] = [SITE]
    if isinstance(leaf, Days):
        where.append(_between("day", p, single_unit(leaf)))
        if leaf.page_views_only:
            where.append(sql.SQL("event_type = 'page_view'"))
    elif isinstance(leaf, Months):
        where.append(_between("month", p, single_unit(leaf)))
        if leaf.table.startswith("sealed_"):
            where.append(sql.SQL("timezone = 'UTC'"))
    elif isinstance(leaf, LocalDays):
        where = [_zone(p), _between("day", p, single_unit(leaf))]
    elif isinstance(leaf, LocalMonths):
        where = [_zone(p), _between("month", p, single_unit(leaf))]
    elif isinstance(leaf, Edges):
        where.append(spans(leaf, p, raw=leaf.table == "events"))
        if leaf.other_types:
            where.append(sql.SQL("event_type <> 'page_view'"))
        if match is not None and leaf.table in _PATH_EDGES:
            where.append(listed_buckets(leaf, p))
    elif isinstance(leaf, Instants):
        where.append(_between(_TIME[leaf.table], p))
    if match is not None:
        where.append(match)
    if isinstance(leaf, Watermark):
        return _watermark(kind, leaf, p, gate, match)
    if isinstance(leaf, Instants) and leaf.quarters_at_edges:
        assert kind == "series" and match is None, kind
        return _hours_and_quarters(p, gate, _series_visitors(leaf))
    cond = _where(*where, gate=gate)
    columns = _columns(kind, leaf, p)
    if kind == "totals" and leaf.table == "daily_stats":
        return sql.SQL(
            "SELECT s.page_views, s.events, s.visitors AS exact_visitors, v.visitors "
            "FROM daily_stats s LEFT JOIN daily_visitors v USING (site_id, day) WHERE {}"
        ).format(cond)
    query = sql.SQL("SELECT {columns} FROM {t} WHERE {cond}").format(
        columns=columns, t=t, cond=cond
    )
    if isinstance(leaf, Edges) and leaf.table == "events":
        by = "event_type, path" if leaf.per_path else "event_type"
        return sql.SQL("{} GROUP BY {}").format(query, sql.SQL(by))
    if isinstance(leaf, Instants):
        return sql.SQL("{} GROUP BY 1{}").format(
            query, sql.SQL(", 2, 3" if kind == "detail series" else "")
        )
    return query


_TIME = {
    "hourly_stats": "hour",
    "hourly_paths": "hour",
    "quarter_hour_stats": "bucket",
    "events": "event_time",
}
# Sub-day rows per path, keyed (site_id, bucket or hour, path, …): probed per period for a kept
# path (listed_buckets).
_PATH_EDGES = ("quarter_hour_paths", "hourly_paths", "quarter_hour_event_paths")


def _hours_and_quarters(
    p: str, gate: sql.Composable | None, visitors: sql.Composable
) -> sql.Composable:
    """Series rows from the hours that lie in one local period and the quarter hours of
    the others (Instants.quarters_at_edges): the hours holding a period's start are bound as
    {p}hours, their quarter hours as {p}quarters, both found through the tables' keys."""
    return sql.SQL(
        "SELECT date_trunc(%(unit)s, time AT TIME ZONE %(tz)s) AS t, sum(page_views)::bigint, "
        "sum(events)::bigint, {visitors} FROM ("
        "SELECT hour AS time, page_views, events, visitors FROM hourly_stats WHERE {hours} "
        "UNION ALL SELECT bucket, page_views, events, visitors FROM quarter_hour_stats "
        "WHERE {quarters}) x GROUP BY 1"
    ).format(
        visitors=visitors,
        hours=_where(
            SITE,
            _between("hour", p),
            sql.SQL("hour <> ALL({})").format(_ph(p, "hours")),
            gate=gate,
        ),
        quarters=_where(
            SITE,
            _between("bucket", p),
            sql.SQL("bucket = ANY({})").format(_ph(p, "quarters")),
            gate=gate,
        ),
    )


def _series_visitors(leaf: Instants) -> sql.Composable:
    """A sub-day series' visitors: its sketches merged per period, or NULL when not asked
    (merging is most of such a statement's work)."""
    if leaf.visitors:
        return sql.SQL("hll_cardinality(hll_union_agg(visitors))")
    return sql.SQL("NULL::bigint")


_VIEWS = {"quarter_hour_stats", "local_daily_stats", "daily_stats"}
_PER_PATH = {"daily_details", "quarter_hour_event_paths"}  # rows per (event type, path)


def _columns(kind: Kind, leaf: Leaf, p: str) -> sql.Composable:
    table = leaf.table
    if kind == "totals":  # quarter-hour and local rows: no exact visitors
        return sql.SQL("page_views, events, NULL::bigint AS exact_visitors, visitors")
    if kind == "details":
        if table in ("quarter_hour_paths", "hourly_paths"):
            return sql.SQL("'page_view' AS event_type, path, page_views AS events, visitors")
        if table in ("hourly_stats", "quarter_hour_stats"):  # page views of every path
            return sql.SQL(
                "'page_view' AS event_type, NULL::text AS path, page_views AS events, visitors"
            )
        if table == "events":
            path = "path" if isinstance(leaf, Edges) and leaf.per_path else "NULL::text"
            return sql.SQL("event_type, {} AS path, count(*) AS events, {} AS visitors").format(
                sql.SQL(path), RAW_VISITORS
            )
        path = "path" if table in _PER_PATH else "NULL::text"
        return sql.SQL("event_type, {} AS path, events, visitors").format(sql.SQL(path))
    if kind == "visitor ids":
        return sql.SQL("user_id")
    if kind == "page views":  # with the sketch of the path's visitors where the row holds one
        if getattr(leaf, "taken", False):
            return sql.SQL("path, -page_views AS page_views, NULL::hll AS visitors")
        sketch = table in ("sealed_monthly_paths", "local_daily_paths")
        return sql.SQL("path, page_views, {} AS visitors").format(
            sql.SQL("visitors" if sketch else "NULL::hll")
        )
    if kind == "visitors":
        return sql.SQL("path, visitors")
    if kind == "series":
        if isinstance(leaf, Instants):
            return sql.SQL(
                "date_trunc(%(unit)s, {time} AT TIME ZONE %(tz)s) AS t, sum(page_views)::bigint, "
                "sum(events)::bigint, {visitors}"
            ).format(time=sql.Identifier(_TIME[table]), visitors=_series_visitors(leaf))
        visitors = "visitors" if table == "daily_stats" else "hll_cardinality(visitors)"
        return sql.SQL("day::timestamp AS t, page_views, events, {}").format(sql.SQL(visitors))
    if isinstance(leaf, Instants):  # detail series from raw events
        return sql.SQL(
            "date_trunc(%(unit)s, event_time AT TIME ZONE %(tz)s) AS t, event_type, path, "
            "count(*) AS events, {} AS visitors"
        ).format(RAW_VISITORS)
    path = "path" if table == "daily_details" else "NULL::text AS path"
    return sql.SQL("day::timestamp AS t, event_type, {}, events, visitors").format(sql.SQL(path))


def _watermark(
    kind: Kind, leaf: Watermark, p: str, gate: sql.Composable | None, match: sql.Composable | None
) -> sql.Composable:
    """The sealed months' one row a month, then the days from the watermark on."""
    extra = [match] if match is not None else []
    zone = _zone(p)
    months = _where(zone, _between("month", p), *extra, gate=gate)
    days = sql.SQL("day >= {} AND day < {}").format(sealed_end(p), _ph(p, "day_end"))
    if kind == "details":
        return sql.SQL(
            "SELECT event_type, NULL::text AS path, events, visitors FROM {s} WHERE {months} "
            "UNION ALL SELECT event_type, NULL, events, visitors FROM {d} WHERE {days}"
        ).format(
            s=sql.Identifier(leaf.sealed),
            months=_where(SITE, _between("month", p), gate=gate),
            d=sql.Identifier(leaf.daily),
            days=_where(SITE, days, gate=gate),
        )
    daily_where = [zone] if leaf.daily.startswith("local_") else [SITE]
    if leaf.daily == "daily_details":
        daily_where.append(sql.SQL("event_type = 'page_view'"))
    return sql.SQL(
        "SELECT path, visitors FROM {s} WHERE {months} "
        "UNION ALL SELECT path, visitors FROM {d} WHERE {days}"
    ).format(
        s=sql.Identifier(leaf.sealed),
        months=months,
        d=sql.Identifier(leaf.daily),
        days=_where(*daily_where, *extra, days, gate=gate),
    )


def nodes(parts: tuple[Part, ...]) -> list[Part]:
    """Every node of the parts, pre-order: its index is its placeholders' prefix."""
    found: list[Part] = []
    for part in parts:
        found.append(part)
        if isinstance(part, PerValue):
            found += nodes(part.parts)
        elif isinstance(part, IfKept | IfSealed):
            yes, no = rendered_branches(part)
            found += nodes(yes) + nodes(no)
    return found


def shape(parts: tuple[Part, ...]) -> tuple[Any, ...]:
    """What the SQL text of the parts depends on (tables, kinds, edge counts, nesting), not
    their values: the key of the composed-statement caches."""
    key: list[Any] = []
    for part in parts:
        if isinstance(part, PerValue):
            key.append(("per value", shape(part.parts)))
        elif isinstance(part, IfKept | IfSealed):
            yes, no = rendered_branches(part)
            name = "kept" if isinstance(part, IfKept) else "sealed"
            key.append((name, shape(yes), shape(no), part.expected))
        elif isinstance(part, Edges):
            key.append(
                ("Edges", part.table, len(part.spans), part.per_path, part.taken, part.other_types)
            )
        elif isinstance(part, Days):
            key.append(("Days", part.table, part.page_views_only, single_unit(part), part.taken))
        elif isinstance(part, Months):
            key.append(("Months", part.table, single_unit(part), part.taken))
        elif isinstance(part, Instants):
            key.append(("Instants", part.table, part.quarters_at_edges, part.visitors))
        else:
            key.append((type(part).__name__, part.table, single_unit(part)))
    return tuple(key)


def bind(parts: tuple[Part, ...], params: dict[str, Any], prefix: str = "p") -> None:
    """The values of every node's placeholders, prefixed `{prefix}{index}_`."""
    for i, part in enumerate(nodes(parts)):
        p = f"{prefix}{i}_"
        if isinstance(part, Days | Months):
            params[p + "first"], params[p + "end"] = part.first, part.end
        elif isinstance(part, LocalDays | LocalMonths):
            params.update({p + "first": part.first, p + "end": part.end, p + "zone": part.timezone})
        elif isinstance(part, Watermark):
            params.update(
                {
                    p + "first": part.first,
                    p + "end": part.end,
                    p + "day_end": part.day_end,
                    p + "zone": part.timezone,
                }
            )
        elif isinstance(part, Instants):
            params[p + "first"], params[p + "end"] = part.start, part.end
            if part.quarters_at_edges:
                hours = sorted({hour_floor(t) for t in part.period_starts})
                params[p + "hours"] = hours
                params[p + "quarters"] = [h + QUARTER * k for h in hours for k in range(4)]
        elif isinstance(part, Edges):
            for j, (a, b) in enumerate(part.spans):
                params[f"{p}a{j}"], params[f"{p}b{j}"] = a, b
                params[f"{p}d{j}a"], params[f"{p}d{j}b"] = utc_days(a, b)
        elif isinstance(part, IfSealed):
            params[p + "end"] = part.month_end
