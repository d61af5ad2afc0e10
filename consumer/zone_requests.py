"""Keeping the time zones that stats requests ask for (schema.sql: zone_requests).

A zone a site does not keep is answered from 15-minute rollups: exact, but 15-30 ms of
database time a request for a large site, against ~1 ms in a kept zone. The API notes every
request in a zone whose days are not UTC days (ingest/stats_read.py); once a minute one
consumer replica keeps the zones asked for in the last day, up to AUTO_ZONES_PER_SITE per
site (oldest request first, one build at a time: a build holds the batches for seconds), and
drops the zones it kept that nobody has asked for in AUTO_ZONES_IDLE_DAYS. Zones added by an
operator (`python -m consumer.zones add`) are never dropped and do not count.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

import psycopg

from consumer.settings import ConsumerSettings
from consumer.zones import add_zone, remove_zone

log = logging.getLogger(__name__)

KEEP_INTERVAL_S = 60.0
BUILDS_PER_ROUND = 5  # the rest wait for the next round: batches wait during each build
RECENT = dt.timedelta(days=1)

# One replica at a time (a session-level advisory lock, released at the end of the round).
TRY_LOCK = "SELECT pg_try_advisory_lock(hashtext('keep requested zones'))"
UNLOCK = "SELECT pg_advisory_unlock(hashtext('keep requested zones'))"
# The next zone to keep: asked for recently, not kept, its site under the cap, and a name
# PostgreSQL knows (the API checks names against Python's tzdata, which may be newer).
NEXT_REQUESTED = """
SELECT r.site_id, r.timezone FROM zone_requests r
WHERE r.last_requested_at > now() - %(recent)s
  AND NOT EXISTS (SELECT 1 FROM site_zones z
                  WHERE z.site_id = r.site_id AND z.timezone = r.timezone)
  AND (SELECT count(*) FROM site_zones z WHERE z.site_id = r.site_id AND z.auto) < %(per_site)s
  AND EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = r.timezone)
ORDER BY r.first_requested_at, r.site_id, r.timezone
LIMIT 1
"""
IDLE = """
SELECT z.site_id, z.timezone FROM site_zones z
LEFT JOIN zone_requests r ON r.site_id = z.site_id AND r.timezone = z.timezone
WHERE z.auto AND coalesce(r.last_requested_at, z.added_at) < now() - %(idle)s
ORDER BY 1, 2
"""


async def keep_requested_zones(
    database_url: str, per_site: int, idle: dt.timedelta
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """One round: returns the (site, zone) pairs kept and dropped. Another replica's round in
    progress makes this one do nothing."""
    kept: list[tuple[str, str]] = []
    dropped: list[tuple[str, str]] = []
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        cur = await conn.execute(TRY_LOCK)
        row = await cur.fetchone()
        if not row or not row[0]:
            return kept, dropped
        try:
            cur = await conn.execute(IDLE, {"idle": idle})
            for site, zone in await cur.fetchall():
                if await remove_zone(database_url, site, zone):
                    dropped.append((site, zone))
                    log.info("%s: no longer keeps %s (not requested for %s)", site, zone, idle)
            for _ in range(BUILDS_PER_ROUND):
                params = {"recent": RECENT, "per_site": per_site}
                cur = await conn.execute(NEXT_REQUESTED, params)
                if (row := await cur.fetchone()) is None:
                    break
                site, zone = row
                days = await add_zone(database_url, site, zone, auto=True)
                kept.append((site, zone))
                log.info(
                    "%s: keeps %s now, as requests ask (%d local days built)", site, zone, days
                )
        finally:
            await conn.execute(UNLOCK)
    return kept, dropped


async def keep_requested_zones_periodically(settings: ConsumerSettings) -> None:
    """Runs until cancelled; failures are logged and retried at the next round."""
    idle = dt.timedelta(days=settings.auto_zones_idle_days)
    while True:
        try:
            await keep_requested_zones(settings.database_url, settings.auto_zones_per_site, idle)
        except (psycopg.Error, ValueError) as exc:
            log.warning("requested zones not kept (%s); next attempt in a minute", exc)
        except Exception:  # a bug: say so, and keep the task alive
            log.exception("requested zones not kept; next attempt in a minute")
        await asyncio.sleep(KEEP_INTERVAL_S)
