"""Rebuilding the rollups of a site (or every site) over a day range from the raw events.

`python -m consumer.rebuild --from 2025-11-01 --to 2025-11-12 [--site SITE]`

For operators: after a rollup bug is fixed, a manual correction, or a restore of raw rows.
One transaction: it locks the rollup tables against writes (consumers wait, then carry on
from where they were; nothing is lost or counted twice), deletes the range's rollup rows and
recounts them from `events`. Days dropped by retention are skipped: their rollups are all
that is left of them. That holds for a day in `dropped_days` even if it has a partition again
(created by late events before that record existed): a recount of its late rows would replace
rollups that counted the whole day.

Each rollup has its own statement below; a new rollup table needs its own here too
(tests/support.py's assert_rollups_match_raw_rows checks the same recounts). The rollups of
the sites' configured zones are then recounted from the rebuilt 15-minute rollups
(consumer/zones.py).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from typing import NamedTuple

import psycopg

from consumer.seal import SEALED, fold_utc_days, fold_utc_event_types
from consumer.settings import settings_for_command
from consumer.table_locks import connect_read_committed
from consumer.zones import recount_local_rollups
from core.config import without_password

# Blocks the consumers' rollup updates (ROW EXCLUSIVE) until commit, and waits for the
# batches in flight, so the recount sees every committed event and no batch straddles it.
# The order is the one in which the batch statement (consumer/write.py) names the tables, so
# that a batch holding some of them and this lock cannot wait for each other (a test keeps
# the two in step).
LOCK_ROLLUPS = """
LOCK TABLE daily_users, daily_stats, daily_paths, hourly_stats, daily_visitors, quarter_hour_stats,
    quarter_hour_paths, daily_details, monthly_paths, daily_event_types, local_daily_stats,
    local_daily_paths, local_monthly_paths, sealed_monthly_paths, sealed_monthly_event_types
