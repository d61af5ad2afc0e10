"""The SQL answering a request from the rollups of a site's configured zone (schema.sql:
site_zones, local_*), with its bound parameters. Pure.

A request in a zone whose midnights are not UTC midnights covers whole local days; when the
site keeps that zone, those are rows of local_daily_stats / local_daily_paths /
local_monthly_paths, read like UTC days. Every statement also answers whether the zone is
kept (first column, in the same snapshot as the rows): when it is not, the caller asks
ingest/query_sql.py instead, which builds the answer from 15-minute rollups and raw events.

Used for unfiltered aggregates, daily timeseries and page breakdowns: the questions of the
dashboard and of `/stats?timezone=…`. Filters and event-type breakdowns keep the general path.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from core.calendar import one_whole_month
from ingest.query import BreakdownRequest, StatsRequest, TimeseriesRequest
from ingest.query_sql import MONTH_SEALED_SQL, SEALED_END_SQL, whole_months

_KEPT_EXISTS = "EXISTS (SELECT 1 FROM site_zones WHERE site_id = %(site)s AND timezone = %(tz)s)"
_KEPT = f"(SELECT {_KEPT_EXISTS} AS kept)"
_ZONE = "site_id = %(site)s AND timezone = %(tz)s"
_DAYS = f"{_ZONE} AND day >= %(first)s AND day <= %(last)s"
_LOCAL_DAYS = (
    "l.site_id = %(site)s AND l.timezone = %(tz)s AND l.day >= %(first)s AND l.day <= %(last)s"
)


ONE_DAY = dt.timedelta(days=1)


def applies(request: StatsRequest) -> bool:
    """Worth trying: no filters, and local days that UTC days cannot answer."""
    return not request.filters and not request.range.utc_aligned


def _params(request: StatsRequest) -> dict[str, Any]:
    """The range's local days, and the whole local months [month_from, month_to) in it."""
    first, last = request.range.first, request.range.last
    month_from, month_to = whole_months(first, last + ONE_DAY)
    return {
        "site": request.site_id,
        "tz": request.range.timezone,
        "first": first,
        "last": last,
        "month_from": month_from,
        "month_to": month_to,
    }


# One row: kept, views, events, visitors.
AGGREGATE = f"""
SELECT k.kept, coalesce(sum(l.page_views), 0)::bigint, coalesce(sum(l.events), 0)::bigint,
       coalesce(hll_cardinality(hll_union_agg(l.visitors)), 0)
FROM {_KEPT} k
LEFT JOIN local_daily_stats l ON k.kept AND {_LOCAL_DAYS}
GROUP BY k.kept
"""

# Rows: kept, local day (as a timestamp, like the other timeseries), views, events, visitors;
# one row of NULLs after `kept` when there is no data.
DAILY_TIMESERIES = f"""
SELECT k.kept, l.day::timestamp, l.page_views, l.events, hll_cardinality(l.visitors)
FROM {_KEPT} k
LEFT JOIN local_daily_stats l ON k.kept AND {_LOCAL_DAYS}
ORDER BY l.day
"""

# Page views per path over the range: whole local months from local_monthly_paths, the other
# days from local_daily_paths.
_PATH_VIEWS = f"""
SELECT path, views FROM local_monthly_paths
WHERE {_ZONE} AND month >= %(month_from)s AND month < %(month_to)s
UNION ALL
SELECT path, views FROM local_daily_paths
WHERE {_ZONE} AND day >= %(first)s AND day < %(month_from)s
UNION ALL
SELECT path, views FROM local_daily_paths
WHERE {_ZONE} AND day >= %(month_to)s AND day <= %(last)s
"""

# A path's visitors over the range: the sealed days of whole local months from one sketch a
# month (sealed_monthly_paths, consumer/seal.py), the other days' from local_daily_paths.
_PATH_VISITORS = f"""
(SELECT coalesce(hll_cardinality(hll_union_agg(v.visitors)), 0) FROM (
    SELECT visitors FROM sealed_monthly_paths
    WHERE site_id = %(site)s AND timezone = %(tz)s AND path = r.path
      AND month >= %(month_from)s AND month < %(month_to)s
    UNION ALL
    SELECT visitors FROM local_daily_paths
    WHERE site_id = %(site)s AND timezone = %(tz)s AND path = r.path
      AND ((day >= %(first)s AND day < %(month_from)s)
           OR (day >= {SEALED_END_SQL} AND day <= %(last)s))
) v)
"""

