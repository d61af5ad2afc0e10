"""The stats benchmark's dataset: one site with N events in November 2025, in its own database;
or, with `recent`, N events over the 30 days ending now (the dashboard's default range, which
spans two calendar months and days not sealed yet), rebuilt on a later day.

Each event carries a browser hit's context (browser, OS, device, country, a source on some,
properties on some clicks) from the consumer bench's generator (bench/consumer.py `context`).
Raw events go in with COPY; every rollup is then computed from the raw rows by the recounts of
`python -m consumer.rebuild` (consumer/rebuild.py), which tests check against independent
recounts (tests/support.py). The database (`bench_stats_ctx_<N>`) is kept and reused by later
runs unless --reload is given. (`bench_stats_<N>`, from before the context, is left alone.)
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import random
import re
import time
from collections.abc import Iterator

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.rows import TupleRow

from bench.consumer import context
from consumer.rebuild import REBUILDS
from consumer.schema import apply_schema
from consumer.seal import seal_closed_days
from consumer.zones import add_zone, list_zones
from core.events import CONTEXT_FIELDS

SITE = "bench-site"
# The site's configured zone (`python -m consumer.zones add`): its local days read local
# rollups. Other zones' local days read 15-minute rollups and raw events.
SITE_ZONE = "Asia/Kolkata"
MONTH_START = dt.datetime(2025, 11, 1, tzinfo=dt.UTC)
MONTH_DAYS = 30
PATHS = 1000
USERS = 200_000
EVENT_TYPES = ("page_view", "click", "signup")
EVENT_TYPE_WEIGHTS = (80, 15, 5)
CHUNK_ROWS = 100_000
SEED = 20251101

MARKER_DDL = "CREATE TABLE IF NOT EXISTS bench_dataset (events bigint, loaded_s float8)"
MARKER_SQL = "SELECT events FROM bench_dataset"

COPY_EVENTS = """
COPY events (day, event_id, site_id, event_type, path, user_id, event_time, received_at, {})
FROM STDIN
""".format(", ".join(CONTEXT_FIELDS))
# The dataset's name: a new generator needs a new name, since kept datasets are reused.
DATABASE_PREFIX = "bench_stats_ctx_"
RECENT_PREFIX = "bench_stats_recent_"


class Span:
    """The instants [start, end) a dataset's events are spread over, from a UTC midnight, on
    `days` UTC days (the last `last_day`, which a dataset made today must have reached)."""

    def __init__(self, start: dt.datetime, end: dt.datetime, last_day: dt.date) -> None:
        assert start == dt.datetime.combine(start.date(), dt.time(0), dt.UTC), start
        self.start, self.end, self.last_day = start, end, last_day
        self.days = [
            start.date() + dt.timedelta(days=d)
            for d in range(
                (end - dt.timedelta(microseconds=1)).date().toordinal()
                - start.date().toordinal()
                + 1
            )
        ]


def span(recent: bool) -> Span:
    """November 2025, or the 30 UTC days ending now (today up to a minute ago)."""
    if not recent:
        end = MONTH_START + dt.timedelta(days=MONTH_DAYS)
        return Span(MONTH_START, end, end.date() - dt.timedelta(days=1))
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    first = dt.datetime.combine(now.date() - dt.timedelta(days=29), dt.time(0), dt.UTC)
    return Span(first, now - dt.timedelta(minutes=1), now.date())


CHECK_TOTALS = """
SELECT (SELECT count(*) FROM events), (SELECT sum(events) FROM daily_stats),
       (SELECT sum(events) FROM quarter_hour_stats), (SELECT sum(events) FROM daily_details)
