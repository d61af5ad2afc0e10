"""An id the emitter chose counts once per site, even when a retry is dated on another day.

The time of a retry is corrected anew (`sent_at`) or clamped to its own receipt, so a retry
around midnight can land on the neighbouring day; the batch statement looks there too."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from consumer.batch import to_row
from consumer.write import Writer
from core.events import EventRecord, decode_event, to_record
from tests.support import assert_rollups_match_raw_rows, make_record, scalar

pytestmark = [pytest.mark.postgres]

MIDNIGHT = dt.datetime(2026, 12, 6, tzinfo=dt.UTC)
SECOND = dt.timedelta(seconds=1)


def retried(event_id: uuid.UUID, site: str = "s") -> tuple[EventRecord, EventRecord]:
    """One body sent just before midnight with `sent_at`, and its retry 3 s later: the API
    corrects each by its own receipt time, so they fall on two days."""
    body = (
        f'{{"site_id":"{site}","event_type":"page_view","path":"/","user_id":"u",'
        f'"event_id":"{event_id}","timestamp":"{(MIDNIGHT - SECOND).isoformat()}",'
        f'"sent_at":"{(MIDNIGHT - 10 * SECOND).isoformat()}"}}'
    ).encode()
    event = decode_event(body)
    first = to_record(event, event_id, MIDNIGHT - 9.9 * SECOND)
    retry = to_record(event, event_id, MIDNIGHT - 7 * SECOND + 3 * SECOND)
    return first, retry


def test_a_retry_near_midnight_is_dated_on_the_next_day() -> None:
    first, retry = retried(uuid.uuid4())
    assert first.timestamp.date() != retry.timestamp.date()  # what the consumer must absorb
    assert first.emitter_id and retry.emitter_id


async def write(url: str, records: list[EventRecord], offset: int) -> int:
    writer = Writer(url, "g", "events")
    try:
        expected = None if offset == len(records) else offset - len(records)
        return await writer.write([to_row(r) for r in records], {0: offset}, {0: expected})
    finally:
        await writer.close()


async def test_a_retry_on_the_next_day_counts_once_in_another_batch(database_url: str) -> None:
    first, retry = retried(uuid.uuid4())
    assert await write(database_url, [first], 1) == 1
    assert await write(database_url, [retry], 2) == 0
    assert scalar(database_url, "SELECT sum(page_views) FROM daily_stats") == 1
    assert_rollups_match_raw_rows(database_url)


async def test_a_retry_on_the_day_before_counts_once(database_url: str) -> None:
    first, retry = retried(uuid.uuid4())
    assert await write(database_url, [retry], 1) == 1
    assert await write(database_url, [first], 2) == 0
    assert scalar(database_url, "SELECT count(*) FROM events") == 1


async def test_both_in_one_batch_count_once(database_url: str) -> None:
    first, retry = retried(uuid.uuid4())
    assert await write(database_url, [first, retry], 2) == 1
    assert scalar(database_url, "SELECT day FROM events") == first.timestamp.date()
    assert_rollups_match_raw_rows(database_url)


async def test_the_same_id_on_two_sites_counts_for_each(database_url: str) -> None:
    event_id = uuid.uuid4()
    a_first, _ = retried(event_id, "site-a")
    _, b_retry = retried(event_id, "site-b")
    assert await write(database_url, [a_first, b_retry], 2) == 2


async def test_ids_the_api_assigned_are_not_looked_up_on_other_days(database_url: str) -> None:
    """A UUIDv7 the API assigns is new for each request: no neighbour lookup is needed, and
    two such rows (were they ever equal) are left to the day's key alone."""
    shared = uuid.uuid4()
    on_day = make_record(event_id=shared, timestamp=MIDNIGHT - SECOND)
    next_day = make_record(event_id=shared, timestamp=MIDNIGHT + SECOND)
    assert not on_day.emitter_id
    assert await write(database_url, [on_day, next_day], 2) == 2
