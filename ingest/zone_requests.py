"""The time zones stats are read in, noted for the consumers, which keep the zones asked for
(consumer/zone_requests.py; schema.sql: zone_requests).

Requests are counted in memory and written once a minute in one statement, so a read never
waits for a write and a database outage costs nothing but that minute's counts.

Only pairs the table can hold are counted (no NUL, a site id of at most 128 bytes, as ingest
stores them); should the database still refuse the minute's statement for its data, the
pairs are written one by one and only the refused ones are lost, so no request can keep
everyone's counts from being written.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 60.0
MAX_PENDING = 10_000  # (site, zone) pairs a minute; more are not counted
MAX_SITE_ID_BYTES = 128
MAX_ZONE_BYTES = 64  # the longest IANA name is about 30

# Sites without events are left out: a public site id can be anything.
UPSERT = """
INSERT INTO zone_requests AS r (site_id, timezone, requests)
SELECT u.site_id, u.timezone, u.requests
FROM unnest(%s::text[], %s::text[], %s::bigint[]) AS u(site_id, timezone, requests)
WHERE EXISTS (SELECT 1 FROM daily_stats s WHERE s.site_id = u.site_id)
ON CONFLICT (site_id, timezone) DO UPDATE
    SET requests = r.requests + EXCLUDED.requests, last_requested_at = now()
"""


class ZoneRequests:
    def __init__(self) -> None:
        self._pending: dict[tuple[str, str], int] = {}
        self._enabled = True

    def note(self, site: str, zone: str) -> None:
        """Counts a request for `site` in `zone` (UTC requests need no zone kept)."""
        if zone == "UTC" or not self._enabled:
            return
        key = (site, zone)
        if key not in self._pending and not (
            storable(site, MAX_SITE_ID_BYTES) and storable(zone, MAX_ZONE_BYTES)
        ):
            return
        if key in self._pending:
            self._pending[key] += 1
        elif len(self._pending) < MAX_PENDING:
            self._pending[key] = 1

    async def flush(self, pool: AsyncConnectionPool[Any]) -> int:
        """Writes the counts noted since the last flush; returns how many pairs."""
        pending, self._pending = self._pending, {}
        if not pending:
            return 0
        rows = sorted(pending.items())  # a fixed order: concurrent API processes cannot deadlock
        sites = [site for (site, _), _ in rows]
        zones = [zone for (_, zone), _ in rows]
        counts = [count for _, count in rows]
        async with pool.connection() as conn:
            try:
                await conn.execute(UPSERT, (sites, zones, counts))
            except psycopg.DataError as exc:
                log.warning("zone requests refused as a whole (%s); writing them one by one", exc)
                if conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
                    await conn.rollback()
                return await _one_by_one(conn, rows)
        return len(rows)

    async def flush_periodically(self, pool: AsyncConnectionPool[Any]) -> None:
        """Runs until cancelled. A failed flush loses its minute of counts, nothing else; a
        role that may not write turns counting off (said once)."""
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            try:
                await self.flush(pool)
            except psycopg.errors.InsufficientPrivilege:
                self._enabled = False
                log.warning(
                    "the API's database role cannot write zone_requests: the consumers will "
                    "not keep the zones stats are read in by themselves (grant INSERT, UPDATE "
                    "on zone_requests, or add zones with `python -m consumer.zones add`)"
                )
                return
            except (psycopg.Error, PoolTimeout) as exc:  # also a standby after a failover
                log.warning("zone requests of the last minute not written: %s", exc)
            except Exception:  # a bug: say so, and keep counting
                log.exception("zone requests of the last minute not written")

    async def final_flush(self, pool: AsyncConnectionPool[Any], timeout_s: float = 2.0) -> None:
        """At shutdown: the counts since the last flush, if the database answers quickly."""
        try:
            async with asyncio.timeout(timeout_s):
                await self.flush(pool)
        except (TimeoutError, psycopg.Error, PoolTimeout) as exc:
            log.warning("zone requests of the last minute not written at shutdown: %s", exc)


def storable(text: str, max_bytes: int) -> bool:
    """Whether a text column (and its index) can hold `text`."""
    if "\x00" in text:
        return False
    try:
        return len(text.encode()) <= max_bytes
    except UnicodeEncodeError:
        return False


async def _one_by_one(
    conn: psycopg.AsyncConnection[Any], rows: list[tuple[tuple[str, str], int]]
) -> int:
    written = 0
    for (site, zone), count in rows:
        try:
            async with conn.transaction():  # a savepoint when the pool does not autocommit
                await conn.execute(UPSERT, ([site], [zone], [count]))
        except psycopg.DataError as exc:
            log.warning("zone requests for one site refused: %s", exc)
        else:
            written += 1
    return written
