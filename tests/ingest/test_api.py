"""The ingest endpoints against a real broker: batches, beacons, gzip, limits, CORS, time."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import msgspec
import pytest

from core.events import SCHEMA_EVENT_BATCH_V1, SCHEMA_HEADER, decode_records
from ingest.settings import Settings
from tests.ingest.support import api_client, event, now, read_topic

pytestmark = pytest.mark.kafka


async def test_single_event_answer_is_byte_compatible(api_settings: Settings, topic: str) -> None:
    async with api_client(api_settings) as client:
        response = await client.post("/event", json=event())
    assert response.status_code == 202
    assert response.content == b'{"message":"Event accepted"}'
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    (record,) = await read_topic(api_settings.kafka_bootstrap_servers, topic, 1)
    assert record.site_id == "site-abc-123"


async def test_mixed_batch_accepts_the_valid_and_names_the_invalid(
    api_settings: Settings, topic: str
) -> None:
    items = [
        event(path="/a"),
        event(user_id=...),
        event(path="/b", site_id="site-2"),
        event(timestamp="yesterday"),
        "not an object",
        event(path="/c"),
    ]
    async with api_client(api_settings) as client:
        response = await client.post("/events", json=items)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["message"] == "Events accepted"
    assert (body["accepted"], body["rejected"]) == (3, 3)
    assert [(e["index"], e["code"], e.get("field")) for e in body["errors"]] == [
        (1, "invalid_request", "user_id"),
        (3, "invalid_request", "timestamp"),
        (4, "invalid_request", None),
    ]
    records = await read_topic(api_settings.kafka_bootstrap_servers, topic, 3)
    assert sorted(r.path for r in records) == ["/a", "/b", "/c"]


async def test_batch_forms_envelope_ndjson_and_beacon(api_settings: Settings, topic: str) -> None:
    ndjson = "\n".join(json.dumps(event(path=f"/n{i}")) for i in range(3)) + "\n\n"
    async with api_client(api_settings) as client:
        envelope = await client.post("/events", json={"batch": [event(path="/e")]})
        lines = await client.post(
            "/events", content=ndjson, headers={"content-type": "application/x-ndjson"}
        )
        beacon = await client.post(
            "/events",
            content=json.dumps([event(path="/beacon")]),
            headers={"content-type": "text/plain;charset=UTF-8"},
        )
        single_beacon = await client.post(
            "/event",
            content=json.dumps(event(path="/one-beacon")),
            headers={"content-type": "text/plain;charset=UTF-8"},
        )
    assert [r.status_code for r in (envelope, lines, beacon, single_beacon)] == [202] * 4
    assert lines.json()["accepted"] == 3
    records = await read_topic(api_settings.kafka_bootstrap_servers, topic, 6)
    assert sorted(r.path for r in records) == ["/beacon", "/e", "/n0", "/n1", "/n2", "/one-beacon"]


async def test_a_batch_is_one_message_per_partition(api_settings: Settings, topic: str) -> None:
    from aiokafka import AIOKafkaConsumer

    items = [event(site_id=f"site-{i % 2}", path=f"/{i}") for i in range(10)]
    async with api_client(api_settings) as client:
        response = await client.post("/events", json=items)
    assert response.json()["accepted"] == 10
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=api_settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        group_id=f"read-{uuid.uuid4().hex}",
    )
    await consumer.start()
    try:
        messages = []
        deadline = time.monotonic() + 30  # a new group's join included, on a busy broker
        while time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=1000)).values():
                messages.extend(batch)
            if sum(len(decode_records(m.value, SCHEMA_EVENT_BATCH_V1)) for m in messages) >= 10:
                break
    finally:
        await consumer.stop()
    # site-0 and site-1 hash to different partitions of the test topic: one array each.
    assert len({m.partition for m in messages}) == len(messages) == 2
    assert sorted(m.key for m in messages) == [b"site-0", b"site-1"]
    assert all(dict(m.headers)[SCHEMA_HEADER] == SCHEMA_EVENT_BATCH_V1 for m in messages)


async def test_concurrent_single_events_share_messages(api_settings: Settings, topic: str) -> None:
    bodies = [event(site_id=f"site-{i % 8}", path=f"/{i}") for i in range(64)]
    async with api_client(api_settings) as client:
        answers = await asyncio.gather(*(client.post("/event", json=body) for body in bodies))
        metrics = (await client.get("/metrics")).text
    assert [a.status_code for a in answers] == [202] * 64
    assert "ingest_events_accepted_total 64.0" in metrics
    sent = next(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("ingest_kafka_messages_total ")
    )
    assert sent < 64
    records = await read_topic(api_settings.kafka_bootstrap_servers, topic, 64)
    assert sorted(r.path for r in records) == sorted(b["path"] for b in bodies)


async def test_gzip_bodies_are_inflated_and_bombs_refused(
    api_settings: Settings, topic: str
) -> None:
    gz = {"content-encoding": "gzip", "content-type": "application/json"}
    bomb = gzip.compress(b"[" + b" " * (50 * 1024 * 1024) + b"]")  # 50 MiB of blanks
    assert len(bomb) < 100 * 1024
    async with api_client(api_settings) as client:
        one = await client.post(
            "/event", content=gzip.compress(json.dumps(event()).encode()), headers=gz
        )
        many = await client.post(
            "/events", content=gzip.compress(json.dumps([event()] * 5).encode()), headers=gz
        )
        refused = await client.post("/events", content=bomb, headers=gz)
        corrupt = await client.post("/event", content=b"\x1f\x8b not gzip", headers=gz)
        truncated = await client.post("/event", content=gzip.compress(b"{}")[:-6], headers=gz)
        brotli = await client.post("/event", content=b"{}", headers={"content-encoding": "br"})
    assert (one.status_code, many.status_code) == (202, 202)
    assert refused.status_code == 413
    assert refused.json()["code"] == "payload_too_large"
    assert corrupt.status_code == 400 and corrupt.json()["code"] == "malformed_json"
    assert truncated.status_code == 400
    assert brotli.status_code == 415
    await read_topic(api_settings.kafka_bootstrap_servers, topic, 6)


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 500):
        yield data[start : start + 500]


async def test_limits_answer_413(api_settings: Settings) -> None:
    settings = msgspec.structs.replace(
        api_settings, max_event_bytes=2048, max_body_bytes=8192, max_batch_events=5
    )
    big = event(path="/" + "x" * 2040)
    async with api_client(settings) as client:
        too_big_event = await client.post("/event", json=big)
        too_many = await client.post("/events", json=[event()] * 6)
        too_big_body = await client.post("/events", json=[event(path="/" + "y" * 1900)] * 5)
        one_too_big = await client.post("/events", json=[event(), big])
        # Chunked (no Content-Length): counted while reading.
        chunked = await client.post("/event", content=_chunks(b"{" + b" " * 3000 + b"}"))
    assert too_big_event.status_code == 413
    assert too_many.status_code == 413 and too_many.json()["field"] == "batch"
    assert too_big_body.status_code == 413
    assert one_too_big.status_code == 202
    assert one_too_big.json()["errors"] == [
        {"index": 1, "code": "payload_too_large", "message": "The event is larger than 2048 bytes"}
    ]
    assert chunked.status_code == 413


async def test_malformed_and_empty_batches_are_400(api_settings: Settings) -> None:
    async with api_client(api_settings) as client:
        malformed = await client.post("/events", content=b"[{")
        not_a_batch = await client.post("/events", json={"events": []})
        empty = await client.post("/events", json=[])
        none_valid = await client.post("/events", json=[{"site_id": 1}])
        single_malformed = await client.post("/event", content=b"{")
    assert malformed.json()["code"] == "malformed_json"
    assert not_a_batch.status_code == 400 and not_a_batch.json()["field"] == "batch"
    assert empty.status_code == 400
    assert none_valid.status_code == 400
    assert none_valid.json()["errors"][0]["field"] == "site_id"
    assert single_malformed.status_code == 400
    assert single_malformed.json()["code"] == "malformed_json"


async def test_cors_preflight_and_simple_requests(api_settings: Settings) -> None:
    origin = {"origin": "https://shop.example"}
    async with api_client(api_settings) as client:
        preflight = await client.options(
            "/events",
            headers={
                **origin,
                "access-control-request-method": "POST",
                "access-control-request-headers": "content-type,x-write-key",
            },
        )
        simple = await client.post("/event", json=event(), headers=origin)
    assert preflight.status_code == 200
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "x-write-key" in preflight.headers["access-control-allow-headers"].lower()
    assert simple.status_code == 202
    assert simple.headers["access-control-allow-origin"] == "*"


async def test_event_route_answers_the_same_whichever_path_serves_it(
    api_settings: Settings,
) -> None:
    """POST /event skips the router (ingest/fastpath.py); errors, metrics and the other
    methods must not notice."""
    async with api_client(api_settings) as client:
        bad = await client.post("/event", content=b"{", headers={"content-type": "text/plain"})
        wrong_method = await client.get("/event")
        preflight = await client.options(
            "/event",
            headers={"origin": "https://shop.example", "access-control-request-method": "POST"},
        )
        metrics = (await client.get("/metrics")).text
    assert bad.status_code == 400
    assert bad.json()["code"] == "malformed_json"
    assert bad.headers["content-type"] == "application/json; charset=utf-8"
    assert wrong_method.status_code == 405
    assert preflight.status_code == 200
    assert 'ingest_http_requests_total{route="/event",status="400"} 1.0' in metrics
    assert 'ingest_http_requests_total{route="/event",status="405"} 1.0' in metrics


async def test_sent_at_corrects_clock_skew_and_future_times_are_clamped(
    api_settings: Settings, topic: str
) -> None:
    # The emitter's clock is two hours ahead; its event happened 10 s before it sent it.
    client_now = now() + timedelta(hours=2)
    skewed = event(
        path="/skewed",
        timestamp=(client_now - timedelta(seconds=10)).isoformat(),
        sent_at=client_now.isoformat(),
    )
    future = event(path="/future", timestamp=(now() + timedelta(days=3)).isoformat())
    async with api_client(api_settings) as client:
        assert (await client.post("/events", json=[skewed, future])).status_code == 202
    records = {r.path: r for r in await read_topic(api_settings.kafka_bootstrap_servers, topic, 2)}
    corrected = records["/skewed"]
    assert corrected.received_at - corrected.timestamp == timedelta(seconds=10)
    assert records["/future"].timestamp == records["/future"].received_at


async def test_event_ids_are_kept_or_assigned(api_settings: Settings, topic: str) -> None:
    mine = uuid.uuid4()
    async with api_client(api_settings) as client:
        await client.post("/events", json=[event(event_id=str(mine), path="/mine"), event()])
    records = {r.path: r for r in await read_topic(api_settings.kafka_bootstrap_servers, topic, 2)}
    assert records["/mine"].event_id == mine
    assigned = records["/pricing"].event_id
    assert assigned.version == 7


async def test_readyz_metrics_and_openapi(api_settings: Settings) -> None:
    async with api_client(api_settings) as client:
        await client.post("/event", json=event())
        await client.post("/events", json=[event(), {"bad": 1}])
        ready = await client.get("/readyz")
        metrics = await client.get("/metrics")
        document = (await client.get("/openapi.json")).json()
        health = await client.get("/healthz")
    assert ready.status_code == 200 and health.status_code == 200
    text = metrics.text
    assert 'ingest_http_requests_total{route="/event",status="202"} 1.0' in text
    assert "ingest_events_accepted_total 2.0" in text
    assert 'ingest_events_rejected_total{code="invalid_request"} 1.0' in text
    assert "ingest_produce_seconds_count 2.0" in text
    assert "ingest_in_flight_events 0.0" in text
    assert set(document["paths"]) >= {
        "/event",
        "/events",
        "/stats",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
    }


# --- the edge refuses what the store cannot hold (issue 11) ---


async def test_text_past_its_byte_limit_is_refused_per_item(
    api_settings: Settings, topic: str
) -> None:
    cjk = "/" + "路" * 2047  # within 2,048 characters, 6,142 bytes of UTF-8
    at_limit = "/" + "路" * 682 + "a"  # 2,048 bytes exactly
    async with api_client(api_settings) as client:
        single = await client.post("/event", json=event(path=cjk))
        site = await client.post("/event", json=event(site_id="ü" * 65))
        batch = await client.post(
            "/events", json=[event(path=cjk), event(path=at_limit), event(user_id="😀" * 65)]
        )
    assert single.status_code == 400
    assert (single.json()["code"], single.json()["field"]) == ("field_too_long", "path")
    assert "2048 bytes" in single.json()["message"]
    assert (site.status_code, site.json()["field"]) == (400, "site_id")
    assert batch.status_code == 202
    assert batch.json()["accepted"] == 1
    assert [(e["index"], e["code"], e["field"]) for e in batch.json()["errors"]] == [
        (0, "field_too_long", "path"),
        (2, "field_too_long", "user_id"),
    ]
    (record,) = await read_topic(api_settings.kafka_bootstrap_servers, topic, 1)
    assert record.path == at_limit


async def test_timestamps_before_the_window_or_retention_are_refused(
    api_settings: Settings, topic: str
) -> None:
    windowed = msgspec.structs.replace(api_settings, max_past_days=7)
    retained = msgspec.structs.replace(api_settings, max_past_days=7, retention_days=2)
    recent = event(path="/recent", timestamp=(now() - timedelta(days=3)).isoformat())
    old = event(path="/old", timestamp=(now() - timedelta(days=8)).isoformat())
    ancient = event(path="/ancient", timestamp="1000-01-01T00:00:00Z")
    async with api_client(windowed) as client:
        single_old = await client.post("/event", json=ancient)
        current = event(path="/now", timestamp=now().isoformat())
        batch = await client.post("/events", json=[recent, old, current])
    async with api_client(retained) as client:
        expired = await client.post("/event", json=recent)
    assert single_old.status_code == 400
    assert (single_old.json()["code"], single_old.json()["field"]) == (
        "timestamp_too_old",
        "timestamp",
    )
    assert "MAX_PAST_DAYS" in single_old.json()["message"]
    assert batch.status_code == 202 and batch.json()["accepted"] == 2
    assert [(e["index"], e["code"]) for e in batch.json()["errors"]] == [(1, "timestamp_too_old")]
    assert expired.status_code == 400
    assert expired.json()["code"] == "timestamp_expired"
    assert "RETENTION_DAYS" in expired.json()["message"]
    records = await read_topic(api_settings.kafka_bootstrap_servers, topic, 2)
    assert sorted(r.path for r in records) == ["/now", "/recent"]


async def test_a_year_of_days_in_one_batch_is_refused_but_for_the_window(
    api_settings: Settings,
) -> None:
    """The issue's reproduction: 300 events dated in the years 1000-1299."""
    windowed = msgspec.structs.replace(api_settings, max_past_days=31)
    items = [event(timestamp=f"{1000 + i}-06-01T00:00:00Z") for i in range(300)]
    async with api_client(windowed) as client:
        response = await client.post("/events", json=items)
    assert response.status_code == 400
    assert {e["code"] for e in response.json()["errors"]} == {"timestamp_too_old"}


