"""Kafka -> consumer -> PostgreSQL, with real processes' building blocks in-process."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaProducer

from consumer.deadletter import read_dead_letters
from consumer.settings import ConsumerSettings
from core.events import (
    SCHEMA_EVENT_BATCH_V1,
    SCHEMA_EVENT_V1,
    SCHEMA_HEADER,
    encode_record,
    encode_records,
)
from tests.support import (
    assert_rollups_match_raw_rows,
    make_record,
    running_consumer,
    scalar,
    stored_event_count,
    wait_for,
)

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


async def produce(settings: ConsumerSettings, values: list[tuple[bytes, bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        for key, value, schema in values:
            await producer.send(
                settings.events_topic, value, key=key, headers=[(SCHEMA_HEADER, schema)]
            )
        await producer.flush()
    finally:
        await producer.stop()


def single(record: object) -> tuple[bytes, bytes, bytes]:
    return (record.site_id.encode(), encode_record(record), SCHEMA_EVENT_V1)  # type: ignore[attr-defined]


async def test_events_reach_postgres_with_offsets_stored(
    consumer_settings: ConsumerSettings,
) -> None:
    records = [make_record(site_id=f"site-{i % 7}", user_id=f"u{i % 13}") for i in range(300)]
    await produce(consumer_settings, [single(r) for r in records])
    url = consumer_settings.database_url
    async with running_consumer(consumer_settings) as stats:
        await wait_for(lambda: stored_event_count(url) == 300, timeout_s=30, what="300 rows")
    assert stats.written_total == 300
    assert scalar(url, "SELECT sum(next_offset) FROM consumer_offsets") == 300
    assert_rollups_match_raw_rows(url)


async def test_restarting_the_consumer_counts_nothing_twice(
    consumer_settings: ConsumerSettings,
) -> None:
    url = consumer_settings.database_url
    await produce(consumer_settings, [single(make_record(path=f"/{i}")) for i in range(100)])
    async with running_consumer(consumer_settings):
        await wait_for(lambda: stored_event_count(url) == 100, timeout_s=30, what="100 rows")
    await produce(consumer_settings, [single(make_record(path=f"/{i}")) for i in range(50)])
    async with running_consumer(consumer_settings):
        await wait_for(lambda: stored_event_count(url) == 150, timeout_s=30, what="150 rows")
    assert scalar(url, "SELECT page_views FROM daily_stats") == 150
    assert_rollups_match_raw_rows(url)


async def test_a_retried_event_id_is_counted_once(consumer_settings: ConsumerSettings) -> None:
    url = consumer_settings.database_url
    retried = make_record()
    await produce(consumer_settings, [single(retried), single(make_record()), single(retried)])
    async with running_consumer(consumer_settings) as stats:
        await wait_for(
            lambda: scalar(url, "SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets") == 3,
            timeout_s=30,
            what="all three messages to be consumed",
        )
    assert stored_event_count(url) == 2
    assert stats.written_total == 2
    assert scalar(url, "SELECT page_views FROM daily_stats") == 2


async def test_batch_messages_are_read_too(consumer_settings: ConsumerSettings) -> None:
    url = consumer_settings.database_url
    records = [make_record(path=f"/{i}") for i in range(25)]
    await produce(consumer_settings, [(b"site-a", encode_records(records), SCHEMA_EVENT_BATCH_V1)])
    async with running_consumer(consumer_settings):
        await wait_for(lambda: stored_event_count(url) == 25, timeout_s=30, what="25 rows")
    assert_rollups_match_raw_rows(url)


async def test_poison_goes_to_the_dead_letter_topic_and_the_partition_moves_on(
    consumer_settings: ConsumerSettings,
) -> None:
    url = consumer_settings.database_url
    await produce(
        consumer_settings,
        [
            single(make_record(path="/before")),
            (b"site-a", b"\xc1 this is not msgpack", SCHEMA_EVENT_V1),
            single(make_record(path="/nul\x00")),  # decodes, but PostgreSQL refuses it
            single(make_record(path="/after")),
        ],
    )
    async with running_consumer(consumer_settings) as stats:
        await wait_for(lambda: stored_event_count(url) == 2, timeout_s=30, what="2 good rows")
        await wait_for(
            lambda: scalar(url, "SELECT sum(next_offset) FROM consumer_offsets") == 4,
            timeout_s=30,
            what="the offset to move past the poison",
        )
    for kind in ("undecodable", "rejected"):
        assert stats.registry.get_sample_value("consumer_dead_lettered_total", {"error": kind}) == 1
    assert stats.registry.get_sample_value("consumer_isolation_passes_total") == 1

    _, letters = await read_dead_letters(
        consumer_settings.kafka_bootstrap_servers, consumer_settings.dlq_topic
    )
    by_error = {letter.header("error"): letter for letter in letters}
    assert sorted(by_error) == ["rejected", "undecodable"]
    assert by_error["rejected"].header("reason").startswith("rejected by the database")
    assert by_error["rejected"].header("sqlstate") == "22021"
    assert by_error["rejected"].header("source_offset") == "2"
    assert by_error["undecodable"].header("reason").startswith("cannot decode the message")
    assert by_error["undecodable"].header("source_offset") == "1"
