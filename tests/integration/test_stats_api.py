"""The stats routes against a real PostgreSQL, rows written by the consumer's real writer.

Every answer is compared with a recount of the same events done here in Python, for UTC and
for zones whose offsets are half and three-quarter hours, over days and month boundaries.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import zoneinfo
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette

from consumer.batch import to_row
from consumer.seal import seal_closed_days
from consumer.write import Writer
from consumer.zones import add_zone, remove_zone
from core.events import EventRecord
from ingest.app import handle_api_error
from ingest.errors import ApiError
from ingest.settings import Settings
from ingest.stats_params import MAX_RANGE_DAYS
from ingest.stats_routes import stats_routes
from tests.support import assert_rollups_match_raw_rows, make_record

pytestmark = pytest.mark.postgres

SITE = "site-tz"
UTC = dt.UTC


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


# Chosen around local midnights: Asia/Kolkata (+05:30) starts a day at 18:30 UTC,
# Asia/Kathmandu (+05:45) at 18:15, America/St_Johns (-03:30 in November) at 03:30.
EVENTS: list[EventRecord] = [
    make_record(site_id=SITE, timestamp=at(ts), path=path, user_id=user, event_type=kind)
    for ts, path, user, kind in [
        ("2025-10-31 18:29:00", "/oct", "u1", "page_view"),
        ("2025-10-31 23:10:00", "/oct", "u2", "page_view"),
        ("2025-11-01 02:00:00", "/a", "u1", "page_view"),
        ("2025-11-01 03:29:59", "/a", "u3", "page_view"),
        ("2025-11-01 03:30:00", "/b", "u3", "signup"),
        ("2025-11-11 18:14:59", "/a", "u1", "page_view"),
        ("2025-11-11 18:15:00", "/b", "u2", "page_view"),
        ("2025-11-11 18:29:59", "/b", "u4", "page_view"),
        ("2025-11-11 18:30:00", "/c", "u5", "page_view"),
        ("2025-11-12 00:00:00", "/c", "u1", "page_view"),
        ("2025-11-12 10:00:00", "/b", "u4", "click"),
        ("2025-11-12 10:05:00", "/b", "u4", "page_view"),
        ("2025-11-12 18:29:59", "/a", "u6", "page_view"),
        ("2025-11-12 18:30:00", "/a", "u6", "page_view"),
        ("2025-11-12 23:59:59", "/d", "u7", "signup"),
        ("2025-11-30 23:59:59", "/nov", "u8", "page_view"),
        ("2025-12-01 00:00:00", "/dec", "u8", "page_view"),
        ("2025-12-01 04:00:00", "/dec", "u9", "page_view"),
    ]
] + [make_record(site_id="other-site", timestamp=at("2025-11-12 12:00:00"), user_id="x")]

ZONES = ["UTC", "Asia/Kolkata", "Asia/Kathmandu", "America/St_Johns", "Europe/London"]


def local_day(event: EventRecord, zone: str) -> dt.date:
    return event.timestamp.astimezone(zoneinfo.ZoneInfo(zone)).date()


def recount(
    zone: str, first: dt.date, last: dt.date, event_type: str | None = None, path: str | None = None
) -> dict[str, int]:
    chosen = [
        e
        for e in EVENTS
        if e.site_id == SITE
        and first <= local_day(e, zone) <= last
        and (event_type is None or e.event_type == event_type)
        and (path is None or e.path == path)
    ]
    views = [e for e in chosen if e.event_type == "page_view"]
    visitor_rows = chosen if event_type else views
    return {
        "views": len(views),
        "visitors": len({e.user_id for e in visitor_rows}),
        "events": len(chosen),
    }


# Every test runs four times: without configured zones (answers from 15-minute rollups and
# raw events); with the site keeping the zones (answers from local-day rollups), some added
# before the events (kept by the consumer's writer), some after (built from 15-minute rows);
# and the same with closed days sealed into monthly rows (consumer/seal.py), either part of
# November (the second batch then brings late events for sealed days) or every day.
ZONES_KEPT_BEFORE = ["Asia/Kolkata", "America/St_Johns"]
ZONES_KEPT_AFTER = ["Asia/Kathmandu", "Europe/London"]
SEALED_IN_PART = dt.date(2025, 11, 13)  # a seal "on" that day seals the days before Nov 12
SEALED_ALL = dt.date(2026, 1, 2)


@pytest.fixture(
    params=["15-minute rollups", "site zones", "site zones, sealed in part", "site zones, sealed"]
)
async def loaded(database_url: str, request: pytest.FixtureRequest) -> str:
    zoned = request.param != "15-minute rollups"
    for zone in ZONES_KEPT_BEFORE if zoned else []:
        await add_zone(database_url, SITE, zone)
    writer = Writer(database_url, "g", "events")
    try:
        # Two batches, so rollups and sketches are merged as well as created.
        rows = [to_row(e) for e in EVENTS]
        await writer.write(rows[:7], {0: 7}, {})
        if request.param == "site zones, sealed in part":
            await seal_closed_days(database_url, SEALED_IN_PART)
        await writer.write(rows[7:], {0: len(rows)}, {0: 7})
    finally:
        await writer.close()
    for zone in ZONES_KEPT_AFTER if zoned else []:
        await add_zone(database_url, SITE, zone)
    if request.param == "site zones, sealed":
        await seal_closed_days(database_url, SEALED_ALL)
    assert_rollups_match_raw_rows(database_url)
    return database_url


def expected_page_breakdown(zone: str, first: dt.date, last: dt.date) -> list[dict[str, Any]]:
    """The page breakdown recounted from the events: most views first, ties by path."""
    paths = sorted({e.path for e in EVENTS if e.event_type == "page_view"})
    expected = [
        {"path": p, "views": c["views"], "visitors": c["visitors"]}
        for p in paths
        if (c := recount(zone, first, last, "page_view", p))["views"]
    ]
    expected.sort(key=lambda r: (-r["views"], r["path"]))
    return expected


def make_app(settings: Settings, pool: AsyncConnectionPool[Any]) -> Starlette:
    app = Starlette(routes=stats_routes(settings), exception_handlers={ApiError: handle_api_error})
    app.state.pool = pool
    return app


@pytest.fixture
async def pool(
    loaded: str,
) -> AsyncIterator[AsyncConnectionPool[psycopg.AsyncConnection[TupleRow]]]:
    async with AsyncConnectionPool(
        loaded, min_size=1, max_size=2, kwargs={"autocommit": True}, open=False
    ) as p:
        yield p


def client_for(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@contextlib.asynccontextmanager
async def stats_client(
    database_url: str, events: list[EventRecord]
) -> AsyncIterator[httpx.AsyncClient]:
    """A stats client over a database holding `events`, written as the consumer writes one
    batch, its rollups checked against a recount first."""
    writer = Writer(database_url, "g", "events")
    try:
        await writer.write([to_row(e) for e in events], {0: len(events)}, {})
    finally:
        await writer.close()
    assert_rollups_match_raw_rows(database_url)
    async with (
        AsyncConnectionPool(
            database_url, min_size=1, max_size=2, kwargs={"autocommit": True}, open=False
        ) as pool,
        client_for(make_app(Settings(stats_rate_limit_per_s=0), pool)) as c,
    ):
        yield c


@pytest.fixture
async def client(pool: AsyncConnectionPool[Any]) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(stats_rate_limit_per_s=0)
    async with client_for(make_app(settings, pool)) as c:
        yield c


async def get_json(client: httpx.AsyncClient, path: str, **params: Any) -> Any:
    response = await client.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


RANGES = [
    ("2025-11-12", "2025-11-12"),
    ("2025-11-11", "2025-11-13"),
    ("2025-10-31", "2025-11-01"),  # crosses a month
    ("2025-10-01", "2025-12-31"),  # three months
    ("2025-11-30", "2025-12-01"),
]


@pytest.mark.parametrize("zone", ZONES)
async def test_aggregate_matches_a_recount_in_every_zone(
    client: httpx.AsyncClient, zone: str
) -> None:
    for first, last in RANGES:
        body = await get_json(
            client,
            "/api/v1/stats/aggregate",
            site_id=SITE,
            timezone=zone,
            **{"from": first, "to": last},
        )
        expected = recount(zone, dt.date.fromisoformat(first), dt.date.fromisoformat(last))
        got = {m: v["value"] for m, v in body["results"].items()}
        assert got == expected, (zone, first, last)
        assert body["timezone"] == zone
        assert (body["from"], body["to"]) == (first, last)


async def test_visitors_over_whole_utc_days_are_exact_and_say_so(
    client: httpx.AsyncClient, pool: AsyncConnectionPool[Any]
) -> None:
    params = {"site_id": SITE, "period": "custom", "date": "2025-10-31,2025-11-12"}
    body = await get_json(client, "/api/v1/stats/aggregate", **params)
    assert body["visitors_approximate"] is False
    assert body["results"]["visitors"]["value"] == 6  # u1..u6 viewed pages
    local = await get_json(client, "/api/v1/stats/aggregate", timezone="Asia/Kolkata", **params)
    assert local["visitors_approximate"] is True
    # Beyond the configured row budget, the sketch answers instead (and says so).
    async with client_for(
        make_app(Settings(stats_rate_limit_per_s=0, stats_exact_visitors_max_rows=1), pool)
    ) as bounded:
        sketched = await get_json(bounded, "/api/v1/stats/aggregate", **params)
    assert sketched["visitors_approximate"] is True
    assert sketched["results"]["visitors"]["value"] == 6


@pytest.mark.parametrize("zone", ZONES)
async def test_filters_on_event_type_and_path(client: httpx.AsyncClient, zone: str) -> None:
    cases: list[tuple[str, str | None, str | None]] = [
        ("event:name==signup", "signup", None),
        ("event:page==/b", None, "/b"),
        ("event:name==page_view;event:page==/a", "page_view", "/a"),
    ]
    for filters, event_type, path in cases:
        body = await get_json(
            client,
            "/api/v1/stats/aggregate",
            site_id=SITE,
            timezone=zone,
            period="month",
            date="2025-11-20",
            filters=filters,
        )
        expected = recount(zone, dt.date(2025, 11, 1), dt.date(2025, 11, 30), event_type, path)
        assert {m: v["value"] for m, v in body["results"].items()} == expected, filters


async def assert_daily_series_is_recounted(
    client: httpx.AsyncClient, zone: str, first: dt.date, last: dt.date
) -> None:
    body = await get_json(
        client,
        "/api/v1/stats/timeseries",
        site_id=SITE,
        timezone=zone,
        period="custom",
        date=f"{first},{last}",
        interval="day",
    )
    assert len(body["results"]) == (last - first).days + 1
    for point in body["results"]:
        day = dt.date.fromisoformat(point["date"])
        assert {k: point[k] for k in ("views", "visitors", "events")} == recount(zone, day, day)


@pytest.mark.parametrize("zone", ZONES)
async def test_daily_timeseries_matches_a_recount(client: httpx.AsyncClient, zone: str) -> None:
    await assert_daily_series_is_recounted(
        client, zone, dt.date(2025, 10, 31), dt.date(2025, 11, 13)
    )


@pytest.mark.parametrize("zone", ["Asia/Kathmandu", "America/St_Johns"])
async def test_the_longest_daily_timeseries_in_a_zone_of_quarter_hours(
    client: httpx.AsyncClient, zone: str
) -> None:
    """The most local midnights a daily series can bind (MAX_RANGE_DAYS + 1), their hours
    read from 15-minute rows: St John's across both its daylight-saving changes."""
    last = dt.date(2025, 12, 31)
    first = last - dt.timedelta(days=MAX_RANGE_DAYS - 1)
    await assert_daily_series_is_recounted(client, zone, first, last)


