"""Breakdowns and filters on a hit's context (visit:browser, visit:os, visit:device,
visit:country) against a real PostgreSQL, compared with a recount of the same events, in UTC
and in zones whose local days need the edges of UTC days (15-minute rows, or raw events
under a filter)."""

from __future__ import annotations

import datetime as dt
import itertools
import zoneinfo
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from core.events import EventRecord
from tests.integration.test_stats_api import at, get_json, stats_client
from tests.support import make_record

pytestmark = pytest.mark.postgres

SITE = "site-context"
FIREFOX = {"browser": "Firefox", "os": "Ubuntu", "device": "desktop", "country": "NL"}
SAFARI = {"browser": "Mobile Safari", "os": "iOS", "device": "mobile", "country": "US"}
CHROME = {"browser": "Chrome", "os": "Android", "device": "tablet", "country": "NL"}
EVENTS: list[EventRecord] = [
    make_record(site_id=SITE, timestamp=at(ts), path=path, user_id=user, event_type=kind, **ctx)
    for ts, path, user, kind, ctx in [
        ("2025-11-11 18:20:00", "/a", "u1", "page_view", FIREFOX),
        ("2025-11-11 18:40:00", "/a", "u2", "page_view", SAFARI),
        ("2025-11-12 09:00:00", "/b", "u1", "page_view", FIREFOX),
        ("2025-11-12 09:01:00", "/b", "u1", "signup", FIREFOX),
        ("2025-11-12 10:00:00", "/a", "u3", "page_view", CHROME),
        ("2025-11-12 11:00:00", "/a", "u4", "page_view", {}),  # from an earlier API
        ("2025-11-12 19:00:00", "/c", "u2", "page_view", SAFARI),
        ("2025-11-13 01:00:00", "/c", "u5", "page_view", SAFARI),
    ]
]
ZONES = ["UTC", "Asia/Kolkata", "America/St_Johns"]
DIMENSIONS = ["browser", "os", "device", "country"]


def chosen(zone: str, first: str, last: str) -> list[EventRecord]:
    tz = zoneinfo.ZoneInfo(zone)
    lo, hi = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
    return [e for e in EVENTS if lo <= e.timestamp.astimezone(tz).date() <= hi]


def value(event: EventRecord, dimension: str) -> str:
    return getattr(event, dimension) or "(not set)"


