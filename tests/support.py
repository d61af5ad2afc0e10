"""Helpers shared by integration, end-to-end and fault tests."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import psycopg

from consumer.batch import to_row
from consumer.deadletter import DeadLetters
from consumer.loop import ConsumerLoop, make_kafka_consumer
from consumer.metrics import ConsumerStats
from consumer.settings import ConsumerSettings
from consumer.write import COPY_STAGING, COPY_TYPES, INSERT_AND_ROLL_UP, STAGING_DDL, Writer
from core.events import EventRecord

# Rollups recomputed from the raw rows; a correct consumer's rollups equal these exactly.
RECOUNT_DAILY = """
SELECT site_id, day, count(*) FILTER (WHERE event_type = 'page_view'),
       count(DISTINCT user_id) FILTER (WHERE event_type = 'page_view'), count(*)
FROM events GROUP BY 1, 2 ORDER BY 1, 2
"""
ROLLUP_DAILY = """
SELECT site_id, day, page_views, unique_users, events FROM daily_stats
WHERE events > 0 ORDER BY 1, 2
"""
RECOUNT_PATHS = """
SELECT site_id, day, path, count(*) FROM events WHERE event_type = 'page_view'
GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
"""
ROLLUP_PATHS = "SELECT site_id, day, path, views FROM daily_paths ORDER BY 1, 2, 3"
RECOUNT_HOURLY = """
SELECT site_id, date_trunc('hour', event_time, 'UTC'),
       count(*) FILTER (WHERE event_type = 'page_view'), count(*),
       coalesce(hll_cardinality(hll_add_agg(hll_hash_text(user_id))
                FILTER (WHERE event_type = 'page_view')), 0)
FROM events GROUP BY 1, 2 ORDER BY 1, 2
"""
ROLLUP_HOURLY = """
SELECT site_id, hour, page_views, events, hll_cardinality(visitors)
FROM hourly_stats ORDER BY 1, 2
"""
RECOUNT_USERS = """
SELECT DISTINCT site_id, day, user_id FROM events WHERE event_type = 'page_view' ORDER BY 1, 2, 3
"""
ROLLUP_USERS = "SELECT site_id, day, user_id FROM daily_users ORDER BY 1, 2, 3"
# Sketch rollups: the union of the stored sketches has the same registers as a sketch built
# from the raw rows in one pass, so their cardinalities are equal whatever the set size.
_BUCKET = "date_bin('15 minutes', event_time, timestamptz '2000-01-01 00:00+00')"
_SKETCH = "hll_cardinality(hll_add_agg(hll_hash_text(user_id)))"
RECOUNT_DAILY_VISITORS = f"""
SELECT site_id, day, {_SKETCH} FROM events WHERE event_type = 'page_view'
GROUP BY 1, 2 ORDER BY 1, 2
"""
ROLLUP_DAILY_VISITORS = """
SELECT site_id, day, hll_cardinality(visitors) FROM daily_visitors ORDER BY 1, 2
"""
RECOUNT_QUARTER_HOURS = f"""
SELECT site_id, {_BUCKET}, count(*) FILTER (WHERE event_type = 'page_view'), count(*),
       coalesce(hll_cardinality(hll_add_agg(hll_hash_text(user_id))
                FILTER (WHERE event_type = 'page_view')), 0)