@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin", "Asia/Kolkata"])
async def test_hourly_timeseries_matches_a_recount_of_each_local_hour(
    client: httpx.AsyncClient, zone: str
) -> None:
    """Whole-hour zones read hourly rollups, the others 15-minute ones: same answers."""
    body = await get_json(
        client,
        "/api/v1/stats/timeseries",
        site_id=SITE,
        timezone=zone,
        period="custom",
        date="2025-11-11,2025-11-12",
        interval="hour",
    )
    assert len(body["results"]) == 48
    tz = zoneinfo.ZoneInfo(zone)
    for point in body["results"]:
        hour = dt.datetime.fromisoformat(point["date"]).replace(tzinfo=tz)
        chosen = [
            e
            for e in EVENTS
            if e.site_id == SITE and hour <= e.timestamp < hour + dt.timedelta(hours=1)
        ]
        views = [e for e in chosen if e.event_type == "page_view"]
        expected = {
            "views": len(views),
            "visitors": len({e.user_id for e in views}),
            "events": len(chosen),
        }
        assert {k: point[k] for k in expected} == expected, point
    assert body["results"][0]["date"] == "2025-11-11 00:00:00"
    only = await get_json(
        client,
        "/api/v1/stats/timeseries",
        site_id=SITE,
        timezone=zone,
        period="day",
        date="2025-11-12",
        interval="hour",
        metrics="views,events",
    )
    assert [list(p) for p in only["results"]] == [["date", "views", "events"]] * 24


