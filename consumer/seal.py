"""Sealing closed days into sealed_monthly_paths, sealed_monthly_event_types and
sealed_monthly_visit_dimensions (schema.sql): a month's page views and visitors per page,
events and visitors per event type, and visit sums and visitors per visit dimension and value,
so that a month's top pages or entry pages read ten rows, not ten sketches a day.

    python -m consumer.seal          # seal every day before yesterday (UTC), then exit

Each consumer replica also runs it every hour (a replica that finds nothing to seal locks
nothing).
A seal advances the watermark `sealed_before` one month at most per transaction: it locks
the sealed months against batches (they wait, then carry on: nothing is lost or counted
twice), adds the page views and visitors of the days it seals to their months, in UTC and in
every kept zone, and the visits starting on them (UTC), and moves the watermark. Batches add
their late events and late visit changes for sealed days themselves (consumer/write.py, the
visit statement of consumer/rollups), and `rebuild` and zone changes recount what they
touch.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import sys
from typing import Any

import psycopg

from consumer.data_epoch import bump_epoch
from consumer.rollups import seal_steps, sealed_tables
from consumer.settings import ConsumerSettings, settings_for_command
from consumer.table_locks import connect_read_committed, lock_or_give_up, lock_rollups
from core.calendar import next_month
from core.logs import configure_logging

log = logging.getLogger(__name__)

SEAL_INTERVAL_S = 3600.0
# Days before yesterday: every zone's local day of the day before yesterday has ended by
# noon UTC yesterday, so a sealed day is one that only late events can still change.
SEAL_LAG = dt.timedelta(days=1)

# The rollups a seal writes (the registry's `sealed` ones, last in its lock order).
LOCK_SEALED = lock_rollups(sealed_tables())
# psycopg has no Python date for '-infinity': it reads as NULL.
WATERMARK = "SELECT nullif(sealed_before, '-infinity') FROM sealed_days"
# Where the first seal starts: the first day with events, UTC or local (daily_stats and
# local_daily_stats hold a row per site and day: small next to the per-path tables).
FIRST_DAY = """
SELECT least((SELECT min(day) FROM daily_stats), (SELECT min(day) FROM local_daily_stats))
"""
# Adds the days [%(lo)s, %(hi)s) (one month at most) to their months: `seal` and
# `zone_seal` in consumer/rollups/sealed.sql, in the registry's order.
SEAL_STEPS = seal_steps()
MOVE_WATERMARK = "UPDATE sealed_days SET sealed_before = %(hi)s"


def seal_target(today: dt.date) -> dt.date:
    """The watermark a seal on `today` (UTC) moves to: days before yesterday are sealed."""
    return today - SEAL_LAG


async def _watermark(conn: psycopg.AsyncConnection[Any]) -> dt.date | None:
    """The current watermark; None before the first seal ('-infinity')."""
    cur = await conn.execute(WATERMARK)
    row = await cur.fetchone()
    if row is None:
        raise ValueError("sealed_days is empty: apply schema.sql (make schema)")
    value: dt.date | None = row[0]
    return value


async def _first_day(conn: psycopg.AsyncConnection[Any]) -> dt.date | None:
    cur = await conn.execute(FIRST_DAY)
    row = await cur.fetchone()
    return row[0] if row else None


async def _seal_step(conn: psycopg.AsyncConnection[Any], target: dt.date) -> dt.date | None:
    """One transaction: seals up to one month of days; returns the new watermark, or None
    when there was nothing to seal."""
    async with conn.transaction():
        await lock_or_give_up(conn, LOCK_SEALED, "the sealed months")
        lo = await _watermark(conn) or await _first_day(conn)
        if lo is None or lo >= target:
            return None
        params = {"lo": lo, "hi": min(target, next_month(lo))}
        for step in SEAL_STEPS:
            await conn.execute(step, params)
        await conn.execute(MOVE_WATERMARK, params)
        await bump_epoch(conn)
        return params["hi"]


async def seal_closed_days(
    database_url: str, today: dt.date
) -> tuple[dt.date | None, dt.date | None]:
    """Seals every day before seal_target(today); returns the watermark before and after
    (None: nothing sealed yet)."""
    target = seal_target(today)
    async with await connect_read_committed(database_url) as conn:
        await conn.set_autocommit(True)
        before = after = await _watermark(conn)
        start = before or await _first_day(conn)
        if start is None or start >= target:
            return before, after  # nothing to seal, and nothing locked
        while (moved := await _seal_step(conn, target)) is not None:
            after = moved
            log.info("sealed the days before %s", moved)
        return before, after


async def seal_periodically(settings: ConsumerSettings) -> None:
    """Runs until cancelled; failures are logged and retried at the next interval."""
    while True:
        today = dt.datetime.now(dt.UTC).date()
        try:
            await seal_closed_days(settings.database_url, today)
        except (psycopg.Error, ValueError) as exc:
            log.warning("closed days not sealed (%s); next attempt in an hour", exc)
        except Exception:  # a bug: say so, and keep the task (and the next seal) alive
            log.exception("closed days not sealed; next attempt in an hour")
        await asyncio.sleep(SEAL_INTERVAL_S)


def main(argv: list[str]) -> int:
    configure_logging("seal")
    if argv:
        print("usage: python -m consumer.seal", file=sys.stderr)
        return 2
    settings = settings_for_command("seal")
    if settings is None:
        return 2
    today = dt.datetime.now(dt.UTC).date()
    try:
        before, after = asyncio.run(seal_closed_days(settings.database_url, today))
    except (psycopg.Error, ValueError) as exc:
        print(f"seal: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if before == after:
        print(f"seal: nothing new to seal (sealed before: {after or 'no day yet'})")
    else:
        print(f"seal: the days before {after} are sealed (they were before {before or 'none'})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
