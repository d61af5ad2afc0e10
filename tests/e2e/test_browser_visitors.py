"""Browser hits end to end: two API processes sharing one VISITOR_KEY, a consumer, Kafka and
PostgreSQL. A visitor is counted once per (address, user agent) a day whichever replica
served it; bots are dropped and counted; and no client address, user agent string or salt is
in Kafka, in any PostgreSQL table, or in any process's log."""

from __future__ import annotations

import base64
import os
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import msgspec
import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from psycopg import sql

from consumer.deadletter import partitions_of
from consumer.settings import ConsumerSettings
from ingest.salts import decode_key, unseal
from ingest.settings import Settings
from tests.e2e.hostile import today
from tests.processes import Process, start_api, start_consumer
from tests.support import wait_for

pytestmark = pytest.mark.e2e

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0 e2e-marker"
ADDRESS_A, ADDRESS_B = "198.51.100.23", "2001:db8:77::1"


async def topic_values(bootstrap: str, topic: str, timeout_s: float = 30) -> list[bytes]:
    """Every message's key, headers and value, from the start of the topic to its end when
    called (read whole, however long the reader's start takes on a busy broker)."""
    tps = [TopicPartition(topic, p) for p in await partitions_of(bootstrap, topic)]
    assert tps, f"topic {topic} has no partitions"
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    found: list[bytes] = []
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout_s
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            assert time.monotonic() < deadline, f"{topic} not read to its end in {timeout_s}s"
            batches = await consumer.getmany(timeout_ms=500)
            for batch in batches.values():
                for message in batch:
                    found += [message.key or b"", message.value or b""]
                    found += [value for _, value in message.headers]
    finally:
        await consumer.stop()
    return found


def every_table_as_text(database_url: str) -> str:
    """Every row of every table of the database, as text."""
    with psycopg.connect(database_url) as conn:
        tables = conn.execute(
            "SELECT schemaname, tablename FROM pg_tables "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
        texts = []
        for schema, table in tables:
            query = sql.SQL("SELECT t::text FROM {}.{} AS t").format(
                sql.Identifier(schema), sql.Identifier(table)
            )
            texts += [row[0] for row in conn.execute(query)]
    return "\n".join(texts)


def salts(database_url: str, key: str) -> list[bytes]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT day, sealed FROM visitor_salts").fetchall()
    return [unseal(decode_key(key), day, bytes(sealed)) for day, sealed in rows]


async def test_two_replicas_count_each_browser_once_and_keep_no_address_or_salt(
    api_settings: Settings, consumer_settings: ConsumerSettings, tmp_path: Path
) -> None:
    key = base64.b64encode(os.urandom(32)).decode()
    settings = msgspec.structs.replace(api_settings, visitor_key=key, trusted_proxy_hops=1)
    processes: list[Process] = [start_consumer(consumer_settings, tmp_path)]
    first, first_url = start_api(settings, tmp_path)
    second, second_url = start_api(settings, tmp_path)
    processes += [first, second]
    site = f"site-{uuid.uuid4().hex[:10]}"

    async def send(base_url: str, address: str, user_agent: str, path: str) -> int:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
            hit = {"n": "pageview", "u": f"https://shop.example{path}", "d": site, "r": None}
            response = await client.post(
                "/api/event",
                content=msgspec.json.encode(hit),
                headers={
                    "content-type": "text/plain",
                    "user-agent": user_agent,
                    "x-forwarded-for": address,
                },
            )
            return response.status_code

    try:
        statuses = [
            await send(first_url, ADDRESS_A, FIREFOX, "/a"),
            await send(second_url, ADDRESS_A, FIREFOX, "/b"),
            await send(first_url, ADDRESS_A, FIREFOX, "/c"),
            await send(second_url, ADDRESS_B, FIREFOX, "/a"),
            await send(first_url, ADDRESS_B, "", "/bot"),  # no user agent: a bot
        ]
        assert statuses == [202] * 5

        async def counted() -> bool:
            async with httpx.AsyncClient(base_url=first_url, timeout=30) as client:
                response = await client.get(
                    "/api/v1/stats/aggregate",
                    params={
                        "site_id": site,
                        "period": "day",
                        "date": today().isoformat(),
                        "metrics": "views,visitors",
                    },
                )
            assert response.status_code == 200, response.text
            results: dict[str, Any] = response.json()["results"]
            return (results["views"]["value"], results["visitors"]["value"]) == (4, 2)

        await wait_for(counted, timeout_s=40, what="4 page views by 2 visitors")
        async with httpx.AsyncClient(base_url=first_url, timeout=30) as client:
            metrics = (await client.get("/metrics")).text
        assert 'ingest_bots_dropped_total{reason="no_user_agent"} 1.0' in metrics

        day_salts = salts(settings.database_url, key)
        assert len(day_salts) == 2  # today's and tomorrow's
        secrets = [ADDRESS_A, ADDRESS_B, "e2e-marker", key]
        secrets += [s.hex() for s in day_salts] + [base64.b64encode(s).decode() for s in day_salts]
        kafka = await topic_values(settings.kafka_bootstrap_servers, settings.events_topic)
        assert kafka
        database = every_table_as_text(settings.database_url)
        assert site in database
        for secret in secrets:
            assert all(secret.encode() not in value for value in kafka), secret
            assert secret not in database, secret
        for salt in day_salts:
            assert all(salt not in value for value in kafka)
    finally:
        for process in processes:
            process.terminate()
    logs = "\n".join(p.log_path.read_text(errors="replace") for p in processes)
    assert "Application startup complete" in logs
    for secret in secrets:
        assert secret not in logs, secret