@pytest.mark.parametrize("zone", ["UTC", "Asia/Kathmandu", "America/St_Johns"])
async def test_breakdown_by_path_and_event_type(client: httpx.AsyncClient, zone: str) -> None:
    first, last = dt.date(2025, 11, 1), dt.date(2025, 11, 30)
    params = {"site_id": SITE, "timezone": zone, "period": "month", "date": "2025-11-01"}
    body = await get_json(client, "/api/v1/stats/breakdown", property="event:page", **params)
    expected = expected_page_breakdown(zone, first, last)
    assert body["results"] == expected
    page2 = await get_json(
        client, "/api/v1/stats/breakdown", property="event:page", limit=2, page=2, **params
    )
    assert page2["results"] == expected[2:4]
    by_type = await get_json(client, "/api/v1/stats/breakdown", property="event:name", **params)
    types = sorted({e.event_type for e in EVENTS})
    expected_types = [
        {"event_type": t, "events": c["events"], "visitors": c["visitors"]}
        for t in types
        if (c := recount(zone, first, last, t))["events"]
    ]
    expected_types.sort(key=lambda r: (-r["events"], r["event_type"]))
    assert by_type["results"] == expected_types


async def test_base_stats_is_byte_compatible_and_takes_a_time_zone(
    client: httpx.AsyncClient,
) -> None:
    utc = await client.get("/stats", params={"site_id": SITE, "date": "2025-11-12"})
    assert utc.status_code == 200
    assert utc.headers["content-type"] == "application/json; charset=utf-8"
    assert utc.content == (
        b'{"site_id":"site-tz","date":"2025-11-12","total_views":4,"unique_users":3,'
        b'"top_paths":[{"path":"/a","views":2},{"path":"/b","views":1},'
        b'{"path":"/c","views":1}]}'
    )
    explicit = await client.get(
        "/stats", params={"site_id": SITE, "date": "2025-11-12", "timezone": "UTC"}
    )
    assert explicit.content == utc.content
    for zone in ZONES:
        body = await get_json(client, "/stats", site_id=SITE, date="2025-11-12", timezone=zone)
        expected = recount(zone, dt.date(2025, 11, 12), dt.date(2025, 11, 12))
        assert (body["total_views"], body["unique_users"]) == (
            expected["views"],
            expected["visitors"],
        ), zone
        assert list(body) == ["site_id", "date", "total_views", "unique_users", "top_paths"]
    kolkata = await get_json(
        client, "/stats", site_id=SITE, date="2025-11-12", timezone="Asia/Kolkata"
    )
    # Local day 2025-11-12 in Kolkata: 18:30 on the 11th to 18:30 on the 12th, UTC.
    assert kolkata["top_paths"] == [
        {"path": "/c", "views": 2},
        {"path": "/a", "views": 1},
        {"path": "/b", "views": 1},
    ]


