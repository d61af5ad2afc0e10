"""Publishing to a real broker: acks, keys, partitions, headers, the value encoding, and
concurrent publishes sharing messages (coalescing)."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.partitioner import DefaultPartitioner

from core.events import SCHEMA_EVENT_V1, SCHEMA_HEADER, EventRecord, decode_records
from ingest.publish import Publisher, PublishObserver, make_producer
from ingest.settings import Settings
from tests.conftest import TEST_PARTITIONS
from tests.ingest.support import read_messages
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
    deadline = time.monotonic() + 30  # a new group's join included, on a busy broker
    try:
        while len(seen) < len(records):
            assert time.monotonic() < deadline, "the published records did not arrive"
            batches = await consumer.getmany(timeout_ms=1000)
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


class CountingObserver(PublishObserver):
    def __init__(self) -> None:
        self.messages = 0

    def messages_sent(self, count: int) -> None:
        self.messages += count


@pytest.mark.parametrize("coalesce", [True, False], ids=["coalesced", "each-request-alone"])
async def test_concurrent_single_publishes_share_messages_on_their_sites_partitions(
    api_settings: Settings, topic: str, coalesce: bool
) -> None:
    observer = CountingObserver()
    publisher = Publisher(
        make_producer(api_settings),
        topic,
        timeout_s=10,
        site_arrays=True,
        coalesce=coalesce,
        observer=observer,
    )
    await publisher.start()
    records = [make_record(site_id=f"site-{i % 10}", path=f"/{i}") for i in range(200)]
    try:
        # Published in the same turn of the event loop: coalesced, they leave in one flush.
        await asyncio.gather(*(publisher.publish([record]) for record in records))
    finally:
        await publisher.stop()

    messages = await read_messages(api_settings.kafka_bootstrap_servers, topic, len(records))
    assert len(messages) == observer.messages
    if coalesce:
        assert len(messages) <= TEST_PARTITIONS  # one message per partition
    else:
        assert len(messages) == len(records)
    partitions = list(range(TEST_PARTITIONS))
    seen: list[EventRecord] = []
    for message in messages:
        for record in decode_records(message.value, dict(message.headers)[SCHEMA_HEADER]):
            expected = DefaultPartitioner()(record.site_id.encode(), partitions, partitions)
            assert message.partition == expected  # every event on its site's partition
            seen.append(record)
    assert sorted(r.path for r in seen) == sorted(r.path for r in records)  # each once


async def test_a_batch_and_single_events_published_together_each_get_their_acks(
    api_settings: Settings, topic: str
) -> None:
    publisher = Publisher(
        make_producer(api_settings), topic, timeout_s=10, site_arrays=True, coalesce=True
    )
    await publisher.start()
    batch = [make_record(site_id=f"site-{i % 7}", path=f"/batch/{i}") for i in range(300)]
    singles = [make_record(site_id=f"site-{i % 3}", path=f"/single/{i}") for i in range(30)]
    try:
        await asyncio.gather(
            publisher.publish(batch), *(publisher.publish([record]) for record in singles)
        )
        assert publisher.in_flight_events == 0
    finally:
        await publisher.stop()
    messages = await read_messages(api_settings.kafka_bootstrap_servers, topic, 330)
    paths = [
        record.path
        for message in messages
        for record in decode_records(message.value, dict(message.headers)[SCHEMA_HEADER])
    ]
    assert sorted(paths) == sorted(r.path for r in batch + singles)