FROM events GROUP BY 1, 2 ORDER BY 1, 2
"""
ROLLUP_QUARTER_HOURS = """
SELECT site_id, bucket, page_views, events, hll_cardinality(visitors)
FROM quarter_hour_stats ORDER BY 1, 2
"""
RECOUNT_QUARTER_HOUR_PATHS = f"""
SELECT site_id, {_BUCKET}, path, count(*), {_SKETCH}
FROM events WHERE event_type = 'page_view' GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
"""
ROLLUP_QUARTER_HOUR_PATHS = """
SELECT site_id, bucket, path, views, hll_cardinality(visitors)
FROM quarter_hour_paths ORDER BY 1, 2, 3
"""
RECOUNT_DAILY_DETAILS = f"""
SELECT site_id, day, event_type, path, count(*), {_SKETCH}
FROM events GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
"""
ROLLUP_DAILY_DETAILS = """
SELECT site_id, day, event_type, path, events, hll_cardinality(users)
FROM daily_details ORDER BY 1, 2, 3, 4
"""
RECOUNT_EVENT_TYPES = f"""
SELECT site_id, day, event_type, count(*), {_SKETCH}
FROM events GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
"""
ROLLUP_EVENT_TYPES = """
SELECT site_id, day, event_type, events, hll_cardinality(users)
FROM daily_event_types ORDER BY 1, 2, 3
"""
RECOUNT_MONTHLY_PATHS = """
SELECT site_id, date_trunc('month', day)::date, path, count(*) FROM events
WHERE event_type = 'page_view' GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
"""
ROLLUP_MONTHLY_PATHS = "SELECT site_id, month, path, views FROM monthly_paths ORDER BY 1, 2, 3"

# The rollups of the sites' configured zones, recounted by local day of the raw events.
_LOCAL = "(e.event_time AT TIME ZONE z.timezone)::date"
_LOCAL_EVENTS = "FROM events e JOIN site_zones z ON z.site_id = e.site_id"
RECOUNT_LOCAL_DAILY = f"""
SELECT e.site_id, z.timezone, {_LOCAL}, count(*) FILTER (WHERE event_type = 'page_view'),
       count(*), coalesce(hll_cardinality(hll_add_agg(hll_hash_text(user_id))
                          FILTER (WHERE event_type = 'page_view')), 0)
{_LOCAL_EVENTS} GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
"""
ROLLUP_LOCAL_DAILY = """
SELECT site_id, timezone, day, page_views, events, hll_cardinality(visitors)
FROM local_daily_stats ORDER BY 1, 2, 3
"""
RECOUNT_LOCAL_PATHS = f"""
SELECT e.site_id, z.timezone, {_LOCAL}, path, count(*), {_SKETCH}
{_LOCAL_EVENTS} WHERE event_type = 'page_view' GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
"""
ROLLUP_LOCAL_PATHS = """
SELECT site_id, timezone, day, path, views, hll_cardinality(visitors)
FROM local_daily_paths ORDER BY 1, 2, 3, 4
"""
RECOUNT_LOCAL_MONTHLY_PATHS = f"""
SELECT e.site_id, z.timezone, date_trunc('month', {_LOCAL})::date, path, count(*)
{_LOCAL_EVENTS} WHERE event_type = 'page_view' GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
"""
ROLLUP_LOCAL_MONTHLY_PATHS = """
SELECT site_id, timezone, month, path, views FROM local_monthly_paths ORDER BY 1, 2, 3, 4
"""
# Page views of the days before the watermark, per UTC month and per local month of each kept
# zone (consumer/seal.py).
_SEALED = "(SELECT sealed_before FROM sealed_days)"
RECOUNT_SEALED_MONTHS = f"""
SELECT site_id, 'UTC', date_trunc('month', day)::date AS month, path, count(*), {_SKETCH}
FROM events WHERE event_type = 'page_view' AND day < {_SEALED} GROUP BY 1, 2, 3, 4
UNION ALL
SELECT e.site_id, z.timezone, date_trunc('month', {_LOCAL})::date, path, count(*), {_SKETCH}
{_LOCAL_EVENTS} WHERE event_type = 'page_view' AND {_LOCAL} < {_SEALED} GROUP BY 1, 2, 3, 4
ORDER BY 1, 2, 3, 4
"""
ROLLUP_SEALED_MONTHS = """
SELECT site_id, timezone, month, path, views, hll_cardinality(visitors)
FROM sealed_monthly_paths ORDER BY 1, 2, 3, 4
"""
RECOUNT_SEALED_EVENT_TYPES = f"""
SELECT site_id, date_trunc('month', day)::date, event_type, count(*), {_SKETCH}
FROM events WHERE day < {_SEALED} GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
"""
ROLLUP_SEALED_EVENT_TYPES = """
SELECT site_id, month, event_type, events, hll_cardinality(users)
FROM sealed_monthly_event_types ORDER BY 1, 2, 3
"""


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


def assert_rollups_match_raw_rows(database_url: str) -> None:
    """Every rollup equals a recount from the raw events: nothing lost, nothing twice."""
    with psycopg.connect(database_url) as conn:
        for recount, rollup in [
            (RECOUNT_DAILY, ROLLUP_DAILY),
            (RECOUNT_PATHS, ROLLUP_PATHS),
            (RECOUNT_HOURLY, ROLLUP_HOURLY),
            (RECOUNT_USERS, ROLLUP_USERS),
            (RECOUNT_DAILY_VISITORS, ROLLUP_DAILY_VISITORS),
            (RECOUNT_QUARTER_HOURS, ROLLUP_QUARTER_HOURS),
            (RECOUNT_QUARTER_HOUR_PATHS, ROLLUP_QUARTER_HOUR_PATHS),
            (RECOUNT_DAILY_DETAILS, ROLLUP_DAILY_DETAILS),
            (RECOUNT_EVENT_TYPES, ROLLUP_EVENT_TYPES),
            (RECOUNT_MONTHLY_PATHS, ROLLUP_MONTHLY_PATHS),
            (RECOUNT_LOCAL_DAILY, ROLLUP_LOCAL_DAILY),
            (RECOUNT_LOCAL_PATHS, ROLLUP_LOCAL_PATHS),
            (RECOUNT_LOCAL_MONTHLY_PATHS, ROLLUP_LOCAL_MONTHLY_PATHS),
            (RECOUNT_SEALED_MONTHS, ROLLUP_SEALED_MONTHS),
            (RECOUNT_SEALED_EVENT_TYPES, ROLLUP_SEALED_EVENT_TYPES),
        ]:
            expected = conn.execute(recount).fetchall()
            actual = conn.execute(rollup).fetchall()
            assert actual == expected, f"rollup differs from recount:\n{rollup}"


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
    writer = Writer(settings.database_url, settings.group_id, settings.events_topic)
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
    """A batch's statement in the caller's open transaction: its rows and rollups written,
    its locks held, nothing committed (what an operator's command meets mid-batch)."""
    await conn.execute(STAGING_DDL)
    async with conn.cursor() as cur:
        async with cur.copy(COPY_STAGING) as copy:
            copy.set_types(COPY_TYPES)
            for record in records:
                await copy.write_row(to_row(record))
        await cur.execute(INSERT_AND_ROLL_UP)


async def write_batch(database_url: str, records: list[EventRecord], partition: int = 0) -> None:
    """One batch, as the consumer writes it, of a partition not written before."""
    writer = Writer(database_url, "g", "events")
    try:
        rows = [to_row(r) for r in records]
        await writer.write(rows, {partition: len(records)}, {})
    finally:
        await writer.close()


async def started_and_waiting(work: Awaitable[Any]) -> asyncio.Task[Any]:
    """Starts `work` and checks, half a second later, that it is still waiting (for a lock
    the caller holds); the caller then lets go and awaits it."""
    task = asyncio.ensure_future(work)
    await asyncio.sleep(0.5)
    assert not task.done()
    return task