async def test_no_data_answers_zeros(client: httpx.AsyncClient) -> None:
    body = await get_json(client, "/api/v1/stats/aggregate", site_id="nobody", period="7d")
    assert {m: v["value"] for m, v in body["results"].items()} == {
        "views": 0,
        "visitors": 0,
        "events": 0,
    }
    series = await get_json(
        client, "/api/v1/stats/timeseries", site_id="nobody", timezone="Asia/Kolkata"
    )
    assert len(series["results"]) == 30
    assert all(p["views"] == 0 for p in series["results"])
    top = await get_json(client, "/api/v1/stats/breakdown", site_id="nobody")
    assert top["results"] == []
    base = await client.get("/stats", params={"site_id": "nobody", "date": "2025-11-12"})
    assert base.json()["top_paths"] == []


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/api/v1/stats/aggregate", {"period": "day", "date": "2025-02-30"}, "date"),
        ("/api/v1/stats/aggregate", {"timezone": "Mars/Olympus_Mons"}, "timezone"),
        ("/api/v1/stats/aggregate", {"from": "2024-01-01", "to": "2025-06-01"}, "to"),
        ("/api/v1/stats/aggregate", {"from": "2025-01-02", "to": "2025-01-01"}, "to"),
        ("/api/v1/stats/aggregate", {"metrics": "conversion_rate"}, "metrics"),
        ("/api/v1/stats/aggregate", {"filters": "visit:planet==Mars"}, "filters"),
        ("/api/v1/stats/timeseries", {"interval": "week"}, "interval"),
        ("/api/v1/stats/timeseries", {"interval": "hour", "period": "6mo"}, "period"),
        ("/api/v1/stats/breakdown", {"property": "visit:planet"}, "property"),
        ("/api/v1/stats/breakdown", {"limit": "0"}, "limit"),
        ("/stats", {"date": "2025-11-12", "timezone": "Nowhere/City"}, "timezone"),
    ],
)
async def test_bad_parameters_get_400_naming_the_field(
    client: httpx.AsyncClient, path: str, params: dict[str, str], field: str
) -> None:
    response = await client.get(path, params={"site_id": SITE, **params})
    assert response.status_code == 400, response.text
    assert response.json()["field"] == field