"""


def database_name(events: int, recent: bool = False) -> str:
    return f"{RECENT_PREFIX if recent else DATABASE_PREFIX}{events}"


def database_url(server_url: str, events: int, recent: bool = False) -> str:
    return make_conninfo(server_url, dbname=database_name(events, recent))


def _context_columns(found: dict[str, object]) -> str:
    """The context fields as text COPY columns (NULL as \\N; props as JSON, which holds no tab
    or backslash here)."""
    cells = []
    for name in CONTEXT_FIELDS:
        value = found.get(name)
        if value is None:
            cells.append("\\N")
        elif name == "props":
            cells.append(json.dumps(value))
        else:
            cells.append(str(value))
    return "\t".join(cells)


def _zipf_cumulative(n: int, s: float) -> list[float]:
    return list(itertools.accumulate(1 / (k + 1) ** s for k in range(n)))


def _chunks(events: int, spread: Span) -> Iterator[bytes]:
    """Text COPY rows, CHUNK_ROWS at a time: uniform times over the span, Zipf-like paths
    and users (a few hot, a long tail), each event with its context."""
    rng = random.Random(SEED)
    path_weights = _zipf_cumulative(PATHS, 1.0)
    user_weights = _zipf_cumulative(USERS, 0.7)
    paths = [f"/page/{k}" for k in range(PATHS)]
    users = [f"user-{k}" for k in range(USERS)]
    span_s = int((spread.end - spread.start).total_seconds())
    day_names = [day.isoformat() for day in spread.days]
    for first in range(0, events, CHUNK_ROWS):
        count = min(CHUNK_ROWS, events - first)
        seconds = sorted(rng.randrange(span_s) for _ in range(count))
        chosen_paths = rng.choices(paths, cum_weights=path_weights, k=count)
        chosen_users = rng.choices(users, cum_weights=user_weights, k=count)
        chosen_types = rng.choices(EVENT_TYPES, weights=EVENT_TYPE_WEIGHTS, k=count)
        lines = []
        for i in range(count):
            sec = seconds[i]
            day = day_names[sec // 86400]
            rest = sec % 86400
            stamp = f"{day} {rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}+00"
            lines.append(
                f"{day}\t00000000-0000-4000-8000-{first + i:012x}\t{SITE}\t"
                f"{chosen_types[i]}\t{chosen_paths[i]}\t{chosen_users[i]}\t{stamp}\t{stamp}\t"
                f"{_context_columns(context(rng, chosen_types[i]))}\n"
            )
        yield "".join(lines).encode()


_INTO = re.compile(r"INSERT INTO (\w+)")


def _span_days(spread: Span) -> dict[str, object]:
    """The parameters of consumer/rebuild.py's recounts for the whole dataset."""
    return {"days": spread.days, "site": None}


# The dataset's visits: a plain sessionization of its events (a gap over 30 minutes ends a
# visit), which is what the consumer builds from events that come in order
# (consumer/sessions.py); each visit's origin is its first event's. The visit rollups are
# then recounted from these rows like the others.
FILL_VISITS = """
INSERT INTO visits (site_id, visitor, started_at, last_at, day, entry_page, exit_page,
                    referrer_host, referrer_source, utm_source, utm_medium, utm_campaign,
                    utm_content, utm_term, browser, os, device, country, page_views, events,
                    last_bucket)
WITH marked AS (
    SELECT *, coalesce(event_time - lag(event_time) OVER w > interval '30 minutes', true)
              AS starts
    FROM events WINDOW w AS (PARTITION BY site_id, user_id ORDER BY event_time, event_id)
),
numbered AS (
    SELECT *, count(*) FILTER (WHERE starts) OVER (PARTITION BY site_id, user_id
                                                   ORDER BY event_time, event_id) AS visit
    FROM marked
)
SELECT site_id, user_id, min(event_time), max(event_time),
       (min(event_time) AT TIME ZONE 'UTC')::date,
       (array_agg(path ORDER BY event_time, event_id))[1],
       (array_agg(path ORDER BY event_time DESC, event_id DESC))[1],
       (array_agg(referrer_host) FILTER (WHERE starts))[1],
       (array_agg(referrer_source) FILTER (WHERE starts))[1],
       (array_agg(utm_source) FILTER (WHERE starts))[1],
       (array_agg(utm_medium) FILTER (WHERE starts))[1],
       (array_agg(utm_campaign) FILTER (WHERE starts))[1],
       (array_agg(utm_content) FILTER (WHERE starts))[1],
       (array_agg(utm_term) FILTER (WHERE starts))[1],
       (array_agg(browser) FILTER (WHERE starts))[1], (array_agg(os) FILTER (WHERE starts))[1],
       (array_agg(device) FILTER (WHERE starts))[1],
       (array_agg(country) FILTER (WHERE starts))[1],
       count(*) FILTER (WHERE event_type = 'page_view'), count(*),
       date_bin('15 minutes', max(event_time), timestamptz '2000-01-01 00:00+00')
FROM numbered GROUP BY site_id, user_id, visit
"""


def _fill_visits(conn: psycopg.Connection[TupleRow]) -> None:
    """Sessionizes a dataset that has no visits yet (one that predates them, or a new one)."""
    if conn.execute("SELECT 1 FROM visits LIMIT 1").fetchone() is not None:
        return
    print("stats bench: sessionizing the dataset's events into visits ...", flush=True)
    conn.execute("SET work_mem = '256MB'")
    conn.execute(FILL_VISITS)
    conn.execute("ANALYZE visits")
    conn.commit()


