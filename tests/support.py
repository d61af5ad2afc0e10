"""Helpers shared by integration, end-to-end and fault tests."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from consumer.batch import to_row
from consumer.deadletter import DeadLetters, partitions_of
from consumer.loop import ConsumerLoop, make_kafka_consumer
from consumer.metrics import ConsumerStats
from consumer.rollups import checks
from consumer.rollups.statements import statement
from consumer.schema import MIGRATIONS_DIR
from consumer.sessions_store import store_visits
from consumer.settings import ConsumerSettings
from consumer.write import COPY_STAGING, COPY_TYPES, INSERT_AND_ROLL_UP, STAGING_DDL, Writer
from core.events import (
    CONTEXT_FIELDS,
    SCHEMA_EVENT_V1,
    SCHEMA_HEADER,
    EventRecord,
    encode_record,
)
from core.plausible_csv import IMPORTED_TABLES
from core.settings import VISIT_TIMEOUT_SECONDS


def quick_consumer_settings(
    bootstrap: str, database_url: str, topic: str, group_id: str, partitions: int
) -> ConsumerSettings:
    """A consumer for tests: short batch age, session and backoff, so that tests are quick."""
    return ConsumerSettings(
        kafka_bootstrap_servers=bootstrap,
        database_url=database_url,
        events_topic=topic,
        dlq_topic=f"{topic}.dlq",
        group_id=group_id,
        topic_partitions=partitions,
        max_batch_age_s=0.2,
        session_timeout_ms=6000,
        retry_initial_s=0.1,
        retry_max_s=1.0,
    )


def make_record(**changes: Any) -> EventRecord:
    fields: dict[str, Any] = {
        "event_id": uuid.uuid4(),
        "site_id": "site-a",
        "event_type": "page_view",
        "path": "/",
        "user_id": "user-1",
        "timestamp": datetime(2025, 11, 12, 19, 30, 1, tzinfo=UTC),
        "received_at": datetime(2025, 11, 12, 19, 30, 2, tzinfo=UTC),
    }
    fields.update(changes)
    return EventRecord(**fields)


# Every visit's realtime key, whatever path wrote it (late events, moved starts, isolation).
STALE_BUCKETS = (
    "SELECT count(*) FROM visits WHERE last_bucket IS DISTINCT FROM"
    " date_bin('15 minutes', last_at, timestamptz '2000-01-01 00:00+00')"
)


def assert_rollups_match_raw_rows(database_url: str) -> None:
    """Every rollup of the registry (consumer/rollups) equals its recount from the raw events
    (its `expected` and `stored` statements): nothing lost, nothing twice; and every visit
    carries its last event's quarter hour."""
    with psycopg.connect(database_url) as conn:
        for table, recount, rollup in checks():
            expected = conn.execute(recount).fetchall()
            actual = conn.execute(rollup).fetchall()
            assert actual == expected, f"{table} differs from a recount of the raw events"
        stale = conn.execute(STALE_BUCKETS).fetchone()
        assert stale == (0,), "visits whose last_bucket is not their last event's quarter hour"


def assert_visits_match_events(database_url: str, timeout_s: float = 1800) -> None:
    """The stored visits equal a plain sessionization of the stored events sorted by time
    (the oracle `visits.expected`): what the consumer must build from events that came in
    order for each visitor, however they were batched, replayed or moved between replicas."""
    with psycopg.connect(database_url) as conn:
        expected = conn.execute(statement("visits.expected"), {"timeout_s": timeout_s}).fetchall()
        actual = conn.execute(statement("visits.stored")).fetchall()
    assert actual == expected, "visits differ from a sessionization of the stored events"


COLUMN_RENAME = re.compile(r"^ALTER TABLE (\w+) RENAME COLUMN (\w+) TO (\w+);", re.M)
NAME_RENAME = re.compile(r"^ALTER (TABLE|INDEX) (\w+) RENAME TO (\w+);", re.M)


def unversion(conn: psycopg.Connection[Any]) -> None:
    """Turns a current database into one of the releases before versions were recorded: no
    schema_migrations, none of what later migrations add (the event context of 0005, the
    visitor salts of 0006, the visits of 0007, the imports of 0008, the dimension pairs of
    0009, the sealed visit months of 0010, the other event types' quarter hours of 0012, the
    hourly paths of 0013, the quarter-hour context of 0014 and visit dimensions (with its
    function) of 0015, the answer versions of 0016 and 0020, the visits' bucket trigger of 0018),
    the key of quarter_hour_paths before 0017, and the names that migration 0004 changed as they
    were then."""
    conn.execute("DROP TABLE schema_migrations")
    conn.execute("DROP FUNCTION visit_dimension_values(visits)")
    conn.execute("DROP TRIGGER visits_last_bucket ON visits")
    conn.execute("DROP FUNCTION visits_last_bucket()")
    conn.execute(
        "DROP TABLE daily_dimensions, daily_props, visitor_salts, visits, quarter_hour_visits,"
        " daily_visit_dimensions, daily_dimension_pairs, sealed_monthly_visit_dimensions,"
        " quarter_hour_event_types, quarter_hour_event_paths, hourly_paths,"
        " quarter_hour_dimensions, quarter_hour_visit_dimensions, site_versions,"
        " site_day_versions, data_epoch, imports, " + ", ".join(IMPORTED_TABLES)
    )
    conn.execute(
        "ALTER TABLE events " + ", ".join(f"DROP COLUMN {name}" for name in CONTEXT_FIELDS)
    )
    conn.execute(
        "ALTER TABLE quarter_hour_paths DROP CONSTRAINT quarter_hour_paths_pkey,"
        " ADD PRIMARY KEY (site_id, bucket, path)"
    )
    renames = (MIGRATIONS_DIR / "0004_names_agree.sql").read_text()
    for kind, old, new in NAME_RENAME.findall(renames):
        conn.execute(f"ALTER {kind} {new} RENAME TO {old}")
    for table, old, new in COLUMN_RENAME.findall(renames):
        table = "daily_users" if table == "daily_visitor_ids" else table
        conn.execute(f"ALTER TABLE {table} RENAME COLUMN {new} TO {old}")


