"""The reconcile command against a real broker and database: every kind of event is filed."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from aiokafka import AIOKafkaProducer

from consumer import reconcile as reconcile_command
from consumer.reconcile import reconcile
from consumer.settings import ConsumerSettings
from core.events import (
    SCHEMA_EVENT_BATCH_V1,
    SCHEMA_EVENT_V1,
    SCHEMA_HEADER,
    encode_record,
    encode_records,
)
from tests.support import make_record, running_consumer, stored_event_count, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


async def _produce(
    settings: ConsumerSettings, topic: str, value: bytes, headers: list[tuple[str, bytes]]
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=b"site-r", headers=headers)
    finally:
        await producer.stop()


async def test_stored_pending_dead_lettered_and_missing_are_told_apart(
    consumer_settings: ConsumerSettings,
) -> None:
    settings = consumer_settings
    url = settings.database_url
    stored = [make_record(site_id="site-r", user_id=f"u{i}") for i in range(20)]
    await _produce(
        settings,
        settings.events_topic,
        encode_records(stored),
        [(SCHEMA_HEADER, SCHEMA_EVENT_BATCH_V1)],
    )
    async with running_consumer(settings):
        await wait_for(lambda: stored_event_count(url) == 20, timeout_s=30, what="20 rows")

    assert (await reconcile(settings)).summary().endswith("missing 0")

    # An undecodable message, dead-lettered whole by the consumer.
    await _produce(settings, settings.events_topic, b"\xc1garbage", [(SCHEMA_HEADER, b"event.v1")])
    # Events the consumer has not reached yet: pending, not missing.
    await _produce(
        settings,
        settings.events_topic,
        encode_record(make_record(site_id="site-r")),
        [(SCHEMA_HEADER, SCHEMA_EVENT_V1)],
    )
    report = await reconcile(settings)
    assert (report.stored, report.pending, len(report.missing)) == (20, 2, 0)

    async with running_consumer(settings):
        await wait_for(lambda: stored_event_count(url) == 21, timeout_s=30, what="21 rows")
    report = await reconcile(settings)
    assert (report.stored, report.dead_lettered, report.pending) == (21, 1, 0)
    assert report.missing == []

    # A stored row that disappears (what a lost write would look like) is reported.
    lost = stored[3]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DELETE FROM events WHERE event_id = %s", (lost.event_id,))
    report = await reconcile(settings)
    assert [m.event_id for m in report.missing] == [lost.event_id]
    assert report.missing[0].site_id == "site-r"


async def test_the_command_exits_1_when_something_is_missing(
    consumer_settings: ConsumerSettings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = consumer_settings
    record = make_record(site_id="site-r", event_id=uuid.uuid4())
    await _produce(
        settings, settings.events_topic, encode_record(record), [(SCHEMA_HEADER, SCHEMA_EVENT_V1)]
    )
    async with running_consumer(settings):
        await wait_for(
            lambda: stored_event_count(settings.database_url) == 1, timeout_s=30, what="1 row"
        )
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "DATABASE_URL": settings.database_url,
        "EVENTS_TOPIC": settings.events_topic,
        "DLQ_TOPIC": settings.dlq_topic,
        "CONSUMER_GROUP": settings.group_id,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # main() runs its own event loop: run it in a worker thread of this test's loop.
    import asyncio

    assert await asyncio.to_thread(reconcile_command.main, []) == 0
    assert "missing 0" in capsys.readouterr().out
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM events")
    assert await asyncio.to_thread(reconcile_command.main, []) == 1
    out = capsys.readouterr().out
    assert "missing 1" in out and str(record.event_id) in out


async def test_a_retry_kept_on_the_neighbouring_day_counts_as_stored(
    consumer_settings: ConsumerSettings,
) -> None:
    """A retry of an emitter's id dated across midnight is left out by the batch statement
    (the first copy is stored the day before); reconcile finds it there."""
    import datetime as dt

    settings = consumer_settings
    shared = uuid.uuid4()
    midnight = dt.datetime(2026, 12, 6, tzinfo=dt.UTC)
    first = make_record(
        site_id="site-r",
        event_id=shared,
        emitter_id=True,
        timestamp=midnight - dt.timedelta(seconds=1),
    )
    retry = make_record(
        site_id="site-r",
        event_id=shared,
        emitter_id=True,
        timestamp=midnight + dt.timedelta(seconds=2),
    )
    for record in (first, retry):
        await _produce(
            settings,
            settings.events_topic,
            encode_record(record),
            [(SCHEMA_HEADER, SCHEMA_EVENT_V1)],
        )
    async with running_consumer(settings):
        await wait_for(lambda: reconcile_pending_is_zero(settings), timeout_s=30, what="both read")
    assert stored_event_count(settings.database_url) == 1
    report = await reconcile(settings)
    assert (report.stored, report.missing) == (2, [])


async def reconcile_pending_is_zero(settings: ConsumerSettings) -> bool:
    return (await reconcile(settings)).pending == 0