def _fill_new_rollups(conn: psycopg.Connection[TupleRow], spread: Span) -> None:
    """Computes rollups that a kept dataset predates (their tables are still empty), with the
    same recounts as `python -m consumer.rebuild`."""
    for _, recount in REBUILDS:
        match = _INTO.search(recount)
        assert match
        table = sql.Identifier(match.group(1))
        if conn.execute(sql.SQL("SELECT 1 FROM {} LIMIT 1").format(table)).fetchone() is None:
            print(f"stats bench: computing {match.group(1)} for the kept dataset", flush=True)
            conn.execute(recount, _span_days(spread))
            conn.execute(sql.SQL("ANALYZE {}").format(table))
            conn.commit()


def ensure_dataset(server_url: str, events: int, *, reload: bool, recent: bool = False) -> str:
    """Creates and loads the dataset's database unless a complete one exists (for `recent`,
    one made today); returns its URL."""
    url = database_url(server_url, events, recent)
    name = database_name(events, recent)
    spread = span(recent)
    with psycopg.connect(server_url, autocommit=True) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists and not reload:
            asyncio.run(apply_schema(url))  # idempotent: new indexes reach a kept dataset
            with psycopg.connect(url) as conn:
                conn.execute(MARKER_DDL)
                row = conn.execute(MARKER_SQL).fetchone()
                last = conn.execute("SELECT max(day) FROM daily_stats").fetchone()
                if row and row[0] == events and (not recent or last == (spread.last_day,)):
                    print(f"stats bench: reusing database {name} ({events:,} events)")
                    _fill_visits(conn)
                    _fill_new_rollups(conn, spread)
                    _keep_site_zone(url)
                    _seal_closed_days(url)
                    return url
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    asyncio.run(apply_schema(url))
    started = time.monotonic()
    with psycopg.connect(url, autocommit=True) as conn:
        for day in spread.days:
            conn.execute("SELECT ensure_events_partition(%s)", (day,))
        print(f"stats bench: generating and copying {events:,} events into {name} ...", flush=True)
        shown = time.monotonic()
        with conn.cursor() as cur, cur.copy(COPY_EVENTS) as copy:
            for n, chunk in enumerate(_chunks(events, spread), 1):
                copy.write(chunk)
                if time.monotonic() - shown >= 1:
                    shown = time.monotonic()
                    done = min(events, n * CHUNK_ROWS)
                    print(f"stats bench: {done:,} of {events:,} events copied", flush=True)
        copied_s = time.monotonic() - started
        print(
            f"stats bench: copied in {copied_s:.0f} s; computing rollups with SQL ...", flush=True
        )
        conn.execute("SET work_mem = '256MB'")
        conn.execute("VACUUM ANALYZE events")
        _fill_visits(conn)
        for _, recount in REBUILDS:  # the operators' rebuild, over the whole span
            step = time.monotonic()
            conn.execute(recount, _span_days(spread))
            match = _INTO.search(recount)
            table = match.group(1) if match else "?"
            print(f"stats bench: {table} in {time.monotonic() - step:.0f} s", flush=True)
        conn.execute("VACUUM ANALYZE")
        raw, daily, quarter, details = conn.execute(CHECK_TOTALS).fetchone() or (0, 0, 0, 0)
        if not raw == daily == quarter == details == events:
            raise RuntimeError(f"rollups disagree with raw rows: {raw} {daily} {quarter} {details}")
        loaded_s = time.monotonic() - started
        conn.execute(MARKER_DDL)
        conn.execute("INSERT INTO bench_dataset VALUES (%s, %s)", (events, loaded_s))
    print(f"stats bench: dataset ready in {loaded_s:.0f} s", flush=True)
    _keep_site_zone(url)
    _seal_closed_days(url)
    return url


def _seal_closed_days(url: str) -> None:
    """What each consumer does every hour (consumer/seal.py); quick when done already."""
    started = time.monotonic()
    before, after = asyncio.run(seal_closed_days(url, dt.datetime.now(dt.UTC).date()))
    if before != after:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ANALYZE sealed_monthly_paths")
        took = time.monotonic() - started
        print(f"stats bench: sealed the days before {after} in {took:.1f} s", flush=True)


def _keep_site_zone(url: str) -> None:
    """Adds SITE_ZONE to the site unless kept already (built from the 15-minute rollups)."""
    if (SITE, SITE_ZONE) in {(site, zone) for site, zone, *_ in asyncio.run(list_zones(url))}:
        return
    print(f"stats bench: building the {SITE_ZONE} rollups of {SITE} ...", flush=True)
    started = time.monotonic()
    days = asyncio.run(add_zone(url, SITE, SITE_ZONE))
    with psycopg.connect(url, autocommit=True) as conn:
        for table in (
            "site_zones",
            "local_daily_stats",
            "local_daily_paths",
            "local_monthly_paths",
        ):
            conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table)))
    print(f"stats bench: {days} local days built in {time.monotonic() - started:.1f} s", flush=True)