@pytest.fixture
def keyed_settings() -> Iterator[Settings]:
    yield Settings(
        stats_read_keys={SITE: ("k-one", "k-two")},
        stats_rate_limit_per_s=0.001,
        stats_rate_burst=3,
    )


async def test_read_keys_and_rate_limit(
    pool: AsyncConnectionPool[Any], keyed_settings: Settings
) -> None:
    async with client_for(make_app(keyed_settings, pool)) as c:
        url = "/api/v1/stats/aggregate"
        missing = await c.get(url, params={"site_id": SITE})
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"].startswith("Bearer")
        assert missing.json()["code"] == "unauthorized"
        wrong = await c.get(
            "/stats",
            params={"site_id": SITE, "date": "2025-11-12"},
            headers={"Authorization": "Bearer nope"},
        )
        assert wrong.status_code == 403
        ok = await c.get(url, params={"site_id": SITE}, headers={"Authorization": "Bearer k-two"})
        assert ok.status_code == 200
        # The key's bucket held 3 requests (burst) and refills far slower than this test.
        for _ in range(2):
            await c.get(url, params={"site_id": SITE}, headers={"Authorization": "Bearer k-two"})
        limited = await c.get(
            url, params={"site_id": SITE}, headers={"Authorization": "Bearer k-two"}
        )
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) >= 1
        # Sites without keys stay public.
        public = await c.get(url, params={"site_id": "other-site"})
        assert public.status_code == 200


@pytest.mark.parametrize("zone", ["UTC", "Asia/Kolkata"])
async def test_page_breakdown_across_whole_months_and_days(
    client: httpx.AsyncClient, zone: str
) -> None:
    first, last = dt.date(2025, 10, 31), dt.date(2025, 12, 1)
    body = await get_json(
        client,
        "/api/v1/stats/breakdown",
        site_id=SITE,
        timezone=zone,
        metrics="views,visitors",
        **{"from": first.isoformat(), "to": last.isoformat()},
    )
    expected = expected_page_breakdown(zone, first, last)
    assert body["results"] == expected


