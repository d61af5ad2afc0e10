"""Publishing to a real broker: acks, keys, partitions, headers, and the value encoding."""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.partitioner import DefaultPartitioner

from ingest.events import SCHEMA_EVENT_V1, SCHEMA_HEADER, decode_records
from ingest.publish import Publisher, make_producer
from ingest.settings import Settings
from tests.conftest import TEST_PARTITIONS
from tests.support import make_record

pytestmark = pytest.mark.kafka


async def test_published_records_are_keyed_by_site_and_decode_back(
    api_settings: Settings, topic: str
) -> None:
    publisher = Publisher(make_producer(api_settings), topic, timeout_s=10)
    await publisher.start()
    records = [make_record(site_id=f"site-{i % 5}", path=f"/{i}") for i in range(50)]
    try:
        await publisher.publish(records)
    finally:
        await publisher.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=api_settings.kafka_bootstrap_servers,
        group_id=f"read-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    seen = []
    try:
        while len(seen) < len(records):
            batches = await consumer.getmany(timeout_ms=5000)
            assert batches, "the published records did not arrive"
            for tp, messages in batches.items():
                for message in messages:
                    headers = dict(message.headers)
                    assert headers[SCHEMA_HEADER] == SCHEMA_EVENT_V1
                    (record,) = decode_records(message.value, headers[SCHEMA_HEADER])
                    assert message.key == record.site_id.encode()
                    partitions = list(range(TEST_PARTITIONS))
                    assert tp.partition == DefaultPartitioner()(message.key, partitions, partitions)
                    seen.append(record)
    finally:
        await consumer.stop()
    assert sorted(seen, key=lambda r: r.path) == sorted(records, key=lambda r: r.path)
