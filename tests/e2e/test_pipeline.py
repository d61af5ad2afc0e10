"""POST events over HTTP, read them back through /stats: the whole path, real processes."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from consumer.settings import ConsumerSettings
from core.settings import CONSUMER_WRITERS
from ingest.settings import Settings
from tests.processes import start_api, start_consumer
from tests.support import wait_for

pytestmark = pytest.mark.e2e


def event(site: str, **changes: Any) -> dict[str, Any]:
    return {
        "site_id": site,
        "event_type": "page_view",
        "path": "/pricing",
        "user_id": "user-xyz-789",
        "timestamp": "2025-11-12T19:30:01Z",
        **changes,
    }


async def post_all(client: httpx.AsyncClient, events: list[dict[str, Any]]) -> None:
    for body in events:
        response = await client.post("/event", json=body)
        assert response.status_code == 202, response.text


async def stats_when(
    client: httpx.AsyncClient, site: str, date: str, total_events_expected: int
) -> dict[str, Any]:
    """Waits until the consumer has stored the site's events for that day, then reads /stats."""

    async def caught_up() -> bool:
        response = await client.get("/stats", params={"site_id": site, "date": date})
        return bool(response.json()["total_views"] == total_events_expected)

    await wait_for(caught_up, timeout_s=30, what=f"{total_events_expected} views of {site}")
    response = await client.get("/stats", params={"site_id": site, "date": date})
    assert response.status_code == 200
    return dict(response.json())


def site() -> str:
    return f"site-{uuid.uuid4().hex[:10]}"


async def test_the_original_curl_example_byte_for_byte(pipeline: str) -> None:
    async with httpx.AsyncClient(base_url=pipeline) as client:
        s = site()
        response = await client.post("/event", json=event(s))
        assert response.status_code == 202
        assert response.content == b'{"message":"Event accepted"}'
        assert response.headers["content-type"] == "application/json; charset=utf-8"
        await stats_when(client, s, "2025-11-12", 1)
        response = await client.get("/stats", params={"site_id": s, "date": "2025-11-12"})
        assert response.content == (
            b'{"site_id":"' + s.encode() + b'","date":"2025-11-12","total_views":1,'
            b'"unique_users":1,"top_paths":[{"path":"/pricing","views":1}]}'
        )


async def test_top_three_paths_most_first_ties_by_path(pipeline: str) -> None:
    s = site()
    views = {"/a": 2, "/b": 4, "/c": 2, "/d": 1, "/e": 2}
    events = [event(s, path=path, user_id=f"u{i}") for path, n in views.items() for i in range(n)]
    async with httpx.AsyncClient(base_url=pipeline) as client:
        await post_all(client, events)
        stats = await stats_when(client, s, "2025-11-12", len(events))
    assert stats["top_paths"] == [
        {"path": "/b", "views": 4},
        {"path": "/a", "views": 2},
        {"path": "/c", "views": 2},
    ]
    assert stats["unique_users"] == 4  # u0..u3


async def test_only_page_views_count_and_users_are_distinct(pipeline: str) -> None:
    s = site()
    events = [
        event(s, user_id="alice"),
        event(s, user_id="alice", path="/docs"),
        event(s, user_id="bob"),
        event(s, user_id="carol", event_type="click"),
        event(s, user_id="dave", event_type="signup", path="/signup"),
    ]
    async with httpx.AsyncClient(base_url=pipeline) as client:
        await post_all(client, events)
        stats = await stats_when(client, s, "2025-11-12", 3)
    assert stats["total_views"] == 3
    assert stats["unique_users"] == 2
    assert stats["top_paths"] == [{"path": "/pricing", "views": 2}, {"path": "/docs", "views": 1}]


