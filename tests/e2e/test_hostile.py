"""Hostile and odd input, end to end: the real API, Kafka, consumer and PostgreSQL.

Every case is followed by the same proof: a fresh ordinary event is counted within seconds,
the reconcile command finds no accepted event missing (nor any still pending once the
consumer caught up), and no answer of the whole test was a 5xx.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import random
import uuid
import zoneinfo

import pytest
from aiokafka import AIOKafkaProducer

from consumer.reconcile import reconcile
from consumer.settings import ConsumerSettings
from core.events import SCHEMA_EVENT_BATCH_V1, SCHEMA_HEADER, encode_records
from tests.e2e.hostile import (
    CJK,
    Client,
    assert_still_healthy,
    event,
    new_site,
    now_iso,
    views_today,
)
from tests.support import make_record, scalar, wait_for

pytestmark = pytest.mark.e2e


async def test_a_path_too_long_in_bytes_is_refused_and_the_longest_valid_one_stored(
    hostile: tuple[Client, ConsumerSettings],
) -> None:
    client, _ = hostile
    site = new_site()
    # The reproduction: 2,048 characters, ~6 kB of UTF-8.
    response = await client.post("/event", json=event(site, path="/" + CJK[:2047]))
    assert response.status_code == 400
    assert response.json()["field"] == "path"
    # The longest path in bytes, in characters of every UTF-8 width.
    widest = "/" + "\U0001f600" * 511 + "é"  # 1 + 2,044 + 2 = 2,047 bytes
    for path in ("/" + "a" * 2047, "/" + CJK[:682] + "a", widest):
        assert len(path.encode()) <= 2048
        response = await client.post("/event", json=event(site, path=path, user_id=path[-8:]))
        assert response.status_code == 202, response.text
    for field, limit in (("site_id", 128), ("event_type", 64), ("user_id", 256)):
        body = event(site)
        body[field] = CJK[: limit // 3 + 1]
        response = await client.post("/event", json=body)
        assert response.status_code == 400, (field, response.text)
        assert response.json()["field"] == field

    # A custom event at every limit at once (site, type, path), counted in a zone whose day
    # reads the 15-minute rollups of the other event types (their keys hold all three).
    longest_site = (site + "-" + "s" * 128)[:128]
    longest_type = "t" * 64
    custom = event(longest_site, event_type=longest_type, path="/" + "a" * 2047)
    response = await client.post("/event", json=custom)
    assert response.status_code == 202, response.text

    async def three() -> bool:
        return await views_today(client, site) == 3

    await wait_for(three, timeout_s=30, what="the three longest paths counted")

    zone = "Asia/Kathmandu"
    local_today = dt.datetime.now(zoneinfo.ZoneInfo(zone)).date().isoformat()

    async def custom_counted() -> bool:
        params = {
            "site_id": longest_site,
            "period": "day",
            "date": local_today,
            "timezone": zone,
            "filters": f"event:name=={longest_type}",
            "metrics": "events",
        }
        answer = await client.get("/api/v1/stats/aggregate", params=params)
        assert answer.status_code == 200, answer.text
        return int(answer.json()["results"]["events"]["value"]) == 1

    await wait_for(custom_counted, timeout_s=30, what="the custom event at every limit counted")


async def test_bodies_are_read_whole_or_refused(hostile: tuple[Client, ConsumerSettings]) -> None:
    client, _ = hostile
    site = new_site()
    first = "\n".join(json.dumps(event(site, path=f"/a{i}")) for i in range(3)) + "\n"
    second = "\n".join(json.dumps(event(site, path=f"/b{i}")) for i in range(3)) + "\n"
    headers = {"content-type": "application/x-ndjson", "content-encoding": "gzip"}
    two_members = gzip.compress(first.encode()) + gzip.compress(second.encode())
    response = await client.post("/events", content=two_members, headers=headers)
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 6

    noise = random.Random(1).randbytes(4 * 1024 * 1024)
    response = await client.post(
        "/events", content=gzip.compress(first.encode()) + noise, headers=headers
    )
    assert response.status_code in (400, 413), response.text
    response = await client.post(
        "/events", content=gzip.compress(first.encode()) + b"trailing", headers=headers
    )
    assert response.status_code == 400, response.text
    for url in ("/events", "/event"):
        response = await client.post(url, content=b"[" * 20_000)
        assert response.status_code == 400, (url, response.text)

    async def six() -> bool:
        return await views_today(client, site) == 6

    await wait_for(six, timeout_s=30, what="both gzip members counted")


async def test_timestamps_outside_the_window_are_refused_and_create_no_partition(
    hostile: tuple[Client, ConsumerSettings],
) -> None:
    client, settings = hostile
    site = new_site()
    partitions = "SELECT count(*) FROM pg_inherits WHERE inhparent = 'events'::regclass"
    before = scalar(settings.database_url, partitions)
    ancient = [
        event(site, timestamp=f"{1000 + i:04d}-06-01T00:00:00Z", user_id=f"u{i}")
        for i in range(300)
    ]
    edge_at = now_iso(-dt.timedelta(days=30))
    edge = event(site, timestamp=edge_at, path="/edge")
    edge_day = dt.datetime.fromisoformat(edge_at.replace("Z", "+00:00")).date()  # UTC

    async def edge_views() -> int:
        params = {"site_id": site, "date": edge_day.isoformat()}
        response = await client.get("/stats", params=params)
        assert response.status_code == 200, response.text
        return int(response.json()["total_views"])

    # Asked before the edge's event: an answer kept for the edge's day until a batch stamps it.
    assert await edge_views() == 0
    response = await client.post("/events", json=[*ancient, edge])
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (1, 300)
    assert {e["field"] for e in body["errors"]} == {"timestamp"}
    response = await client.post("/event", json=ancient[0])
    assert response.status_code == 400
    assert response.json()["field"] == "timestamp"
    await assert_still_healthy(client, settings)
    # Today's partition and the edge's day, at most: nothing for the years 1000-1299.
    assert scalar(settings.database_url, partitions) - before <= 2

    # The oldest day accepted is stamped through Kafka and the consumer, alone for the site,
    # and the kept answer about it is computed again.
    async def edge_counted() -> bool:
        return await edge_views() == 1

    await wait_for(edge_counted, timeout_s=30, what="the edge's day counted")
    stamped = "SELECT array_agg(day) FROM site_day_versions WHERE site_id = %s"
    assert scalar(settings.database_url, stamped, (site,)) == [edge_day]


async def test_the_same_event_id_counts_once_per_site_and_once_for_each_site(
    hostile: tuple[Client, ConsumerSettings],
) -> None:
    client, _ = hostile
    site_a, site_b = new_site(), new_site()
    shared = str(uuid.uuid4())
    for site in (site_a, site_a, site_b):
        response = await client.post("/event", json=event(site, event_id=shared))
        assert response.status_code == 202, response.text

    async def both() -> bool:
        return (await views_today(client, site_a), await views_today(client, site_b)) == (1, 1)

    await wait_for(both, timeout_s=30, what="one view on each site")


async def test_an_event_the_database_refuses_goes_alone_to_the_dead_letter_topic(
    hostile: tuple[Client, ConsumerSettings],
) -> None:
    """What an older API replica (no byte limits) would publish during a rolling upgrade: a
    coalesced message holding other sites' events and one the database cannot index."""
    client, settings = hostile
    sites = [new_site() for _ in range(5)]
    good = [make_record(site_id=s, timestamp=dt.datetime.now(dt.UTC)) for s in sites]
    poison = make_record(site_id=sites[0], path="/" + CJK[:2000], timestamp=dt.datetime.now(dt.UTC))
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.events_topic,
            encode_records([good[0], poison, *good[1:]]),
            headers=[(SCHEMA_HEADER, SCHEMA_EVENT_BATCH_V1)],
        )
    finally:
        await producer.stop()

    async def all_good_counted() -> bool:
        return all([await views_today(client, s) == 1 for s in sites])

    await wait_for(all_good_counted, timeout_s=30, what="the culprit's neighbours stored")
    report = await reconcile(settings)
    assert report.dead_lettered == 1 and report.missing == []