@pytest.mark.parametrize("zone", ["UTC", "Europe/London", "Asia/Kathmandu"])
@pytest.mark.parametrize(
    "first, last",
    [
        # November without its first days: the month minus days (and quarter hours)
        (dt.date(2025, 11, 5), dt.date(2025, 11, 30)),
        # rolling ranges across two months: a month plus and minus days
        (dt.date(2025, 10, 20), dt.date(2025, 11, 18)),
        (dt.date(2025, 11, 12), dt.date(2025, 12, 1)),
    ],
)
async def test_page_breakdown_of_ranges_that_are_not_calendar_months(
    client: httpx.AsyncClient, zone: str, first: dt.date, last: dt.date
) -> None:
    body = await get_json(
        client,
        "/api/v1/stats/breakdown",
        site_id=SITE,
        timezone=zone,
        metrics="views,visitors",
        **{"from": first.isoformat(), "to": last.isoformat()},
    )
    assert body["results"] == expected_page_breakdown(zone, first, last)


@pytest.mark.parametrize("zone", ["UTC", "Asia/Kolkata", "Asia/Kathmandu"])
async def test_page_breakdown_sorted_by_visitors(client: httpx.AsyncClient, zone: str) -> None:
    first, last = dt.date(2025, 11, 1), dt.date(2025, 11, 30)
    body = await get_json(
        client,
        "/api/v1/stats/breakdown",
        site_id=SITE,
        timezone=zone,
        metrics="visitors,views",
        period="month",
        date="2025-11-01",
    )
    expected = expected_page_breakdown(zone, first, last)
    expected.sort(key=lambda r: (-r["visitors"], r["path"]))
    assert body["results"] == [
        {"path": r["path"], "visitors": r["visitors"], "views": r["views"]} for r in expected
    ]


async def test_a_kept_zone_is_read_from_its_local_rollups_until_removed(
    client: httpx.AsyncClient, loaded: str
) -> None:
    params = {"site_id": SITE, "timezone": "Asia/Kolkata", "period": "month", "date": "2025-11-01"}
    expected = recount("Asia/Kolkata", dt.date(2025, 11, 1), dt.date(2025, 11, 30))
    await add_zone(loaded, SITE, "Asia/Kolkata")  # kept already in most runs: built again
    with psycopg.connect(loaded, autocommit=True) as conn:
        conn.execute(
            "UPDATE local_daily_stats SET page_views = page_views + 1000 "
            "WHERE timezone = 'Asia/Kolkata' AND day = '2025-11-12'"
        )
    body = await get_json(client, "/api/v1/stats/aggregate", **params)
    assert body["results"]["views"]["value"] == expected["views"] + 1000  # read there
    assert await remove_zone(loaded, SITE, "Asia/Kolkata")
    assert not await remove_zone(loaded, SITE, "Asia/Kolkata")
    body = await get_json(client, "/api/v1/stats/aggregate", **params)
    assert {m: v["value"] for m, v in body["results"].items()} == expected
    # Added again: built from the 15-minute rollups, the damage is gone.
    await add_zone(loaded, SITE, "Asia/Kolkata")
    body = await get_json(client, "/api/v1/stats/aggregate", **params)
    assert {m: v["value"] for m, v in body["results"].items()} == expected


def recount_where(
    zone: str, first: dt.date, last: dt.date, keep: Any, by_type: bool = False
) -> dict[str, int]:
    """`recount` of the events `keep` selects; visitors among page views unless `by_type`."""
    chosen = [
        e for e in EVENTS if e.site_id == SITE and first <= local_day(e, zone) <= last and keep(e)
    ]
    views = [e for e in chosen if e.event_type == "page_view"]
    return {
        "views": len(views),
        "visitors": len({e.user_id for e in (chosen if by_type else views)}),
        "events": len(chosen),
    }


