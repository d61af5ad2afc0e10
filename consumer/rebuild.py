"""Rebuilding the rollups of a site (or every site) over a day range from the raw events.

`python -m consumer.rebuild --from 2025-11-01 --to 2025-11-12 [--site SITE]`

For operators: after a rollup bug is fixed, a manual correction, or a restore of raw rows.
One transaction: it locks the rollup tables against writes (consumers wait, then carry on
from where they were; nothing is lost or counted twice), deletes the range's rollup rows and
recounts them from `events`. Days dropped by retention are skipped: their rollups are all
that is left of them. That holds for a day in `dropped_days` even if it has a partition again
(created by late events before that record existed): a recount of its late rows would replace
rollups that counted the whole day.

Every rollup recounted from raw events (`delete` and `recount` in consumer/rollups/*.sql),
in the registry's order (consumer/rollups: each recount reads only rollups before it), then
the rollups of the sites' configured zones from the rebuilt 15-minute rollups
(consumer/zones.py).

Visits are left as they are: they were built in the order events arrived (a late event joins
the visit next to it, consumer/sessions.py), which the raw rows do not hold, so sessionizing
the range again could split or join visits differently from the days around it. The visit
rollups of the range (quarter_hour_visits, quarter_hour_visit_dimensions,
daily_visit_dimensions) are recounted from the stored visits that start on its days: their
sums are unchanged, and their sketches of visitors then hold each visit's present values only.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from typing import NamedTuple

import psycopg

from consumer.data_epoch import bump_epoch
from consumer.rollups import LOCK_ORDER, rebuild_steps
from consumer.settings import settings_for_command
from consumer.table_locks import connect_read_committed, lock_rollups
from consumer.zones import recount_local_rollups
from core.config import without_password

# Every rollup table, in the registry's order (which the batch statement follows too): blocks
# the consumers' rollup updates until commit and waits for the batches in flight, so the
# recount sees every committed event and no batch straddles it.
LOCK_ROLLUPS = lock_rollups(LOCK_ORDER)

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
REBUILDS = rebuild_steps()


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
        await bump_epoch(conn)
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