def scalar(database_url: str, query: str, params: tuple[Any, ...] = ()) -> Any:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(query, params).fetchone()
        return row[0] if row else None


async def wait_for(
    condition: Callable[[], Awaitable[bool] | bool], *, timeout_s: float, what: str
) -> None:
    """Polls `condition` until it holds; fails with `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.1)


def stored_event_count(database_url: str) -> int:
    return int(scalar(database_url, "SELECT count(*) FROM events"))


@contextlib.asynccontextmanager
async def running_consumer(settings: ConsumerSettings) -> AsyncIterator[ConsumerStats]:
    """Runs one in-process consumer replica until the block ends, then stops it cleanly."""
    stats = ConsumerStats()
    consumer = make_kafka_consumer(settings)
    writer = Writer.for_replica(settings)
    dead_letters = DeadLetters(
        settings.kafka_bootstrap_servers, settings.dlq_topic, settings.events_topic
    )
    await dead_letters.start()
    await consumer.start()
    stop = asyncio.Event()
    loop = ConsumerLoop(settings, consumer, writer, dead_letters, stats)
    task = asyncio.create_task(loop.run(stop), name="test-consumer")
    try:
        yield stats
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)
        await consumer.stop()
        await dead_letters.stop()
        await writer.close()


async def write_without_commit(
    conn: psycopg.AsyncConnection[Any], records: list[EventRecord]
) -> None:
    """A batch's statements in the caller's open transaction: its rows, rollups and visits
    written, its locks held, nothing committed (what an operator's command meets mid-batch)."""
    await conn.execute(STAGING_DDL)
    async with conn.cursor() as cur:
        async with cur.copy(COPY_STAGING) as copy:
            copy.set_types(COPY_TYPES)
            for record in records:
                await copy.write_row(to_row(record))
        await cur.execute(INSERT_AND_ROLL_UP)
        await store_visits(cur, timedelta(seconds=VISIT_TIMEOUT_SECONDS.default))


async def write_batch(database_url: str, records: list[EventRecord], partition: int = 0) -> None:
    """One batch, as the consumer writes it, of a partition not written before."""
    writer = Writer(database_url, "g", "events")
    try:
        rows = [to_row(r) for r in records]
        await writer.write(rows, {partition: len(records)}, {})
    finally:
        await writer.close()


LOCK_WAITERS = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND wait_event_type = 'Lock'
  AND cardinality(pg_blocking_pids(pid)) > 0 AND pid <> pg_backend_pid()
"""


async def started_and_waiting(
    work: Awaitable[Any], database_url: str, timeout_s: float = 30
) -> asyncio.Task[Any]:
    """Starts `work` and returns once a session of the database waits for a lock another
    holds (the caller's), the work still running; the caller then lets go and awaits it.
    Watched rather than a fixed pause, which a busy machine could pass before the work got
    there."""
    task = asyncio.ensure_future(work)
    deadline = time.monotonic() + timeout_s
    try:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            while True:
                if task.done():
                    raise AssertionError(
                        f"the work ended without waiting for the caller's lock: {task.exception()}"
                    )
                row = await (await conn.execute(LOCK_WAITERS)).fetchone()
                if row and row[0]:
                    return task
                assert time.monotonic() < deadline, f"no session waited for a lock in {timeout_s}s"
                await asyncio.sleep(0.02)
    except BaseException:
        task.cancel()
        raise


async def topic_end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """The offset after the last message of each partition of `topic`."""
    tps = [TopicPartition(topic, p) for p in await partitions_of(bootstrap, topic)]
    assert tps, f"topic {topic} has no partitions"
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await reader.start()
    try:
        ends = await reader.end_offsets(tps)
    finally:
        await reader.stop()
    return {tp.partition: int(offset) for tp, offset in ends.items()}


async def produce_events(settings: ConsumerSettings, records: list[EventRecord]) -> None:
    """Each record as its own event.v1 message, keyed by its site, in order; waits for the
    broker's acks."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        for record in records:
            await producer.send(
                settings.events_topic,
                encode_record(record),
                key=record.site_id.encode(),
                headers=[(SCHEMA_HEADER, SCHEMA_EVENT_V1)],
            )
        await producer.flush()
    finally:
        await producer.stop()
