"""Retention of raw events: dropping day partitions older than RETENTION_DAYS.

Rollups are kept (they are small and are what /stats reads); only the raw rows go, so a
rollup rebuild (`python -m consumer.rebuild`) is possible only for days still retained.
Each dropped day is recorded in `dropped_days` in the same transaction as its DROP
(schema.sql's drop_events_partition): the consumer then refuses events for it, so a replay
cannot count them twice, and rebuild leaves its rollups alone. The visits that started on a
dropped day go with it (their rollups are kept, like every rollup).
Applied every hour by each consumer replica when RETENTION_DAYS > 0 (dropping is
idempotent), or once by `python -m consumer.retention [DAYS]`, e.g. from cron.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import sys

import psycopg

from consumer.data_epoch import bump_epoch
from consumer.settings import ConsumerSettings, settings_for_command
from core.config import without_password
from core.logs import configure_logging

log = logging.getLogger(__name__)

RETENTION_INTERVAL_S = 3600.0

# The days of the partitions of `events` before a day, from their bounds (not their names).
PARTITION_DAYS_BEFORE = """
SELECT day FROM (
    SELECT substring(pg_get_expr(c.relpartbound, c.oid) FROM $$FROM \\('([^']+)'\\)$$)::date
        AS day
    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = 'events'::regclass
) p
WHERE day < %s ORDER BY day
"""
DROP_PARTITION = "SELECT drop_events_partition(%s)"

# A batch locks `visits` (ROW EXCLUSIVE) before it reads the visits it continues, so this
# waits for the batches in flight and holds new ones until commit: no batch continues a visit
# deleted under it. Waits at most VISITS_LOCK_TIMEOUT for them.
LOCK_VISITS = "LOCK TABLE visits IN SHARE ROW EXCLUSIVE MODE"
VISITS_LOCK_TIMEOUT = "SET LOCAL lock_timeout = '30s'"
DELETE_VISITS = "DELETE FROM visits WHERE day < %s"
# The versions kept answers read of the dropped days (ingest/stats_answers.py): removing one
# can lower a range's version, so the epoch is bumped with it.
DELETE_DAY_VERSIONS = "DELETE FROM site_day_versions WHERE day < %s"


def first_kept_day(retention_days: int, today: dt.date) -> dt.date:
    """Keeps today and the `retention_days - 1` days before it."""
    return today - dt.timedelta(days=retention_days - 1)


async def apply_retention(database_url: str, retention_days: int, today: dt.date) -> list[str]:
    """Drops the raw-event partitions of days before the retained window, one transaction per
    day (each waits at most the function's lock_timeout for `events`), then deletes the visits
    that started on those days, then those days' answer versions; returns the partitions'
    names.

    Raises psycopg.Error if the database cannot be reached or a lock is not granted in time;
    the days dropped before that stay dropped (and recorded).
    """
    first_kept = first_kept_day(retention_days, today)
    dropped = []
    async with await psycopg.AsyncConnection.connect(
        database_url, autocommit=True, connect_timeout=10, application_name="analytics-retention"
    ) as conn:
        cur = await conn.execute(PARTITION_DAYS_BEFORE, (first_kept,))
        for (day,) in await cur.fetchall():
            async with conn.transaction():
                cur = await conn.execute(DROP_PARTITION, (day,))
                row = await cur.fetchone()
                if row and row[0]:
                    dropped.append(f"events_{day:%Y%m%d}")
                    await bump_epoch(conn)
        async with conn.transaction():
            await conn.execute(VISITS_LOCK_TIMEOUT)
            await conn.execute(LOCK_VISITS)
            cur = await conn.execute(DELETE_VISITS, (first_kept,))
            if cur.rowcount:
                await bump_epoch(conn)
        async with conn.transaction():
            cur = await conn.execute(DELETE_DAY_VERSIONS, (first_kept,))
            if cur.rowcount:
                await bump_epoch(conn)
    return dropped


async def apply_retention_periodically(settings: ConsumerSettings) -> None:
    """Runs until cancelled; failures are logged and retried at the next interval."""
    while True:
        today = dt.datetime.now(dt.UTC).date()
        try:
            dropped = await apply_retention(settings.database_url, settings.retention_days, today)
        except psycopg.Error as exc:
            reason = without_password(str(exc), settings.database_url)
            log.warning("retention not applied (%s); next attempt in an hour", reason)
        except Exception:  # a bug: say so, and keep the task alive
            log.exception("retention not applied; next attempt in an hour")
        else:
            if dropped:
                log.info("retention: dropped %s", ", ".join(dropped))
        await asyncio.sleep(RETENTION_INTERVAL_S)


def main(argv: list[str]) -> int:
    configure_logging("retention")
    settings = settings_for_command("retention")
    if settings is None:
        return 2
    days = int(argv[0]) if argv else settings.retention_days
    if days <= 0:
        print("retention: give DAYS (or set RETENTION_DAYS) > 0", file=sys.stderr)
        return 2
    today = dt.datetime.now(dt.UTC).date()
    try:
        dropped = asyncio.run(apply_retention(settings.database_url, days, today))
    except psycopg.Error as exc:
        reason = without_password(str(exc), settings.database_url)
        print(f"retention: {type(exc).__name__}: {reason}", file=sys.stderr)
        return 1
    kept = first_kept_day(days, today)
    print(f"retention: kept days from {kept}; dropped {len(dropped)} partitions {dropped}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