async def test_events_land_on_their_utc_day(pipeline: str) -> None:
    s = site()
    events = [
        # 23:30 in New York on the 12th is 04:30 UTC on the 13th.
        event(s, timestamp="2025-11-12T23:30:00-05:00", path="/ny-late"),
        # 00:30 in Kolkata on the 13th is 19:00 UTC on the 12th.
        event(s, timestamp="2025-11-13T00:30:00+05:30", path="/kolkata-early"),
        event(s, timestamp="2025-11-12T23:59:59.999Z", path="/last-ms"),
        event(s, timestamp="2025-11-13T00:00:00Z", path="/first-instant"),
    ]
    async with httpx.AsyncClient(base_url=pipeline) as client:
        await post_all(client, events)
        day12 = await stats_when(client, s, "2025-11-12", 2)
        day13 = await stats_when(client, s, "2025-11-13", 2)
    assert {p["path"] for p in day12["top_paths"]} == {"/kolkata-early", "/last-ms"}
    assert {p["path"] for p in day13["top_paths"]} == {"/ny-late", "/first-instant"}


async def test_a_retried_event_id_is_counted_once(pipeline: str) -> None:
    s = site()
    event_id = str(uuid.uuid4())
    async with httpx.AsyncClient(base_url=pipeline) as client:
        await post_all(client, [event(s, event_id=event_id)] * 3 + [event(s, path="/other")])
        stats = await stats_when(client, s, "2025-11-12", 2)
    assert stats["total_views"] == 2


async def test_a_site_without_data_answers_zeros(pipeline: str) -> None:
    async with httpx.AsyncClient(base_url=pipeline) as client:
        response = await client.get("/stats", params={"site_id": site(), "date": "2025-11-12"})
    assert response.status_code == 200
    body = response.json()
    assert (body["total_views"], body["unique_users"], body["top_paths"]) == (0, 0, [])


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        (b'{"site_id": "s"', None, "malformed_json"),
        (b"not json at all", None, "malformed_json"),
        (
            json.dumps({**event("s"), "timestamp": "2025-11-12T19:30:01"}).encode(),
            "timestamp",
            "invalid_request",
        ),
        (
            json.dumps({k: v for k, v in event("s").items() if k != "user_id"}).encode(),
            "user_id",
            "invalid_request",
        ),
        (json.dumps({**event("s"), "site_id": 7}).encode(), "site_id", "invalid_request"),
    ],
)
async def test_bad_events_get_400_naming_the_field(
    pipeline: str, body: bytes, field: str | None, code: str
) -> None:
    async with httpx.AsyncClient(base_url=pipeline) as client:
        response = await client.post(
            "/event", content=body, headers={"content-type": "application/json"}
        )
    assert response.status_code == 400
    error = response.json()
    assert error["code"] == code
    assert error.get("field") == field
    assert error["message"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"date": "2025-11-12"}, "site_id"),
        ({"site_id": "s"}, "date"),
        ({"site_id": "s", "date": "2025-02-30"}, "date"),
    ],
)
async def test_bad_stats_queries_get_400_naming_the_field(
    pipeline: str, params: dict[str, str], field: str
) -> None:
    async with httpx.AsyncClient(base_url=pipeline) as client:
        response = await client.get("/stats", params=params)
    assert response.status_code == 400
    assert response.json()["field"] == field


async def test_a_replica_of_the_most_writers_stores_every_site_and_then_a_fresh_event(
    api_settings: Settings, consumer_settings: ConsumerSettings, tmp_path: Path
) -> None:
    # CONSUMER_WRITERS at its maximum: more members than the topic has partitions, so some
    # sit idle, and each of the others writes its own partitions' batches.
    writers = str(CONSUMER_WRITERS.maximum)
    consumer = start_consumer(consumer_settings, tmp_path, CONSUMER_WRITERS=writers)
    api, base_url = start_api(api_settings, tmp_path)
    try:
        sites = [site() for _ in range(8)]  # spread over the partitions
        async with httpx.AsyncClient(base_url=base_url) as client:
            await post_all(client, [event(s, user_id=f"u{i}") for s in sites for i in range(3)])
            for s in sites:
                await stats_when(client, s, "2025-11-12", 3)
            await post_all(client, [event(sites[0], user_id="fresh")])
            fresh = await stats_when(client, sites[0], "2025-11-12", 4)
        assert fresh["unique_users"] == 4
    finally:
        api.terminate()
        code = consumer.terminate()
    assert code == 0, f"consumer exited with {code}:\n{consumer.log_tail()}"
    assert f"({writers} members)" in consumer.log_tail(200)
