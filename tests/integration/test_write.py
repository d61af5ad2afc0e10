"""The batch transaction against a real PostgreSQL: dedupe, rollups, offsets, fencing."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from consumer.batch import to_row
from consumer.write import Fenced, RowsRejected, Writer
from tests.support import assert_rollups_match_raw_rows, make_record, scalar

pytestmark = pytest.mark.postgres


@pytest.fixture
async def writer(database_url: str):  # type: ignore[no-untyped-def]
    w = Writer(database_url, "g", "events")
    yield w
    await w.close()


async def test_rows_rollups_and_offsets_are_stored_together(
    writer: Writer, database_url: str
) -> None:
    records = [
        make_record(user_id="u1", path="/a"),
        make_record(user_id="u1", path="/a"),
        make_record(user_id="u2", path="/b"),
        make_record(user_id="u3", path="/a", event_type="click"),
    ]
    inserted = await writer.write([to_row(r) for r in records], {0: 4}, {})
    assert inserted == 4
    day = date(2025, 11, 12)
    assert (
        scalar(
            database_url,
            "SELECT (page_views, unique_users, events)::text FROM daily_stats "
            "WHERE site_id = %s AND day = %s",
            ("site-a", day),
        )
        == "(3,2,4)"
    )
    assert scalar(database_url, "SELECT views FROM daily_paths WHERE path = '/a'") == 2
    assert await writer.load_offsets([0, 1]) == {0: 4, 1: None}
    assert_rollups_match_raw_rows(database_url)


async def test_redelivered_rows_count_once(writer: Writer, database_url: str) -> None:
    rows = [to_row(make_record(user_id=f"u{i}")) for i in range(10)]
    assert await writer.write(rows, {0: 10}, {}) == 10
    # The same events again (a client retry, or a replay after a crash) add nothing.
    assert await writer.write(rows, {0: 20}, {0: 10}) == 0
    assert scalar(database_url, "SELECT page_views FROM daily_stats") == 10
    assert scalar(database_url, "SELECT unique_users FROM daily_stats") == 10
    assert_rollups_match_raw_rows(database_url)


async def test_duplicates_inside_one_batch_count_once(writer: Writer, database_url: str) -> None:
    row = to_row(make_record())
    assert await writer.write([row, row, row], {0: 3}, {}) == 1
    assert scalar(database_url, "SELECT page_views FROM daily_stats") == 1


async def test_a_replica_that_lost_the_partition_is_fenced(
    writer: Writer, database_url: str
) -> None:
    await writer.write([to_row(make_record())], {0: 1}, {})
    # A stale replica still believes partition 0 stands at nothing stored: it must not write.
    with pytest.raises(Fenced):
        await writer.write([to_row(make_record(path="/stale"))], {0: 2}, {0: None})
    with pytest.raises(Fenced):
        await writer.write([to_row(make_record(path="/stale"))], {0: 2}, {0: 0})
    assert scalar(database_url, "SELECT count(*) FROM events") == 1
    assert scalar(database_url, "SELECT count(*) FROM daily_paths WHERE path = '/stale'") == 0
    assert await writer.load_offsets([0]) == {0: 1}


async def test_new_days_get_their_own_partitions(writer: Writer, database_url: str) -> None:
    days = [datetime(2024, 2, 29, 23, 59, tzinfo=UTC), datetime(2024, 3, 1, 0, 0, tzinfo=UTC)]
    await writer.write([to_row(make_record(timestamp=ts)) for ts in days], {0: 2}, {})
    partitions = scalar(
        database_url,
        "SELECT array_agg(c.relname::text ORDER BY 1) FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'events'::regclass",
    )
    assert partitions == ["events_20240229", "events_20240301"]
    dropped = await writer.drop_partitions_before(date(2024, 3, 1))
    assert dropped == ["events_20240229"]
    assert scalar(database_url, "SELECT count(*) FROM events") == 1


async def test_rows_the_database_refuses_raise_rows_rejected(
    writer: Writer, database_url: str
) -> None:
    with pytest.raises(RowsRejected):
        await writer.write([to_row(make_record(path="/nul\x00"))], {0: 1}, {})
    assert scalar(database_url, "SELECT count(*) FROM consumer_offsets") == 0
