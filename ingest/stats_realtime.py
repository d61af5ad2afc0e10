"""`GET /api/v1/stats/realtime/visitors`: how many visitors are on the site now, as Plausible
answers it (a bare number): the distinct visitors of the visits whose last event is at most
REALTIME_WINDOW old. One range of the index visits (site_id, last_at), whatever the site's
size."""

from __future__ import annotations

import datetime as dt

from psycopg import sql

from ingest.stats_run import Pool, fetch

REALTIME_WINDOW = dt.timedelta(minutes=5)
# Events may be dated up to MAX_FUTURE_S ahead (a client's clock), so a visit's last event can
# lie in the future: counting those would let anyone inflate "now" for an hour with future
# dates. A visit counts only once its last event is at most this far ahead of now.
CLOCK_TOLERANCE = dt.timedelta(minutes=1)

CURRENT_VISITORS = sql.SQL(
    "SELECT count(DISTINCT visitor) FROM visits"
    " WHERE site_id = %(site)s AND last_at >= %(since)s AND last_at <= %(until)s"
)


async def current_visitors(pool: Pool, site_id: str, now: dt.datetime) -> int:
    """Waits for the count of distinct visitors whose visit had an event since `now` minus
    REALTIME_WINDOW (a visit's last event, by the event's own time), leaving out visits whose
    last event is dated more than CLOCK_TOLERANCE after `now`."""
    window = {"site": site_id, "since": now - REALTIME_WINDOW, "until": now + CLOCK_TOLERANCE}
    [(count,)] = await fetch(pool, CURRENT_VISITORS, window)
    return int(count)
