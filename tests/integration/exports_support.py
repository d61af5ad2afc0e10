"""A site's native data for export and import tests: events written by the consumer's writer,
and the visits of those events with their rollups, built here (the consumer's sessions are
another module's), with the shared design's rules: a visit ends after 30 minutes without an
event of its visitor; it counts on the UTC day it starts; its entry and exit pages, source and
context come from its first and last events."""

from __future__ import annotations

import datetime as dt
import io
import zipfile
from typing import Any

import psycopg

from consumer.batch import to_row
from consumer.write import Writer
from core.events import EventRecord
from tests.support import make_record

UTC = dt.UTC
TIMEOUT = dt.timedelta(minutes=30)


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


GOOGLE = {
    "referrer_host": "www.google.com",
    "referrer_source": "Google",
    "browser": "Chrome",
    "os": "Windows",
    "device": "desktop",
    "country": "DE",
}
NEWSLETTER = {
    "referrer_host": "mail.example.com",
    "utm_source": "newsletter",
    "utm_medium": "email",
    "utm_campaign": "november",
    "browser": "Firefox",
    "os": "Ubuntu",
    "device": "mobile",
    "country": "NL",
}


def site_events(site_id: str) -> list[EventRecord]:
    """Three days of a small site: visits with one and several page views, a custom event,
    a visit across midnight, hits with and without context."""
    rows = [
        ("2025-11-10 08:00:00", "/", "u1", "page_view", GOOGLE),
        ("2025-11-10 08:05:00", "/pricing", "u1", "page_view", GOOGLE),
        ("2025-11-10 08:06:30", "/pricing", "u1", "signup", GOOGLE),
        ("2025-11-10 09:00:00", "/", "u2", "page_view", NEWSLETTER),
        ("2025-11-10 23:50:00", "/blog/a", "u3", "page_view", {}),
        ("2025-11-11 00:10:00", "/blog/b", "u3", "page_view", {}),
        ("2025-11-11 10:00:00", "/", "u1", "page_view", GOOGLE),
        ("2025-11-11 12:00:00", "/docs", "u4", "page_view", NEWSLETTER),
        ("2025-11-11 12:01:00", "/docs/api", "u4", "page_view", NEWSLETTER),
        ("2025-11-11 12:02:00", "/docs/api", "u4", "download", NEWSLETTER),
        ("2025-11-12 07:00:00", "/pricing", "u5", "page_view", GOOGLE),
        ("2025-11-12 07:00:00", "/", "u6", "page_view", {"country": "FR"}),
        ("2025-11-12 18:00:00", "/", "u2", "page_view", NEWSLETTER),
        ("2025-11-12 18:45:00", "/blog/a", "u2", "page_view", NEWSLETTER),
    ]
    return [
        make_record(site_id=site_id, timestamp=at(ts), path=path, user_id=user, event_type=kind,
                    **ctx)
        for ts, path, user, kind, ctx in rows
    ]  # fmt: skip


FIRST_EVENT_FIELDS = (
    "referrer_host", "referrer_source", "utm_source", "utm_medium", "utm_campaign",
    "utm_content", "utm_term", "browser", "os", "device", "country",
)  # fmt: skip


def visits_of(events: list[EventRecord]) -> list[dict[str, Any]]:
    """The visits of `events` (one site), as rows of `visits`."""
    visits: list[dict[str, Any]] = []
    open_visits: dict[str, dict[str, Any]] = {}
    for e in sorted(events, key=lambda e: (e.timestamp, e.user_id)):
        visit = open_visits.get(e.user_id)
        if visit is None or e.timestamp - visit["last_at"] > TIMEOUT:
            visit = {
                "site_id": e.site_id,
                "visitor": e.user_id,
                "started_at": e.timestamp,
                "day": e.timestamp.date(),
                "entry_page": e.path,
                "page_views": 0,
                "events": 0,
                **{f: getattr(e, f) for f in FIRST_EVENT_FIELDS},
            }
            visits.append(visit)
            open_visits[e.user_id] = visit
        visit["last_at"] = e.timestamp
        visit["exit_page"] = e.path
        visit["events"] += 1
        visit["page_views"] += e.event_type == "page_view"
    return visits


INSERT_VISIT = """
INSERT INTO visits (site_id, visitor, started_at, last_at, day, entry_page, exit_page,
    referrer_host, referrer_source, utm_source, utm_medium, utm_campaign, utm_content, utm_term,
    browser, os, device, country, page_views, events)
VALUES (%(site_id)s, %(visitor)s, %(started_at)s, %(last_at)s, %(day)s, %(entry_page)s,
    %(exit_page)s, %(referrer_host)s, %(referrer_source)s, %(utm_source)s, %(utm_medium)s,
    %(utm_campaign)s, %(utm_content)s, %(utm_term)s, %(browser)s, %(os)s, %(device)s,
    %(country)s, %(page_views)s, %(events)s)
"""
VISIT_ROLLUPS = (
    """
    INSERT INTO quarter_hour_visits (site_id, bucket, visits, bounces, duration, page_views)
    SELECT site_id, date_bin('15 minutes', started_at, timestamptz '2000-01-01 00:00Z'),
           count(*), count(*) FILTER (WHERE events = 1 AND page_views = 1),
           sum(floor(extract(epoch FROM last_at - started_at))), sum(page_views)
    FROM visits WHERE site_id = %(site)s GROUP BY 1, 2
    """,
    """
    INSERT INTO daily_visit_dimensions (site_id, day, dimension, value, visits, bounces,
        duration, page_views, visitors)
    SELECT site_id, day, d.dimension, d.value, count(*),
           count(*) FILTER (WHERE events = 1 AND page_views = 1),
           sum(floor(extract(epoch FROM last_at - started_at))), sum(page_views),
           hll_add_agg(hll_hash_text(visitor))
    FROM visits CROSS JOIN LATERAL (VALUES
        ('source', coalesce(referrer_source, referrer_host, '(not set)')),
        ('referrer', coalesce(referrer_host, '(not set)')),
        ('utm_source', coalesce(utm_source, '(not set)')),
        ('utm_medium', coalesce(utm_medium, '(not set)')),
        ('utm_campaign', coalesce(utm_campaign, '(not set)')),
        ('utm_content', coalesce(utm_content, '(not set)')),
        ('utm_term', coalesce(utm_term, '(not set)')),
        ('entry_page', entry_page), ('exit_page', exit_page),
        ('browser', coalesce(browser, '(not set)')), ('os', coalesce(os, '(not set)')),
        ('device', coalesce(device, '(not set)')), ('country', coalesce(country, '(not set)'))
    ) AS d (dimension, value)
    WHERE site_id = %(site)s
    GROUP BY 1, 2, 3, 4
    """,
)


async def write_site(database_url: str, events: list[EventRecord]) -> None:
    """The events through the consumer's writer, then their visits and visit rollups."""
    writer = Writer(database_url, "g", "events")
    try:
        await writer.write([to_row(e) for e in events], {0: len(events)}, {})
    finally:
        await writer.close()
    with psycopg.connect(database_url) as conn:
        for visit in visits_of(events):
            conn.execute(INSERT_VISIT, visit)
        for statement in VISIT_ROLLUPS:
            conn.execute(statement, {"site": events[0].site_id})


def members(archive: bytes) -> dict[str, str]:
    """The files of a ZIP, by name, as text."""
    with zipfile.ZipFile(io.BytesIO(archive)) as z:
        return {name: z.read(name).decode() for name in z.namelist()}


def zip_of(files: dict[str, str]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return out.getvalue()
