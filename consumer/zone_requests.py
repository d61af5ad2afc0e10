"""Keeping the time zones that stats are read in (schema.sql: zone_requests).

A zone a site does not keep is answered from 15-minute rollups: exact, but many times the
database time of a kept zone for a large site (docs/decisions/0005-kept-zones.md). The API
counts the requests in every zone but UTC (ingest/zone_requests.py). Once a minute one
consumer replica (the others skip the round):

- drops the zones it kept that nobody has asked for in AUTO_ZONES_IDLE_DAYS, and forgets
  requests that old;
- keeps the zones asked for in the last day, most requested first, up to AUTO_ZONES_PER_SITE
  per site and AUTO_ZONES_MAX in all, for sites that have events (a build holds the batches
  for seconds, so at most BUILDS_PER_ROUND a round). A zone that cannot be kept (unknown to
  PostgreSQL, or whose days are UTC days) is marked declined and skipped from then on.

Zones added by an operator (`python -m consumer.zones add`) are neither counted nor dropped;
one an operator removes is declined, so requests do not bring it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from typing import Any

import psycopg

from consumer.settings import ConsumerSettings
from consumer.zones import add_zone, remove_zone, validate_zone, zone_known_to_postgres

log = logging.getLogger(__name__)

KEEP_INTERVAL_S = 60.0
BUILDS_PER_ROUND = 5
RECENT = dt.timedelta(days=1)

# One replica at a time: a session-level advisory lock, released at the end of the round.
TRY_LOCK = "SELECT pg_try_advisory_lock(hashtext('keep requested zones'))"
UNLOCK = "SELECT pg_advisory_unlock(hashtext('keep requested zones'))"
IDLE = """
SELECT z.site_id, z.timezone FROM site_zones z
LEFT JOIN zone_requests r ON r.site_id = z.site_id AND r.timezone = z.timezone
WHERE z.auto AND coalesce(r.last_requested_at, z.added_at) < now() - %(idle)s
ORDER BY 1, 2
"""
FORGET = """
DELETE FROM zone_requests r
WHERE r.last_requested_at < now() - %(idle)s AND r.declined IS DISTINCT FROM 'operator'
  AND NOT EXISTS (SELECT 1 FROM site_zones z
                  WHERE z.site_id = r.site_id AND z.timezone = r.timezone)
"""
NEXT_REQUESTED = """
SELECT r.site_id, r.timezone FROM zone_requests r
WHERE r.declined IS NULL AND r.last_requested_at > now() - %(recent)s
  AND NOT EXISTS (SELECT 1 FROM site_zones z
                  WHERE z.site_id = r.site_id AND z.timezone = r.timezone)
  AND (SELECT count(*) FROM site_zones z WHERE z.site_id = r.site_id AND z.auto) < %(per_site)s
  AND (SELECT count(*) FROM site_zones z WHERE z.auto) < %(max)s
  AND EXISTS (SELECT 1 FROM daily_stats s WHERE s.site_id = r.site_id)
  AND (r.site_id, r.timezone) NOT IN (
      SELECT * FROM unnest(%(failed_sites)s::text[], %(failed_zones)s::text[]))
ORDER BY r.requests DESC, r.first_requested_at, r.site_id, r.timezone
LIMIT 1
"""
DECLINE = "UPDATE zone_requests SET declined = %s WHERE site_id = %s AND timezone = %s"

Pair = tuple[str, str]


async def keep_requested_zones(
    database_url: str, per_site: int, most: int, idle: dt.timedelta
) -> tuple[list[Pair], list[Pair]]:
    """One round; returns the (site, zone) pairs kept and dropped."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        cur = await conn.execute(TRY_LOCK)
        row = await cur.fetchone()
        if not row or not row[0]:
            return [], []  # another replica's round
        try:
            dropped = await _drop_idle(conn, database_url, idle)
            kept = await _keep_requested(conn, database_url, per_site, most)
        finally:
            with contextlib.suppress(psycopg.Error):  # closing the connection releases it too
                await conn.execute(UNLOCK)
    return kept, dropped


async def _drop_idle(
    conn: psycopg.AsyncConnection[Any], database_url: str, idle: dt.timedelta
) -> list[Pair]:
    dropped: list[Pair] = []
    cur = await conn.execute(IDLE, {"idle": idle})
    for site, zone in await cur.fetchall():
        if await remove_zone(database_url, site, zone, only_auto=True):
            dropped.append((site, zone))
            log.info("%s no longer keeps %s: not requested for %s", site, zone, idle)
    await conn.execute(FORGET, {"idle": idle})
    return dropped


async def _keep_requested(
    conn: psycopg.AsyncConnection[Any], database_url: str, per_site: int, most: int
) -> list[Pair]:
    kept: list[Pair] = []
    failed: list[Pair] = []  # this round: the next zone is tried instead
    for _ in range(BUILDS_PER_ROUND):
        params = {
            "recent": RECENT,
            "per_site": per_site,
            "max": most,
            "failed_sites": [site for site, _ in failed],
            "failed_zones": [zone for _, zone in failed],
        }
        cur = await conn.execute(NEXT_REQUESTED, params)
        if (row := await cur.fetchone()) is None:
            break
        site, zone = row
        try:
            validate_zone(zone)
            if not await zone_known_to_postgres(conn, zone):
                raise ValueError(f"PostgreSQL does not know the time zone {zone!r}")
        except ValueError as exc:
            await conn.execute(DECLINE, (str(exc), site, zone))
            log.info("%s: %s not kept: %s", site, zone, exc)
            continue
        try:
            days = await add_zone(database_url, site, zone, auto=True)
        except (psycopg.Error, ValueError) as exc:  # e.g. the lock wait gave up: next round
            failed.append((site, zone))
            log.warning("%s: %s not kept this round: %s", site, zone, exc)
            continue
        kept.append((site, zone))
        log.info(
            "%s keeps %s now, as its stats are read there (%d local days built)", site, zone, days
        )
    return kept


async def keep_requested_zones_periodically(settings: ConsumerSettings) -> None:
    """Runs until cancelled; failures are logged and retried at the next round. With
    AUTO_ZONES_PER_SITE=0 rounds still drop the zones kept before, once idle."""
    idle = dt.timedelta(days=settings.auto_zones_idle_days)
    while True:
        try:
            await keep_requested_zones(
                settings.database_url, settings.auto_zones_per_site, settings.auto_zones_max, idle
            )
        except (psycopg.Error, ValueError) as exc:
            log.warning("requested zones not kept (%s); next attempt in a minute", exc)
        except Exception:  # a bug: say so, and keep the task alive
            log.exception("requested zones not kept; next attempt in a minute")
        await asyncio.sleep(KEEP_INTERVAL_S)
