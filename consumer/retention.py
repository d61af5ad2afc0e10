"""Retention of raw events: dropping day partitions older than RETENTION_DAYS.

Rollups are kept (they are small and are what /stats reads); only the raw rows go, so a
rollup rebuild (`python -m consumer.rebuild`) is possible only for days still retained.
Applied every hour by each consumer replica when RETENTION_DAYS > 0 (dropping is
idempotent), or once by `python -m consumer.retention [DAYS]`, e.g. from cron.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import sys

from consumer.settings import ConsumerSettings, settings_for_command
from consumer.write import DatabaseUnavailable, RowsRejected, Writer
from ingest.logs import configure_logging

log = logging.getLogger(__name__)

RETENTION_INTERVAL_S = 3600.0


def first_kept_day(retention_days: int, today: dt.date) -> dt.date:
    """Keeps today and the `retention_days - 1` days before it."""
    return today - dt.timedelta(days=retention_days - 1)


async def apply_retention(database_url: str, retention_days: int, today: dt.date) -> list[str]:
    """Drops the raw-event partitions of days before the retained window; returns their names."""
    writer = Writer(database_url, "retention", "")
    try:
        return await writer.drop_partitions_before(first_kept_day(retention_days, today))
    finally:
        await writer.close()


async def apply_retention_periodically(settings: ConsumerSettings) -> None:
    """Runs until cancelled; failures are logged and retried at the next interval."""
    while True:
        today = dt.datetime.now(dt.UTC).date()
        try:
            dropped = await apply_retention(settings.database_url, settings.retention_days, today)
        except (DatabaseUnavailable, RowsRejected) as exc:
            log.warning("retention not applied (%s); next attempt in an hour", exc)
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
    except DatabaseUnavailable as exc:
        print(f"retention: {exc}", file=sys.stderr)
        return 1
    kept = first_kept_day(days, today)
    print(f"retention: kept days from {kept}; dropped {len(dropped)} partitions {dropped}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