async def test_stats_parameters_at_their_extremes_answer_4xx(
    hostile: tuple[Client, ConsumerSettings],
) -> None:
    client, _ = hostile
    site = new_site()
    aggregate = "/api/v1/stats/aggregate"
    cases: list[tuple[str, dict[str, str]]] = [
        (aggregate, {"site_id": site, "period": "30d", "date": "0001-01-01"}),
        (aggregate, {"site_id": site, "period": "30d", "date": "9999-12-31"}),
        (aggregate, {"site_id": site, "period": "month", "date": "9999-12-31"}),
        (aggregate, {"site_id": "\x00", "period": "day"}),
        (aggregate, {"site_id": site, "period": "day", "filters": "event:page==/a\x00b"}),
        ("/stats", {"site_id": "\x00", "date": "2025-11-12"}),
        ("/stats", {"site_id": site, "date": "9999-12-31", "timezone": "Pacific/Kiritimati"}),
        ("/stats", {"site_id": CJK[:200], "date": "2025-11-12"}),
    ]
    for url, params in cases:
        response = await client.get(url, params=params)
        assert 400 <= response.status_code < 500, (url, params, response.text)
    too_many = ";".join(f"event:page==/p{i}" for i in range(50))
    response = await client.get(aggregate, params={"site_id": site, "filters": too_many})
    assert response.status_code == 400, response.text


async def test_malformed_bodies_of_every_shape_answer_4xx(
    hostile: tuple[Client, ConsumerSettings],
) -> None:
    client, _ = hostile
    site = new_site()
    bodies: list[bytes] = [
        b"",
        b"{",
        b"null",
        b"[]",
        b'"\\ud800"',
        json.dumps(event(site, path="/\ud800")).encode("utf-8", "surrogatepass"),
        json.dumps(event(site, path="/\\ud800")).encode(),
        json.dumps(event(site, user_id="\x00")).encode(),
        json.dumps(event(site, timestamp="2025-02-30T00:00:00Z")).encode(),
        json.dumps(event(site, timestamp="9999-12-31T23:59:59+14:00")).encode(),
        json.dumps({**event(site), "event_id": "not-a-uuid"}).encode(),
        b"\xff\xfe" + json.dumps(event(site)).encode("utf-16-le"),
        os.urandom(512),
    ]
    for body in bodies:
        for url in ("/event", "/events"):
            response = await client.post(url, content=body)
            assert response.status_code < 500, (url, body[:60], response.text)
