"""Events the database refuses are isolated one by one: the rest of their batch, and of their
message, is stored; each culprit alone goes to the dead-letter topic, with its reason."""

from __future__ import annotations

import random
import uuid

import pytest
from aiokafka import AIOKafkaProducer

from consumer.deadletter import Entry, read_dead_letters
from consumer.settings import ConsumerSettings
from core.events import (
    SCHEMA_EVENT_BATCH_V1,
    SCHEMA_EVENT_V1,
    SCHEMA_HEADER,
    EventRecord,
    decode_records,
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


def cjk_path(seed: int) -> str:
    """~6 kB of random CJK (2,000 characters): its index key exceeds the btree maximum."""
    rng = random.Random(seed)
    return "/" + "".join(chr(rng.randrange(0x4E00, 0x9FFF)) for _ in range(2000))


async def produce(settings: ConsumerSettings, messages: list[list[EventRecord]]) -> None:
    """Straight to Kafka, as the API would: one event as event.v1, more as event-batch.v1."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        for records in messages:
            if len(records) == 1:
                value, schema = encode_record(records[0]), SCHEMA_EVENT_V1
            else:
                value, schema = encode_records(records), SCHEMA_EVENT_BATCH_V1
            await producer.send(
                settings.events_topic,
                value,
                key=records[0].site_id.encode(),
                headers=[(SCHEMA_HEADER, schema)],
            )
        await producer.flush()
    finally:
        await producer.stop()


def stored_ids(url: str) -> set[uuid.UUID]:
    return set(scalar(url, "SELECT coalesce(array_agg(event_id), '{}') FROM events"))


async def dead_letters(settings: ConsumerSettings, count: int) -> list[Entry]:
    entries: list[Entry] = []

    async def arrived() -> bool:
        nonlocal entries
        _, entries = await read_dead_letters(settings.kafka_bootstrap_servers, settings.dlq_topic)
        return len(entries) >= count

    await wait_for(arrived, timeout_s=30, what=f"{count} dead letters")
    return entries


def assert_is_dead_letter_of(entry: Entry, culprit: EventRecord, topic: str) -> None:
    assert decode_records(entry.value, entry.headers["schema"]) == [culprit]
    assert entry.headers["schema"] == SCHEMA_EVENT_V1
    assert entry.key == culprit.site_id.encode()
    assert entry.header("error") == "rejected"
    assert entry.header("site_id") == culprit.site_id
    assert entry.header("event_id") == str(culprit.event_id)
    assert entry.header("source_topic") == topic
    assert entry.header("source_partition") is not None
    assert entry.header("source_offset") is not None
    assert entry.header("dead_lettered_at") is not None


async def test_a_poison_event_among_good_ones_of_many_sites(
    consumer_settings: ConsumerSettings,
) -> None:
    url = consumer_settings.database_url
    good = [make_record(site_id=f"site-{i % 6}", user_id=f"u{i}") for i in range(240)]
    poison = make_record(site_id="site-2", path=cjk_path(1))
    messages = [[r] for r in good[:120]] + [[poison]] + [[r] for r in good[120:]]
    await produce(consumer_settings, messages)
    async with running_consumer(consumer_settings) as stats:
        await wait_for(
            lambda: (
                scalar(url, "SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets") == 241
            ),
            timeout_s=30,
            what="every message to be consumed",
        )
        assert stored_ids(url) == {r.event_id for r in good}
        assert scalar(url, "SELECT sum(page_views) FROM daily_stats") == 240
        assert_rollups_match_raw_rows(url)
        (letter,) = await dead_letters(consumer_settings, 1)
        assert_is_dead_letter_of(letter, poison, consumer_settings.events_topic)
        assert letter.header("sqlstate") == "54000"
        assert "exceeds btree" in (letter.header("reason") or "")
        # The partition moved on: a fresh event is stored.
        fresh = make_record(site_id="site-2", path="/fresh")
        await produce(consumer_settings, [[fresh]])
        await wait_for(lambda: stored_event_count(url) == 241, timeout_s=30, what="a fresh event")
    assert (
        stats.registry.get_sample_value("consumer_dead_lettered_total", {"error": "rejected"}) == 1
    )
    assert stats.registry.get_sample_value("consumer_isolation_passes_total") >= 1
    assert stats.written_total == 241
    assert_rollups_match_raw_rows(url)


async def test_several_culprits_in_one_batch_and_one_in_a_batch_message(
    consumer_settings: ConsumerSettings,
) -> None:
    url = consumer_settings.database_url
    culprits = [
        make_record(site_id="site-a", path=cjk_path(2)),
        make_record(site_id="site-b", path="/nul\x00"),
        make_record(site_id="site-c", user_id="nul\x00"),
        make_record(site_id="site-d", path=cjk_path(3)),
    ]
    good = [make_record(site_id=f"site-{c}", user_id=f"u{i}") for i, c in enumerate("abcd" * 50)]
    # One message of event-batch.v1 holds 60 good events of site-d and one culprit amid them,
    # as the API's coalescing produces; the other culprits travel alone.
    in_batch = [make_record(site_id="site-d", path=f"/b{i}") for i in range(60)]
    batch_message = [*in_batch[:30], culprits[3], *in_batch[30:]]
    messages = (
        [[r] for r in good[:50]]
        + [[culprits[0]], [culprits[1]]]
        + [[r] for r in good[50:150]]
        + [batch_message, [culprits[2]]]
        + [[r] for r in good[150:]]
    )
    await produce(consumer_settings, messages)
    async with running_consumer(consumer_settings):
        await wait_for(
            lambda: (
                scalar(url, "SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets")
                == len(messages)
            ),
            timeout_s=30,
            what="every message to be consumed",
        )
        letters = await dead_letters(consumer_settings, 4)
    assert stored_ids(url) == {r.event_id for r in good + in_batch}
    assert_rollups_match_raw_rows(url)
    by_event = {letter.header("event_id"): letter for letter in letters}
    assert sorted(by_event) == sorted(str(c.event_id) for c in culprits)
    for culprit in culprits:
        assert_is_dead_letter_of(
            by_event[str(culprit.event_id)], culprit, consumer_settings.events_topic
        )
    assert [by_event[str(c.event_id)].header("sqlstate") for c in culprits] == [
        "54000",
        "22021",
        "22021",
        "54000",
    ]
    # Each names its own source message (partition, offset), the batch message included.
    sources = {
        (letter.header("source_partition"), letter.header("source_offset")) for letter in letters
    }
    assert len(sources) == 4


async def test_a_record_psycopg_cannot_encode_is_isolated_not_fatal(
    consumer_settings: ConsumerSettings,
) -> None:
    """A record from another producer whose time has no zone: msgspec decodes it, psycopg
    cannot encode it. It goes alone to the dead-letter topic; its neighbours are stored and
    the consumer lives on."""
    import datetime as dt

    import msgspec

    settings = consumer_settings
    before, after = make_record(site_id="before"), make_record(site_id="after")
    naive_time = dt.datetime(2025, 11, 12, 19, 30)  # no tzinfo
    naive = [uuid.uuid4().bytes, "naive-site", "page_view", "/", "u", naive_time, naive_time]
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
    await producer.start()
    try:
        for value, schema in [
            (encode_record(before), SCHEMA_EVENT_V1),
            (msgspec.msgpack.encode([naive]), SCHEMA_EVENT_BATCH_V1),
            (encode_record(after), SCHEMA_EVENT_V1),
        ]:
            await producer.send_and_wait(
                settings.events_topic, value, partition=0, headers=[(SCHEMA_HEADER, schema)]
            )
    finally:
        await producer.stop()
    url = settings.database_url
    async with running_consumer(settings):
        await wait_for(lambda: stored_event_count(url) == 2, timeout_s=30, what="2 neighbours")
        entries = await dead_letters(settings, 1)
    assert stored_ids(url) == {before.event_id, after.event_id}
    assert entries[0].site_id == "naive-site"
    assert "encode" in (entries[0].header("reason") or "")
