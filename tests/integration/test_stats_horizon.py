"""Today's ranges read no further than events can be dated (ingest/stats_days.readable_end),
against a real PostgreSQL: in zones east and west of UTC, an API whose clock says it is
today gives the answers of one that reads every range to its end (the whole UTC day in place
of its quarter hours, or no day in place of an edge no event can fall in), and a recount."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from consumer.batch import to_row
from consumer.write import Writer
from core.events import EventRecord
from ingest.settings import Settings
from ingest.stats_routes import StatsApi
from tests.integration.test_stats_api import at, client_for, get_json, make_app
from tests.support import assert_rollups_match_raw_rows, make_record

pytestmark = pytest.mark.postgres

SITE = "site-today"
NOW = at("2025-11-12 12:00:00")
MAX_FUTURE_S = 3600
BERLIN = {"browser": "Firefox", "os": "Ubuntu", "device": "desktop", "country": "DE"}
TOKYO = {"browser": "Chrome", "os": "Android", "device": "mobile", "country": "JP"}
# Yesterday and today (UTC) up to the latest instant an event may be dated at (NOW plus
# MAX_FUTURE_S), from two sources: every zone's today and yesterday hold some of them.
EVENTS: list[EventRecord] = [
    make_record(
        site_id=SITE, timestamp=at(ts), received_at=min(at(ts), NOW), path=path, user_id=user,
        event_type=kind, referrer_host=referrer, **ctx,
    )
    for ts, path, user, kind, referrer, ctx in [
        ("2025-11-11 04:00:00", "/a", "u1", "page_view", None, BERLIN),
        ("2025-11-11 10:30:00", "/a", "u2", "page_view", "news.example", TOKYO),
        ("2025-11-11 22:50:00", "/b", "u1", "page_view", None, BERLIN),
        ("2025-11-11 23:10:00", "/b", "u3", "page_view", "news.example", TOKYO),
        ("2025-11-12 00:05:00", "/c", "u3", "signup", None, TOKYO),
        ("2025-11-12 04:59:00", "/a", "u4", "page_view", "search.example", BERLIN),
        ("2025-11-12 09:59:00", "/c", "u5", "page_view", None, TOKYO),
        ("2025-11-12 10:01:00", "/a", "u5", "page_view", None, TOKYO),
        ("2025-11-12 11:40:00", "/b", "u1", "page_view", "news.example", BERLIN),
        ("2025-11-12 12:59:00", "/a", "u6", "page_view", None, BERLIN),  # an hour ahead
    ]
]  # fmt: skip
# East of UTC (today ends inside Nov 12), west of it (inside Nov 13), and Kiritimati, whose
# today is Nov 13 already.
ZONES = ["Europe/Berlin", "Asia/Kathmandu", "America/New_York", "Pacific/Kiritimati"]
QUESTIONS: list[tuple[str, dict[str, str]]] = [
    ("aggregate", {"metrics": "visitors,visits,views,events,bounce_rate,visit_duration"}),
    ("timeseries", {"metrics": "visitors,views,events,visits"}),
    ("breakdown", {"property": "event:page", "metrics": "views,visitors"}),
    ("breakdown", {"property": "event:name", "metrics": "events,visitors"}),
    ("breakdown", {"property": "visit:country", "metrics": "views,visitors"}),
    ("breakdown", {"property": "visit:browser", "metrics": "visitors,views"}),
    ("breakdown", {"property": "visit:source", "metrics": "visitors,visits,bounce_rate"}),
    ("breakdown", {"property": "visit:entry_page", "metrics": "visits,visitors"}),
    ("aggregate", {"metrics": "views,visits", "filters": "visit:country==DE"}),
    ("breakdown", {"property": "visit:os", "filters": "visit:device==mobile"}),
]


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    writer = Writer(database_url, "g", "events")
    try:
        await writer.write([to_row(e) for e in EVENTS], {0: len(EVENTS)}, {})
    finally:
        await writer.close()
    assert_rollups_match_raw_rows(database_url)
    async with AsyncConnectionPool(
        database_url, min_size=1, max_size=2, kwargs={"autocommit": True}, open=False
    ) as p:
        yield p


@pytest.fixture(autouse=True)
def clock_at_now(monkeypatch: pytest.MonkeyPatch) -> None:
    """The API's clock says NOW: today is Nov 12 in most zones."""
    monkeypatch.setattr(StatsApi, "_now", staticmethod(lambda: NOW))


