"""A site's native data for export and import tests: events written by the consumer's writer,
which also builds their visits and visit rollups; the visits are checked against a plain
sessionization of the events here (a visit ends after 30 minutes without an event of its
visitor; it counts on the UTC day it starts; its entry and exit pages, source and context come
from its first and last events)."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import zipfile
from collections.abc import MutableMapping
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


VISIT_COLUMNS = (
    "site_id", "visitor", "started_at", "last_at", "day", "entry_page", "exit_page",
    "referrer_host", "referrer_source", "utm_source", "utm_medium", "utm_campaign",
    "utm_content", "utm_term", "browser", "os", "device", "country", "page_views", "events",
)  # fmt: skip


async def write_site(database_url: str, events: list[EventRecord]) -> None:
    """The events through the consumer's writer (events, rollups, visits and visit rollups),
    then a check that its visits are those of a plain sessionization."""
    writer = Writer(database_url, "g", "events")
    try:
        await writer.write([to_row(e) for e in events], {0: len(events)}, {})
    finally:
        await writer.close()
    with psycopg.connect(database_url) as conn:
        stored = conn.execute(
            f"SELECT {', '.join(VISIT_COLUMNS)} FROM visits WHERE site_id = %s ORDER BY 2, 3",
            (events[0].site_id,),
        ).fetchall()
    expected = sorted(visits_of(events), key=lambda v: (v["visitor"], v["started_at"]))
    assert stored == [tuple(v[c] for c in VISIT_COLUMNS) for v in expected]


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


class Exchange:
    """One HTTP exchange with an ASGI app, as a client would make it: the request, and what
    the app sends back. With `hold_body`, the client never takes a chunk of the body: `send`
    of the first one waits until `release` (or until the app gives up on it)."""

    def __init__(
        self,
        path: str,
        query: str,
        *,
        client: str = "127.0.0.1",
        hold_body: bool = False,
        method: str = "GET",
    ) -> None:
        self.scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": [(b"host", b"test")],
            "client": (client, 5000),
            "server": ("127.0.0.1", 3001),
        }
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.completed = False
        self.body_offered = asyncio.Event()
        self._hold = hold_body
        self._released = asyncio.Event()
        self._request_sent = False

    async def receive(self) -> MutableMapping[str, Any]:
        if not self._request_sent:
            self._request_sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # the client stays connected
        raise AssertionError("unreachable")

    async def send(self, message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = list(message.get("headers", []))
            return
        if self._hold and not self._released.is_set():
            self.body_offered.set()
            await self._released.wait()
        self.chunks.append(message.get("body", b""))
        self.completed = not message.get("more_body", False)

    def release(self) -> None:
        self._released.set()

    def header(self, name: str) -> str:
        return next(v.decode() for k, v in self.headers if k.decode().lower() == name)

    def body(self) -> bytes:
        return b"".join(self.chunks)

    def json(self) -> Any:
        return json.loads(self.body())


async def open_transactions(database_url: str) -> list[tuple[Any, ...]]:
    """The client backends of the database (but this one) in a transaction or holding a
    snapshot, with their application name and state."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT application_name, state FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND backend_type = 'client backend'"
            " AND (xact_start IS NOT NULL OR backend_xmin IS NOT NULL"
            "      OR application_name = 'analytics-api-export')"
        )
        return await cur.fetchall()