# Rows: kept, path, views, events (= views: a page breakdown counts page views), visitors (or
# 0 when not asked for); one row of NULLs after `kept` when there is no data. {ranked} is one
# of the _RANKED_* page of paths below.
PAGES_BY_VIEWS = """
SELECT k.kept, r.path, r.views, r.views, {visitors}
FROM {kept} k
LEFT JOIN LATERAL ({ranked}) r ON k.kept
ORDER BY r.views DESC, r.path
"""
_PAGE = "ORDER BY 2 DESC, path LIMIT %(limit)s OFFSET %(offset)s"
# Any range: every piece's rows summed per path.
_RANKED_RANGE = (
    f"SELECT path, sum(views)::bigint AS views FROM ({_PATH_VIEWS}) p "
    f"GROUP BY path HAVING sum(views) > 0 {_PAGE}"
)
# One day, or exactly one month: a path has one row, nothing to add up (and a day's rows come
# in local_daily_paths_top's order).
_RANKED_DAY = (
    f"SELECT path, views FROM local_daily_paths WHERE {_ZONE} AND day = %(first)s "
    f"AND views > 0 {_PAGE}"
)

_RANKED_MONTH = (
    f"SELECT path, views FROM local_monthly_paths WHERE {_ZONE} AND month = %(month_from)s "
    f"AND views > 0 {_PAGE}"
)

# Exactly one month whose local days are all sealed (consumer/seal.py): the page's first rows
# of sealed_monthly_paths_top, visitors included. Its first column says whether it answers:
# the zone is kept and the month sealed (else PAGES_BY_VIEWS, then the general path).
SEALED_MONTH_PAGES = f"""
SELECT k.kept AND k.sealed, r.path, r.views, r.views, hll_cardinality(r.visitors)
FROM (SELECT {_KEPT_EXISTS} AS kept, {MONTH_SEALED_SQL} AS sealed) k
LEFT JOIN LATERAL (
    SELECT path, views, visitors FROM sealed_monthly_paths
    WHERE {_ZONE} AND month = %(month_from)s AND views > 0 {_PAGE}
) r ON k.kept AND k.sealed
ORDER BY r.views DESC, r.path
"""

# The same ranked by visitors: every path's sketches merged (slower, as in UTC).
PAGES_BY_VISITORS = f"""
SELECT k.kept, r.path, r.views, r.views, r.visitors
FROM {_KEPT} k
LEFT JOIN LATERAL (
    SELECT path, sum(views)::bigint AS views,
           hll_cardinality(hll_union_agg(visitors)) AS visitors
    FROM local_daily_paths WHERE {_DAYS}
    GROUP BY path HAVING hll_cardinality(hll_union_agg(visitors)) > 0
    ORDER BY 3 DESC, path LIMIT %(limit)s OFFSET %(offset)s
) r ON k.kept
ORDER BY r.visitors DESC, r.path
"""


def aggregate_sql(request: StatsRequest) -> tuple[str, dict[str, Any]] | None:
    """Unfiltered totals; None for the others."""
    return (AGGREGATE, _params(request)) if applies(request) else None


def timeseries_sql(request: TimeseriesRequest) -> tuple[str, dict[str, Any]] | None:
    """Daily points only: local hours are 15-minute rows either way."""
    if request.interval != "day" or not applies(request.stats):
        return None
    return DAILY_TIMESERIES, _params(request.stats)


def breakdown_sql(request: BreakdownRequest) -> tuple[str, dict[str, Any]] | None:
    """Page breakdowns only; None for the others."""
    stats = request.stats
    if request.dimension != "path" or not applies(stats):
        return None
    params = _params(stats)
    params.update(limit=request.limit, offset=request.limit * (request.page - 1))
    if stats.metrics[0] == "visitors":
        return PAGES_BY_VISITORS, params
    visitors = _PATH_VISITORS if "visitors" in stats.metrics else "0"
    first, last = stats.range.first, stats.range.last
    ranked = _RANKED_RANGE
    if first == last:
        ranked = _RANKED_DAY
    elif _one_whole_month(params):
        ranked = _RANKED_MONTH
    return PAGES_BY_VIEWS.format(visitors=visitors, kept=_KEPT, ranked=ranked), params


def sealed_month_sql(
    request: BreakdownRequest, today: dt.date
) -> tuple[str, dict[str, Any]] | None:
    """A page breakdown of exactly one local month, sorted by views, that may be sealed;
    None for others. A seal never reaches today (UTC), so a month that has not ended
    before it is skipped without asking."""
    stats = request.stats
    if request.dimension != "path" or not applies(stats) or stats.metrics[0] == "visitors":
        return None
    params = _params(stats)
    if not _one_whole_month(params) or params["month_to"] >= today:
        return None
    params.update(limit=request.limit, offset=request.limit * (request.page - 1))
    return SEALED_MONTH_PAGES, params


def _one_whole_month(params: dict[str, Any]) -> bool:
    return one_whole_month(params["first"], params["last"] + ONE_DAY)
