"""`GET /api/v1/stats/realtime/visitors`: how many visitors are on the site now, as Plausible
answers it (a bare number): the distinct visitors of the visits whose last event is at most
REALTIME_WINDOW old. One range of the index visits (site_id, last_at), whatever the site's
size."""

from __future__ import annotations

import datetime as dt

from psycopg import sql

from ingest.stats_run import Pool, fetch

REALTIME_WINDOW = dt.timedelta(minutes=5)

CURRENT_VISITORS = sql.SQL(
    "SELECT count(DISTINCT visitor) FROM visits WHERE site_id = %(site)s AND last_at >= %(since)s"
)


async def current_visitors(pool: Pool, site_id: str, now: dt.datetime) -> int:
    """Waits for the count of distinct visitors whose visit had an event since `now` minus
    REALTIME_WINDOW (a visit's last event, by the event's own time)."""
    [(count,)] = await fetch(
        pool, CURRENT_VISITORS, {"site": site_id, "since": now - REALTIME_WINDOW}
    )
    return int(count)