def expected_breakdown(events: list[EventRecord], dimension: str) -> list[dict[str, Any]]:
    rows = []
    for v in sorted({value(e, dimension) for e in events}):
        mine = [e for e in events if value(e, dimension) == v]
        views = [e for e in mine if e.event_type == "page_view"]
        rows.append(
            {dimension: v, "views": len(views), "events": len(mine),
             "visitors": len({e.user_id for e in views})}
        )  # fmt: skip
    rows = [r for r in rows if r["views"] > 0]
    return sorted(rows, key=lambda r: (-r["views"], r[dimension]))


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with stats_client(database_url, EVENTS) as c:
        yield c


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize("dimension", DIMENSIONS)
@pytest.mark.parametrize("days", [("2025-11-12", "2025-11-12"), ("2025-11-11", "2025-11-13")])
async def test_a_context_breakdown_matches_a_recount(
    client: httpx.AsyncClient, zone: str, dimension: str, days: tuple[str, str]
) -> None:
    body = await get_json(
        client, "/api/v1/stats/breakdown", site_id=SITE, property=f"visit:{dimension}",
        period="custom", date=",".join(days), timezone=zone, metrics="views,events,visitors",
    )  # fmt: skip
    assert body["results"] == expected_breakdown(chosen(zone, *days), dimension)


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize("negated", [False, True])
async def test_a_context_breakdown_with_a_context_filter_matches_a_recount(
    client: httpx.AsyncClient, zone: str, negated: bool
) -> None:
    """Whole UTC days from daily_dimension_pairs (daily_dimensions on the same dimension),
    other zones' edges from raw events."""
    days = ("2025-11-11", "2025-11-13")
    events = chosen(zone, *days)
    for by, (on, wanted) in itertools.product(
        DIMENSIONS, [("country", "NL"), ("device", "mobile"), ("browser", "(not set)")]
    ):
        op = "!=" if negated else "=="
        body = await get_json(
            client, "/api/v1/stats/breakdown", site_id=SITE, property=f"visit:{by}",
            period="custom", date=",".join(days), timezone=zone,
            metrics="views,events,visitors", filters=f"visit:{on}{op}{wanted}",
        )  # fmt: skip
        kept = [e for e in events if (value(e, on) == wanted) != negated]
        assert body["results"] == expected_breakdown(kept, by), (by, on, wanted)


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize("negated", [False, True])
async def test_one_context_filter_s_totals_and_days_match_a_recount(
    client: httpx.AsyncClient, zone: str, negated: bool
) -> None:
    """daily_dimensions' rows of the filter's value (of every other value when negated) for
    whole UTC days, raw events for other zones' edges."""
    days = ("2025-11-11", "2025-11-13")
    common = {"site_id": SITE, "period": "custom", "date": ",".join(days), "timezone": zone}
    tz = zoneinfo.ZoneInfo(zone)
    op = "!=" if negated else "=="
    for on, wanted in [("country", "NL"), ("os", "iOS"), ("browser", "(not set)")]:
        kept = [e for e in chosen(zone, *days) if (value(e, on) == wanted) != negated]
        views = [e for e in kept if e.event_type == "page_view"]
        filters = f"visit:{on}{op}{wanted}"
        aggregate = await get_json(client, "/api/v1/stats/aggregate", filters=filters, **common)
        assert {k: v["value"] for k, v in aggregate["results"].items()} == {
            "views": len(views), "events": len(kept), "visitors": len({e.user_id for e in views}),
        }, filters  # fmt: skip
        series = await get_json(
            client, "/api/v1/stats/timeseries", filters=filters,
            metrics="views,events,visitors", **common,
        )  # fmt: skip
        for point in series["results"]:
            day = [
                e for e in kept if e.timestamp.astimezone(tz).date().isoformat() == point["date"]
            ]
            day_views = [e for e in day if e.event_type == "page_view"]
            assert (point["views"], point["events"], point["visitors"]) == (
                len(day_views),
                len(day),
                len({e.user_id for e in day_views}),
            ), (filters, point)


@pytest.mark.parametrize("zone", ZONES)
async def test_a_context_filter_applies_to_every_question(
    client: httpx.AsyncClient, zone: str
) -> None:
    days = ("2025-11-11", "2025-11-13")
    common = {"site_id": SITE, "period": "custom", "date": ",".join(days), "timezone": zone}
    events = [e for e in chosen(zone, *days) if e.country == "NL"]
    views = [e for e in events if e.event_type == "page_view"]
    aggregate = await get_json(
        client, "/api/v1/stats/aggregate", filters="visit:country==NL", **common
    )
    assert {k: v["value"] for k, v in aggregate["results"].items()} == {
        "views": len(views), "events": len(events), "visitors": len({e.user_id for e in views}),
    }  # fmt: skip
    series = await get_json(
        client, "/api/v1/stats/timeseries", filters="visit:country==NL", metrics="events", **common
    )
    assert sum(p["events"] for p in series["results"]) == len(events)
    pages = await get_json(
        client, "/api/v1/stats/breakdown", property="event:page",
        filters="visit:country==NL;visit:device!=tablet", **common,
    )  # fmt: skip
    desktop_views = [e for e in views if e.device != "tablet"]
    assert [(r["path"], r["views"]) for r in pages["results"]] == sorted(
        {
            (p, sum(1 for e in desktop_views if e.path == p))
            for p in {e.path for e in desktop_views}
        },
        key=lambda r: (-r[1], r[0]),
    )
    not_set = await get_json(
        client, "/api/v1/stats/aggregate", filters="visit:browser==(not set)", **common
    )
    assert not_set["results"]["events"]["value"] == sum(
        1 for e in chosen(zone, *days) if e.browser is None
    )


async def test_an_unknown_property_names_the_choices(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/api/v1/stats/breakdown", params={"site_id": SITE, "property": "visit:planet"}
    )
    assert response.status_code == 400
    body = response.json()
    assert body["field"] == "property" and "visit:browser" in body["message"]
