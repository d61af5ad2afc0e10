"""Hot sites: a configured site is spread over sub-keys (partitions); others keep one."""

from __future__ import annotations

import uuid

import msgspec
import pytest
from aiokafka import AIOKafkaConsumer

from core.config import ConfigError, parse_hot_sites
from core.events import decode_records
from ingest.publish import SiteKeys
from ingest.settings import Settings
from tests.ingest.support import api_client, event


def test_hot_sites_are_parsed_and_spread_in_turn() -> None:
    assert parse_hot_sites("") == {}
    assert parse_hot_sites("site-a:4, site:b:2") == {"site-a": 4, "site:b": 2}
    with pytest.raises(ConfigError):
        parse_hot_sites("site-a")
    keys = SiteKeys({"hot": 3})
    assert {keys.key("hot") for _ in range(6)} == {b"hot#0", b"hot#1", b"hot#2"}
    assert keys.key("calm") == b"calm"


@pytest.mark.kafka
async def test_a_hot_site_lands_on_several_partitions(api_settings: Settings, topic: str) -> None:
    settings = msgspec.structs.replace(api_settings, hot_sites={"hot": 4})
    async with api_client(settings) as client:
        for i in range(8):
            response = await client.post("/events", json=[event(site_id="hot", path=f"/{i}")] * 5)
            assert response.status_code == 202
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=f"read-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    partitions: set[int] = set()
    count = 0
    try:
        for _ in range(15):
            for tp, messages in (await consumer.getmany(timeout_ms=1000)).items():
                for message in messages:
                    partitions.add(tp.partition)
                    records = decode_records(message.value, dict(message.headers)["schema"])
                    assert {r.site_id for r in records} == {"hot"}
                    count += len(records)
            if count >= 40:
                break
    finally:
        await consumer.stop()
    assert count == 40
    assert len(partitions) > 1