EDGE_RANGES = [
    ("day", "2025-11-12", dt.date(2025, 11, 12), dt.date(2025, 11, 12)),
    ("custom", "2025-11-01,2025-11-12", dt.date(2025, 11, 1), dt.date(2025, 11, 12)),
    ("month", "2025-11-20", dt.date(2025, 11, 1), dt.date(2025, 11, 30)),
    ("30d", "2025-11-25", dt.date(2025, 10, 27), dt.date(2025, 11, 25)),
]


async def test_answers_do_not_depend_on_the_sessions_time_zone(loaded: str) -> None:
    """A server whose own time zone is :45 off UTC (postgresql.conf, ALTER DATABASE, PGTZ) gives
    the same answers: every statement names UTC where it truncates to hours, so the edges'
    hourly rows are found wherever the session's clock is."""
    with psycopg.connect(loaded, autocommit=True) as conn:
        dbname = conn.info.dbname
        conn.execute(
            sql.SQL("ALTER DATABASE {} SET timezone = 'Asia/Kathmandu'").format(
                sql.Identifier(dbname)
            )
        )
    async with (
        AsyncConnectionPool(loaded, min_size=1, max_size=2, kwargs={"autocommit": True}) as pool,
        client_for(make_app(Settings(stats_rate_limit_per_s=0), pool)) as client,
    ):
        for zone in ("Europe/Berlin", "Asia/Kathmandu"):
            for period, date, first, last in EDGE_RANGES:
                when = {"period": period, "date": date, "timezone": zone, "site_id": SITE}
                body = await get_json(
                    client,
                    "/api/v1/stats/aggregate",
                    filters="event:page==/b",
                    metrics="visitors,views,events",
                    **when,
                )
                counted = recount_where(zone, first, last, lambda e: e.path == "/b")
                assert {m: v["value"] for m, v in body["results"].items()} == counted, period
                pages = await get_json(
                    client, "/api/v1/stats/breakdown", property="event:page", **when
                )
                assert pages["results"] == expected_page_breakdown(zone, first, last), period


@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin", "Asia/Kathmandu"])
async def test_filters_and_event_types_at_the_edges_of_any_zone(
    client: httpx.AsyncClient, zone: str
) -> None:
    """Page views at the partial UTC days of a local range from sub-day rollups, other event
    types from their own 15-minute rollups (per path where paths matter) only where the answer
    counts them: every combination recounted."""
    cases: list[tuple[str, str, Any, bool]] = [
        ("event:page==/b", "visitors,views", lambda e: e.path == "/b", False),
        ("event:page==/b", "visitors,views,events", lambda e: e.path == "/b", False),
        ("event:page!=/b", "views,events", lambda e: e.path != "/b", False),
        ("event:name==page_view", "visitors,events", lambda e: e.event_type == "page_view", True),
        ("event:name!=page_view", "visitors,events", lambda e: e.event_type != "page_view", True),
        ("event:name==click", "visitors,events", lambda e: e.event_type == "click", True),
        (
            "event:name!=signup;event:page==/b",
            "visitors,views,events",
            lambda e: e.event_type != "signup" and e.path == "/b",
            True,
        ),
    ]
    for period, date, first, last in EDGE_RANGES:
        when = {"period": period, "date": date, "timezone": zone, "site_id": SITE}
        for filters, metrics, keep, by_type in cases:
            body = await get_json(
                client, "/api/v1/stats/aggregate", filters=filters, metrics=metrics, **when
            )
            counted = recount_where(zone, first, last, keep, by_type)
            expected = {m: counted[m] for m in metrics.split(",")}
            assert {m: v["value"] for m, v in body["results"].items()} == expected, (
                filters,
                metrics,
                period,
            )
        by_type = await get_json(client, "/api/v1/stats/breakdown", property="event:name", **when)
        expected_types = []
        for t in sorted({e.event_type for e in EVENTS}):
            c = recount_where(zone, first, last, lambda e, t=t: e.event_type == t, True)
            if c["events"]:
                expected_types.append(
                    {"event_type": t, "events": c["events"], "visitors": c["visitors"]}
                )
        expected_types.sort(key=lambda r: (-r["events"], r["event_type"]))
        assert by_type["results"] == expected_types, period
