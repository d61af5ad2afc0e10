"""`GET /api/v1/stats/realtime/visitors`: how many visitors are on the site now, as Plausible
answers it (a bare number): the distinct visitors of the visits whose last event is at most
REALTIME_WINDOW old. One range of the index visits (site_id, last_bucket), the 15-minute
buckets of the visits' last events since the window began, whatever the site's size; the
visits read there are kept if their last event is in the window, so the count is exact. A busy
site has many visits in that range, so each API process counts a site at most once per
REALTIME_CACHE_S and every request in that time shares the count (RealtimeCounts)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable

from cachetools import TTLCache
from psycopg import sql

from ingest.stats_run import Pool, fetch

REALTIME_WINDOW = dt.timedelta(minutes=5)
# Events may be dated up to MAX_FUTURE_S ahead (a client's clock), so a visit's last event can
# lie in the future: counting those would let anyone inflate "now" for an hour with future
# dates. A visit counts only once its last event is at most this far ahead of now.
CLOCK_TOLERANCE = dt.timedelta(minutes=1)
# How long one count answers a site (the dashboard asks every 10 s), and how many sites'
# counts a process holds: bounded, whatever site ids clients ask for.
REALTIME_CACHE_S = 5.0
REALTIME_CACHED_SITES = 10_000

# The bucket bounds the index range; last_at decides (a bucket holds up to 15 minutes of
# last events, some before the window).
CURRENT_VISITORS = sql.SQL(
    "SELECT count(DISTINCT visitor) FROM visits"
    " WHERE site_id = %(site)s"
    " AND last_bucket >= date_bin('15 minutes', %(since)s, timestamptz '2000-01-01 00:00+00')"
    " AND last_bucket <= %(until)s AND last_at >= %(since)s AND last_at <= %(until)s"
)


async def current_visitors(pool: Pool, site_id: str, now: dt.datetime) -> int:
    """Waits for the count of distinct visitors whose visit had an event since `now` minus
    REALTIME_WINDOW (a visit's last event, by the event's own time), leaving out visits whose
    last event is dated more than CLOCK_TOLERANCE after `now`."""
    window = {"site": site_id, "since": now - REALTIME_WINDOW, "until": now + CLOCK_TOLERANCE}
    [(count,)] = await fetch(pool, CURRENT_VISITORS, window)
    return int(count)


class RealtimeCounts:
    """Per API process: each site's count, shared by every request within REALTIME_CACHE_S
    of the one that started it (also while it runs), so a client asking in a loop costs the
    database one count per site every few seconds rather than one per request."""

    def __init__(
        self,
        ttl_s: float = REALTIME_CACHE_S,
        max_sites: int = REALTIME_CACHED_SITES,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self._counts: TTLCache[str, asyncio.Future[int]] = TTLCache(
            maxsize=max_sites, ttl=ttl_s, timer=timer
        )

    async def current_visitors(self, pool: Pool, site_id: str, now: dt.datetime) -> int:
        """Waits for the site's count: the one in flight or made within the TTL, else a new
        one. A count that failed is forgotten at once, so the next request asks again."""
        count = self._counts.get(site_id)
        if count is None:
            count = asyncio.ensure_future(current_visitors(pool, site_id, now))
            self._counts[site_id] = count
            count.add_done_callback(lambda done: self._forget_failed(site_id, done))
        # Shielded: a client that goes away cancels its wait, not the count others share.
        return await asyncio.shield(count)

    def _forget_failed(self, site_id: str, done: asyncio.Future[int]) -> None:
        if (done.cancelled() or done.exception() is not None) and (
            self._counts.get(site_id) is done
        ):
            del self._counts[site_id]