async def test_gzip_members_are_all_read_and_trailing_bytes_refused(
    api_settings: Settings, topic: str
) -> None:
    gz = {"content-encoding": "gzip", "content-type": "application/json"}
    items = json.dumps([event(path=f"/m{i}") for i in range(6)]).encode()
    half = len(items) // 2
    members = gzip.compress(items[:half]) + gzip.compress(items[half:])
    async with api_client(api_settings) as client:
        both = await client.post("/events", content=members, headers=gz)
        trailing = await client.post("/events", content=members + b"noise" * 100, headers=gz)
        padded = await client.post(
            "/events", content=_chunks(gzip.compress(b"") * 60_000), headers=gz
        )
    assert both.status_code == 202 and both.json()["accepted"] == 6
    assert trailing.status_code == 400
    assert (trailing.json()["code"], trailing.json()["field"]) == (
        "malformed_json",
        "Content-Encoding",
    )
    assert padded.status_code == 413 and padded.json()["field"] == "Content-Encoding"
    records = await read_topic(api_settings.kafka_bootstrap_servers, topic, 6)
    assert sorted(r.path for r in records) == [f"/m{i}" for i in range(6)]


async def test_deeply_nested_and_odd_bodies_are_4xx(api_settings: Settings) -> None:
    deep = b"[" * 20_000
    surrogate = json.dumps(event(path="/X")).encode().replace(b"/X", b"/\\ud800")
    async with api_client(api_settings) as client:
        answers = [
            await client.post("/events", content=deep),
            await client.post("/events", content=b'{"batch": ' + deep),
            await client.post(
                "/events", content=deep, headers={"content-type": "application/x-ndjson"}
            ),
            await client.post("/event", content=deep),
            await client.post("/event", content=b'{"ref": ' + b"[" * 5000 + b"]" * 5000 + b"}"),
            await client.post("/event", content=surrogate),
            await client.post("/events", content=b"[" + surrogate + b"]"),
        ]
    assert [a.status_code for a in answers] == [400] * 7, [a.text[:200] for a in answers]
    assert answers[0].json()["code"] == "malformed_json"
    assert answers[4].json()["code"] == "malformed_json"
    assert answers[5].json()["code"] == "malformed_json"
