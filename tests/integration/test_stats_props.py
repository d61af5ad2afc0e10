"""Custom properties in the stats API (`event:props:<key>` breakdowns and filters) against a
real PostgreSQL, compared with a recount of the same events, in UTC and in zones whose local
days need the raw edges of UTC days; and hostile keys and values refused with a 400 naming
the parameter."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from core.events import MAX_PROP_VALUE_BYTES, EventRecord
from tests.integration.test_stats_api import at, get_json, stats_client
from tests.support import make_record

pytestmark = pytest.mark.postgres

SITE = "site-props"
WIDE_KEY = "é" * 32  # 64 bytes of UTF-8: the longest key ingest accepts
# Around local midnights: Asia/Kolkata starts a day at 18:30 UTC, America/St_Johns at 03:30.
EVENTS: list[EventRecord] = [
    make_record(
        site_id=SITE, timestamp=at(ts), event_type=kind, user_id=user, path=path, props=props,
        country=country,
    )
    for ts, kind, user, path, props, country in [
        ("2025-11-11 18:20:00", "page_view", "u1", "/a", {"plan": "pro"}, "NL"),
        ("2025-11-11 18:40:00", "signup", "u2", "/a", {"plan": "free", "source": "ads"}, "US"),
        ("2025-11-12 02:00:00", "signup", "u1", "/b", {"plan": "pro"}, "NL"),
        ("2025-11-12 09:00:00", "page_view", "u3", "/a", None, "US"),
        ("2025-11-12 09:01:00", "signup", "u3", "/b", {"plan": "free", WIDE_KEY: "ünï"}, "US"),
        ("2025-11-12 10:00:00", "purchase", "u1", "/b", {"plan": "pro", "size": "big"}, "NL"),
        ("2025-11-12 10:30:00", "page_view", "u4", "/a", {"plan": "free"}, None),
        ("2025-11-12 19:00:00", "signup", "u4", "/c", {"source": "mail"}, None),
        ("2025-11-13 01:00:00", "purchase", "u2", "/c", {"plan": "free"}, "US"),
        ("2025-11-13 04:00:00", "page_view", "u5", "/c", {"plan": "pro"}, "NL"),
    ]
]  # fmt: skip
ZONES = ["UTC", "Asia/Kolkata", "America/St_Johns"]
RANGES = [("2025-11-12", "2025-11-12"), ("2025-11-11", "2025-11-13")]
Predicate = Callable[[EventRecord], bool]


def chosen(zone: str, first: str, last: str) -> list[EventRecord]:
    tz = zoneinfo.ZoneInfo(zone)
    lo, hi = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
    return [e for e in EVENTS if lo <= e.timestamp.astimezone(tz).date() <= hi]


def prop(event: EventRecord, key: str) -> str:
    return (event.props or {}).get(key, "(none)")


def values_of(events: list[EventRecord]) -> dict[str, int]:
    return {
        "views": sum(1 for e in events if e.event_type == "page_view"),
        "events": len(events),
        "visitors": len({e.user_id for e in events}),
    }


def recount(events: list[EventRecord], key: str | None, metrics: list[str]) -> list[Any]:
    """The breakdown's expected rows: each (key, value) events carry, with the visitors among
    those events, most first by the first metric, ties by key and value."""
    groups: dict[tuple[str, str], list[EventRecord]] = {}
    for e in events:
        for k, v in (e.props or {}).items():
            if key is None or k == key:
                groups.setdefault((k, v), []).append(e)
    ranked = []
    for (k, v), mine in groups.items():
        values = values_of(mine)
        entry: dict[str, Any] = {"value": v} if key is not None else {"key": k, "value": v}
        entry.update((m, values[m]) for m in metrics)
        if values[metrics[0]] > 0:
            ranked.append(((-values[metrics[0]], k, v), entry))
    return [entry for _, entry in sorted(ranked)]


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with stats_client(database_url, EVENTS) as c:
        yield c


def common(zone: str, days: tuple[str, str]) -> dict[str, str]:
    return {"site_id": SITE, "period": "custom", "date": ",".join(days), "timezone": zone}


# Filters a props breakdown answers from daily_props (event types), then from raw events.
BREAKDOWN_FILTERS: list[tuple[str, Predicate]] = [
    ("", lambda e: True),
    ("event:name==signup", lambda e: e.event_type == "signup"),
    ("event:name!=page_view", lambda e: e.event_type != "page_view"),
    ("event:page==/b", lambda e: e.path == "/b"),
    ("visit:country==NL", lambda e: e.country == "NL"),
    ("event:props:source!=ads;event:name!=purchase",
     lambda e: prop(e, "source") != "ads" and e.event_type != "purchase"),
]  # fmt: skip


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize("days", RANGES)
@pytest.mark.parametrize("filters", BREAKDOWN_FILTERS, ids=lambda f: f[0] or "none")
async def test_a_property_breakdown_matches_a_recount(
    client: httpx.AsyncClient, zone: str, days: tuple[str, str], filters: tuple[str, Predicate]
) -> None:
    text, keep = filters
    events = [e for e in chosen(zone, *days) if keep(e)]
    for key, metrics in [("plan", "events,visitors,views"), ("source", "visitors,events")]:
        body = await get_json(
            client, "/api/v1/stats/breakdown", property=f"event:props:{key}", metrics=metrics,
            filters=text, **common(zone, days),
        )  # fmt: skip
        assert body["property"] == f"event:props:{key}"
        assert body["results"] == recount(events, key, metrics.split(",")), (key, metrics)
    every_key = await get_json(
        client, "/api/v1/stats/breakdown", property="event:props", filters=text,
        **common(zone, days),
    )  # fmt: skip
    assert every_key["results"] == recount(events, None, ["events", "visitors"])


@pytest.mark.parametrize("zone", ZONES)
async def test_a_breakdown_sorted_by_views_leaves_out_values_without_page_views(
    client: httpx.AsyncClient, zone: str
) -> None:
    days = ("2025-11-11", "2025-11-13")
    body = await get_json(
        client, "/api/v1/stats/breakdown", property="event:props:plan", metrics="views",
        **common(zone, days),
    )  # fmt: skip
    assert body["results"] == recount(chosen(zone, *days), "plan", ["views"])


# Property filters on every question, from raw events over the range.
PROPERTY_FILTERS: list[tuple[str, Predicate]] = [
    ("event:props:plan==pro", lambda e: prop(e, "plan") == "pro"),
    ("event:props:plan!=pro", lambda e: prop(e, "plan") != "pro"),  # events without it too
    ("event:props:plan==(none)", lambda e: prop(e, "plan") == "(none)"),
    (f"event:props:{WIDE_KEY}==ünï", lambda e: prop(e, WIDE_KEY) == "ünï"),
    ("event:props:plan==free;event:name==signup",
     lambda e: prop(e, "plan") == "free" and e.event_type == "signup"),
]  # fmt: skip


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize("filters", PROPERTY_FILTERS, ids=lambda f: f[0][:24])
async def test_a_property_filter_applies_to_every_question(
    client: httpx.AsyncClient, zone: str, filters: tuple[str, Predicate]
) -> None:
    text, keep = filters
    days = ("2025-11-11", "2025-11-13")
    events = [e for e in chosen(zone, *days) if keep(e)]
    views = [e for e in events if e.event_type == "page_view"]
    # Visitors are among page views, or among the filtered event type's events.
    counted = events if "event:name" in text else views
    aggregate = await get_json(
        client, "/api/v1/stats/aggregate", filters=text, **common(zone, days)
    )
    assert {k: v["value"] for k, v in aggregate["results"].items()} == {
        "views": len(views), "events": len(events), "visitors": len({e.user_id for e in counted}),
    }  # fmt: skip
    series = await get_json(
        client, "/api/v1/stats/timeseries", filters=text, metrics="events,views",
        **common(zone, days),
    )  # fmt: skip
    tz = zoneinfo.ZoneInfo(zone)
    assert {p["date"]: p["events"] for p in series["results"] if p["events"]} == {
        day: sum(1 for e in events if e.timestamp.astimezone(tz).date().isoformat() == day)
        for day in {e.timestamp.astimezone(tz).date().isoformat() for e in events}
    }
    names = await get_json(
        client, "/api/v1/stats/breakdown", property="event:name", filters=text,
        **common(zone, days),
    )  # fmt: skip
    expected = [
        {"event_type": kind, **{m: values_of([e for e in events if e.event_type == kind])[m]
                                for m in ("events", "visitors")}}
        for kind in {e.event_type for e in events}
    ]  # fmt: skip
    assert names["results"] == sorted(expected, key=lambda r: (-r["events"], r["event_type"]))
    pages = await get_json(
        client, "/api/v1/stats/breakdown", property="event:page", filters=text,
        **common(zone, days),
    )  # fmt: skip
    page_rows = [(r["path"], r["views"]) for r in pages["results"]]
    by_path = {e.path: sum(1 for v in views if v.path == e.path) for e in views}
    assert page_rows == sorted(by_path.items(), key=lambda r: (-r[1], r[0]))


async def test_a_wide_unicode_key_is_broken_down(client: httpx.AsyncClient) -> None:
    body = await get_json(
        client, "/api/v1/stats/breakdown", property=f"event:props:{WIDE_KEY}",
        **common("UTC", ("2025-11-12", "2025-11-12")),
    )  # fmt: skip
    assert body["results"] == [{"value": "ünï", "events": 1, "visitors": 1}]


HOSTILE = [
    ("property", "event:props:" + "k" * 65, "too_long"),
    ("property", "event:props:" + "é" * 33, "too_long"),  # 33 characters, 66 bytes
    ("property", "event:props:" + "k" * 10_000, "too_long"),
    ("property", "event:props:a\x00b", "invalid_text"),
    ("property", "event:props:", "invalid_request"),
    ("property", "event:propsplan", "invalid_request"),
    ("filters", "event:props:" + "k" * 65 + "==x", "too_long"),
    ("filters", "event:props:a\x00==x", "invalid_text"),
    ("filters", "event:props:plan==x\x00", "invalid_text"),
    ("filters", "event:props:plan==" + "v" * (MAX_PROP_VALUE_BYTES + 1), "too_long"),
    ("filters", "event:props:==x", "invalid_request"),
    ("filters", "event:props:plan", "invalid_request"),
]


@pytest.mark.parametrize(("field", "raw", "code"), HOSTILE, ids=lambda v: str(v)[:30])
async def test_a_hostile_key_or_value_is_a_400_naming_the_parameter(
    client: httpx.AsyncClient, field: str, raw: str, code: str
) -> None:
    params = {"site_id": SITE, "period": "day", "date": "2025-11-12", field: raw}
    if field == "filters":
        params["property"] = "event:props:plan"
    response = await client.get("/api/v1/stats/breakdown", params=params)
    assert response.status_code == 400, response.text
    body = response.json()
    assert (body["field"], body["code"]) == (field, code)
    assert f"`{field}`" in body["message"]
    if field == "filters":  # the same filter on the other questions
        del params["property"]
        for route in ("aggregate", "timeseries"):
            other = await client.get(f"/api/v1/stats/{route}", params=params)
            assert other.status_code == 400 and other.json()["field"] == "filters"