def clients(
    pool: AsyncConnectionPool[psycopg.AsyncConnection[TupleRow]],
) -> tuple[httpx.AsyncClient, httpx.AsyncClient]:
    """(an API that reads to the horizon, one whose horizon is never reached)."""
    near = Settings(stats_rate_limit_per_s=0, max_future_s=MAX_FUTURE_S)
    far = Settings(stats_rate_limit_per_s=0, max_future_s=1e9)
    return client_for(make_app(near, pool)), client_for(make_app(far, pool))


@pytest.mark.parametrize("days", ["today", "yesterday", "7d"])
@pytest.mark.parametrize("zone", ZONES)
async def test_today_read_to_the_horizon_answers_as_read_to_its_end(
    pool: AsyncConnectionPool[Any], zone: str, days: str
) -> None:
    near, far = clients(pool)
    # Yesterday ends before the horizon: read to its end, not past it into today's events.
    _, _, period = local_days(zone, days)
    async with near, far:
        for route, asked in QUESTIONS:
            params = {"site_id": SITE, "timezone": zone, **period, **asked}
            path = f"/api/v1/stats/{route}"
            assert await get_json(near, path, **params) == await get_json(far, path, **params), (
                route,
                asked,
            )


def local_days(zone: str, days: str) -> tuple[dt.date, dt.date, dict[str, str]]:
    """The local days [first, last] of `days` (today, yesterday, 7d) at NOW, and the
    parameters that ask for them."""
    today = NOW.astimezone(zoneinfo.ZoneInfo(zone)).date()
    if days == "today":
        return today, today, {"period": "day"}
    if days == "7d":
        return today - dt.timedelta(days=6), today, {"period": "7d"}
    yesterday = today - dt.timedelta(days=1)
    return yesterday, yesterday, {"period": "day", "date": str(yesterday)}


@pytest.mark.parametrize("days", ["today", "yesterday", "7d"])
@pytest.mark.parametrize("zone", ZONES)
async def test_today_and_yesterday_match_a_recount(
    pool: AsyncConnectionPool[Any], zone: str, days: str
) -> None:
    near, _ = clients(pool)
    first, last, period = local_days(zone, days)
    tz = zoneinfo.ZoneInfo(zone)
    mine = [e for e in EVENTS if first <= e.timestamp.astimezone(tz).date() <= last]
    views = [e for e in mine if e.event_type == "page_view"]
    common = {"site_id": SITE, "timezone": zone, **period}
    async with near:
        body = await get_json(
            near, "/api/v1/stats/aggregate", metrics="views,events,visitors", **common
        )
        pages = await get_json(near, "/api/v1/stats/breakdown", **common)
    assert mine, "every range asked holds events"
    assert body["results"]["views"]["value"] == len(views)
    assert body["results"]["events"]["value"] == len(mine)
    assert body["results"]["visitors"]["value"] == len({e.user_id for e in views})
    counted = {r["path"]: r["views"] for r in pages["results"]}
    assert counted == {p: sum(e.path == p for e in views) for p in {e.path for e in views}}


def test_the_horizon_moves_the_read_end_for_every_zone() -> None:
    """The parametrised zones do read to another end at NOW (else the tests above compare an
    API with itself)."""
    from ingest import stats_days, stats_params

    horizon = stats_days.data_horizon(NOW, MAX_FUTURE_S)
    for zone in ZONES:
        r = stats_params.parse_range({"period": "day", "timezone": zone}, now=NOW, horizon=horizon)
        assert r.read_end != r.end, zone
    assert max(e.timestamp for e in EVENTS) < horizon
    assert dt.timedelta(seconds=MAX_FUTURE_S) > max(e.timestamp for e in EVENTS) - NOW