IN SHARE ROW EXCLUSIVE MODE
"""

# Retention cannot drop a partition while this is held (DROP needs ACCESS EXCLUSIVE on
# `events`), so the days found below keep their raw rows until the recount has read them.
LOCK_EVENTS = "LOCK TABLE events IN ACCESS SHARE MODE"

ONE_DAY = dt.timedelta(days=1)

RETAINED_DAYS = """
SELECT d::date FROM generate_series(%(first)s::date, %(last)s::date, interval '1 day') AS d
WHERE to_regclass(format('events_%%s', to_char(d, 'YYYYMMDD'))) IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM dropped_days WHERE day = d::date)
ORDER BY 1
"""
DROPPED_DAYS = """
SELECT day FROM dropped_days WHERE day BETWEEN %(first)s AND %(last)s ORDER BY 1
"""

# (delete, recount) per rollup; %(days)s are the retained days, %(site)s NULL for all sites.
REBUILD_DAILY_USERS = (
    "DELETE FROM daily_users WHERE day = ANY(%(days)s) "
    "AND (%(site)s::text IS NULL OR site_id = %(site)s)",
    """
    INSERT INTO daily_users (site_id, day, user_id)
    SELECT DISTINCT site_id, day, user_id FROM events
    WHERE day = ANY(%(days)s) AND (%(site)s::text IS NULL OR site_id = %(site)s)
      AND event_type = 'page_view'
    """,
)
REBUILD_DAILY_STATS = (
    "DELETE FROM daily_stats WHERE day = ANY(%(days)s) "
    "AND (%(site)s::text IS NULL OR site_id = %(site)s)",
    """
    INSERT INTO daily_stats (site_id, day, page_views, unique_users, events)
    SELECT site_id, day, count(*) FILTER (WHERE event_type = 'page_view'),
           count(DISTINCT user_id) FILTER (WHERE event_type = 'page_view'), count(*)
    FROM events
    WHERE day = ANY(%(days)s) AND (%(site)s::text IS NULL OR site_id = %(site)s)
    GROUP BY site_id, day
    """,
)
REBUILD_DAILY_PATHS = (
    "DELETE FROM daily_paths WHERE day = ANY(%(days)s) "
    "AND (%(site)s::text IS NULL OR site_id = %(site)s)",
    """
    INSERT INTO daily_paths (site_id, day, path, views)
    SELECT site_id, day, path, count(*) FROM events
    WHERE day = ANY(%(days)s) AND (%(site)s::text IS NULL OR site_id = %(site)s)
      AND event_type = 'page_view'
    GROUP BY site_id, day, path
    """,
)
REBUILD_HOURLY_STATS = (
    "DELETE FROM hourly_stats WHERE (hour AT TIME ZONE 'UTC')::date = ANY(%(days)s) "
    "AND (%(site)s::text IS NULL OR site_id = %(site)s)",
    """
    INSERT INTO hourly_stats (site_id, hour, page_views, events, visitors)
    SELECT site_id, date_trunc('hour', event_time, 'UTC'),
           count(*) FILTER (WHERE event_type = 'page_view'), count(*),
           coalesce(hll_add_agg(hll_hash_text(user_id)) FILTER (WHERE event_type = 'page_view'),
                    hll_empty())
    FROM events
    WHERE day = ANY(%(days)s) AND (%(site)s::text IS NULL OR site_id = %(site)s)
    GROUP BY 1, 2
    """,
)
_SITE = "(%(site)s::text IS NULL OR site_id = %(site)s)"
_SKETCH = "hll_add_agg(hll_hash_text(user_id))"
_RAW = f"FROM events WHERE day = ANY(%(days)s) AND {_SITE}"
# The stats API's rollups (the consumer's STATS_API_ROLLUPS).
REBUILD_DAILY_VISITORS = (
    f"DELETE FROM daily_visitors WHERE day = ANY(%(days)s) AND {_SITE}",
    f"""
    INSERT INTO daily_visitors (site_id, day, visitors)
    SELECT site_id, day, {_SKETCH} {_RAW} AND event_type = 'page_view' GROUP BY 1, 2
    """,
)
REBUILD_QUARTER_HOURS = (
    "DELETE FROM quarter_hour_stats WHERE (bucket AT TIME ZONE 'UTC')::date = ANY(%(days)s) "
    f"AND {_SITE}",
    f"""
    INSERT INTO quarter_hour_stats (site_id, bucket, page_views, events, visitors)
    SELECT site_id, date_bin('15 minutes', event_time, timestamptz '2000-01-01 00:00+00'),
           count(*) FILTER (WHERE event_type = 'page_view'), count(*),
           coalesce({_SKETCH} FILTER (WHERE event_type = 'page_view'), hll_empty())
    {_RAW} GROUP BY 1, 2
    """,
)
REBUILD_QUARTER_HOUR_PATHS = (
    "DELETE FROM quarter_hour_paths WHERE (bucket AT TIME ZONE 'UTC')::date = ANY(%(days)s) "
    f"AND {_SITE}",
    f"""
    INSERT INTO quarter_hour_paths (site_id, bucket, path, views, visitors)
    SELECT site_id, date_bin('15 minutes', event_time, timestamptz '2000-01-01 00:00+00'), path,
           count(*), {_SKETCH}
    {_RAW} AND event_type = 'page_view' GROUP BY 1, 2, 3
    """,
)
REBUILD_DAILY_DETAILS = (
    f"DELETE FROM daily_details WHERE day = ANY(%(days)s) AND {_SITE}",
    f"""
    INSERT INTO daily_details (site_id, day, event_type, path, events, users)
    SELECT site_id, day, event_type, path, count(*), {_SKETCH} {_RAW} GROUP BY 1, 2, 3, 4
    """,
)
REBUILD_EVENT_TYPES = (
    f"DELETE FROM daily_event_types WHERE day = ANY(%(days)s) AND {_SITE}",
    f"""
    INSERT INTO daily_event_types (site_id, day, event_type, events, users)
    SELECT site_id, day, event_type, count(*), {_SKETCH} {_RAW} GROUP BY 1, 2, 3
    """,
)
# Whole months, summed from daily_paths (rebuilt above; it outlives raw-event retention).
_MONTHS_OF_DAYS = (
    "(SELECT DISTINCT date_trunc('month', d)::date AS month FROM unnest(%(days)s::date[]) d) m"
)
_MONTHS = f"month IN (SELECT month FROM {_MONTHS_OF_DAYS})"
REBUILD_MONTHLY_PATHS = (
    f"DELETE FROM monthly_paths WHERE {_MONTHS} AND {_SITE}",
    f"""
    INSERT INTO monthly_paths (site_id, month, path, views)
    SELECT site_id, month, path, sum(views)
    FROM (SELECT site_id, date_trunc('month', day)::date AS month, path, views FROM daily_paths
          WHERE {_SITE}) p
    WHERE {_MONTHS} GROUP BY 1, 2, 3
    """,
)
# The sealed days of those months (consumer/seal.py) in UTC, from daily_paths, daily_details
# and daily_event_types (rebuilt above).
_SEALED_DAYS_OF_MONTHS = (
    f"SELECT site_id, day FROM daily_stats WHERE {_SITE} AND day < {SEALED} "
    f"AND date_trunc('month', day)::date IN (SELECT month FROM {_MONTHS_OF_DAYS})"
)
REBUILD_SEALED_MONTHS = (
    f"DELETE FROM sealed_monthly_paths WHERE timezone = 'UTC' AND {_MONTHS} AND {_SITE}",
    fold_utc_days(_SEALED_DAYS_OF_MONTHS),
)
REBUILD_SEALED_EVENT_TYPES = (
    f"DELETE FROM sealed_monthly_event_types WHERE {_MONTHS} AND {_SITE}",
    fold_utc_event_types(_SEALED_DAYS_OF_MONTHS),
)
REBUILDS = [
    REBUILD_DAILY_USERS,
    REBUILD_DAILY_STATS,
    REBUILD_DAILY_PATHS,
    REBUILD_HOURLY_STATS,
    REBUILD_DAILY_VISITORS,
    REBUILD_QUARTER_HOURS,
    REBUILD_QUARTER_HOUR_PATHS,
    REBUILD_DAILY_DETAILS,
    REBUILD_EVENT_TYPES,
    REBUILD_MONTHLY_PATHS,  # after daily_paths
    REBUILD_SEALED_MONTHS,  # after daily_paths and daily_details
    REBUILD_SEALED_EVENT_TYPES,  # after daily_event_types
]


class Rebuilt(NamedTuple):
    days: list[dt.date]  # recounted: their raw partition exists
    dropped: list[dt.date]  # skipped: dropped by retention (dropped_days), rollups kept


async def rebuild_rollups(
    database_url: str, first: dt.date, last: dt.date, site: str | None = None
) -> Rebuilt:
    """Recomputes the rollups of [first, last] (UTC days) from raw events, in one transaction
    that waits for the batches in flight; returns the days rebuilt (those whose raw partition
    exists and that retention never dropped) and the days skipped as dropped."""
    async with await connect_read_committed(database_url) as conn, conn.transaction():
        await conn.execute(LOCK_ROLLUPS)
        await conn.execute(LOCK_EVENTS)
        span = {"first": first, "last": last}
        cur = await conn.execute(RETAINED_DAYS, span)
        days = [row[0] for row in await cur.fetchall()]
        cur = await conn.execute(DROPPED_DAYS, span)
        dropped = [row[0] for row in await cur.fetchall()]
        params = {"days": days, "site": site}
        for delete, recount in REBUILDS:
            await conn.execute(delete, params)
            await conn.execute(recount, params)
        if days:
            # Local days of the sites' zones overlap a UTC day and its neighbours.
            scope = {"site": site, "lo": days[0] - ONE_DAY, "hi": days[-1] + ONE_DAY}
            await recount_local_rollups(conn, scope)
    return Rebuilt(days, dropped)


def _listed(days: list[dt.date]) -> str:
    return ", ".join(map(str, days)) if len(days) <= 5 else f"{days[0]} … {days[-1]}"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m consumer.rebuild", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--from", dest="first", type=dt.date.fromisoformat, required=True)
    parser.add_argument("--to", dest="last", type=dt.date.fromisoformat, required=True)
    parser.add_argument("--site", default=None, help="one site_id (default: every site)")
    args = parser.parse_args(argv)
    settings = settings_for_command("rebuild")
    if settings is None:
        return 2
    try:
        rebuilt = asyncio.run(
            rebuild_rollups(settings.database_url, args.first, args.last, args.site)
        )
    except psycopg.Error as exc:
        reason = without_password(str(exc), settings.database_url)
        print(f"rebuild: {type(exc).__name__}: {reason}", file=sys.stderr)
        return 1
    said = [f"rebuild: recounted {len(rebuilt.days)} days for {args.site or 'every site'}"]
    if rebuilt.dropped:
        said.append(
            f"skipped {len(rebuilt.dropped)} days dropped by retention "
            f"({_listed(rebuilt.dropped)}): their rollups are all that is left of them and "
            "stay as they are"
        )
    missing = (args.last - args.first).days + 1 - len(rebuilt.days) - len(rebuilt.dropped)
    if missing > 0:
        said.append(f"skipped {missing} days without raw events")
    print("; ".join(said))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
