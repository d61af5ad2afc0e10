"""Retention's record of dropped days against a real PostgreSQL: a dropped day is never counted
again (replays, retries, a consumer that still believes the partition exists), rebuild leaves
it alone, partition DDL waits a bounded time (and a new day's none for batches or questions),
and an earlier database learns its dropped days."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime

import psycopg
import pytest

from consumer.batch import to_row
from consumer.rebuild import main as rebuild_main
from consumer.rebuild import rebuild_rollups
from consumer.retention import apply_retention
from consumer.schema import apply_schema
from consumer.write import RowsRejected, Writer
from core.events import EventRecord
from tests.support import assert_rollups_match_raw_rows, make_record, scalar, unversion, write_batch

pytestmark = pytest.mark.postgres

TODAY = date(2025, 11, 12)


def on_day(day: int, **changes: object) -> EventRecord:
    return make_record(timestamp=datetime(2025, 11, day, 12, tzinfo=UTC), **changes)


def events_of(database_url: str, day: date) -> int:
    return int(
        scalar(
            database_url, "SELECT coalesce(sum(events), 0) FROM daily_stats WHERE day = %s", (day,)
        )
    )


def dropped_days(database_url: str) -> list[date]:
    return list(
        scalar(database_url, "SELECT coalesce(array_agg(day ORDER BY day), '{}') FROM dropped_days")
    )


async def test_a_dropped_day_is_recorded_and_its_replays_are_refused(database_url: str) -> None:
    old = [on_day(10, user_id=f"u{i}") for i in range(3)]
    await write_batch(database_url, [*old, on_day(11), on_day(12)], partition=0)
    assert await apply_retention(database_url, 2, TODAY) == ["events_20251110"]
    assert dropped_days(database_url) == [date(2025, 11, 10)]

    # The partition function refuses the day, as the data's fault (class 22).
    with (
        psycopg.connect(database_url, autocommit=True) as conn,
        pytest.raises(psycopg.errors.InvalidParameterValue) as refused,
    ):
        conn.execute("SELECT ensure_events_partition('2025-11-10')")
    assert refused.value.sqlstate == "22023"
    assert refused.value.diag.message_primary == (
        "day 2025-11-10 was dropped by retention; events for it are refused"
    )

    # The same events replayed (a consumer group reset, a DLQ replay) and a retry, through the
    # consumer's own statements: refused, nothing stored, nothing counted again.
    with pytest.raises(RowsRejected, match="dropped by retention"):
        await write_batch(database_url, old, partition=1)
    with pytest.raises(RowsRejected, match="dropped by retention"):
        await write_batch(database_url, [on_day(10, user_id="late")], partition=2)
    assert events_of(database_url, date(2025, 11, 10)) == 3
    assert scalar(database_url, "SELECT to_regclass('events_20251110')") is None
    assert scalar(database_url, "SELECT count(*) FROM consumer_offsets") == 1

    # Days retention did not drop still get their partitions.
    await write_batch(database_url, [on_day(13)], partition=3)
    assert events_of(database_url, date(2025, 11, 13)) == 1


async def test_a_consumer_that_saw_the_partition_before_the_drop_cannot_count_it_again(
    database_url: str,
) -> None:
    writer = Writer(database_url, "g", "events")
    try:
        event = on_day(10)
        assert await writer.write([to_row(event)], {0: 1}, {}) == 1
        await apply_retention(database_url, 2, TODAY)
        # This writer remembers that the day's partition existed; the row has nowhere to go.
        with pytest.raises(RowsRejected):
            await writer.write([to_row(event)], {0: 2}, {0: 1})
    finally:
        await writer.close()
    assert events_of(database_url, date(2025, 11, 10)) == 1


async def test_partition_ddl_waits_a_bounded_time_for_its_lock(database_url: str) -> None:
    await write_batch(database_url, [on_day(12)])
    with psycopg.connect(database_url) as holder:
        holder.execute("LOCK TABLE events IN SHARE MODE")  # as a CREATE INDEX on events would
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            with pytest.raises(psycopg.errors.LockNotAvailable):  # 55P03: retried by the consumer
                await conn.execute("SELECT ensure_events_partition('2025-11-13')")
    with psycopg.connect(database_url) as reader:
        reader.execute("SELECT count(*) FROM events")  # holds ACCESS SHARE until it ends
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            with pytest.raises(psycopg.errors.LockNotAvailable):
                await conn.execute("SELECT drop_events_partition('2025-11-12')")
    # Nothing half done: no partition made, the drop was not recorded, the day keeps its rows.
    assert scalar(database_url, "SELECT to_regclass('events_20251113')") is None
    assert dropped_days(database_url) == []
    assert scalar(database_url, "SELECT count(*) FROM events") == 1


async def test_a_new_day_does_not_wait_for_batches_or_questions(database_url: str) -> None:
    await write_batch(database_url, [on_day(12)])
    with (
        psycopg.connect(database_url) as batch,
        psycopg.connect(database_url) as question,
    ):
        # A batch in flight (ROW EXCLUSIVE on events) and a stats question (ACCESS SHARE),
        # both open: the day is made and attached beside them, not after them (before, this
        # waited the function's 5 s lock timeout and failed).
        batch.execute(
            "INSERT INTO events (day, event_id, site_id, event_type, path, user_id, event_time,"
            " received_at) SELECT day, gen_random_uuid(), site_id, event_type, path, user_id,"
            " event_time, received_at FROM events"
        )
        question.execute("SELECT count(*) FROM events")
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            await conn.execute("SELECT ensure_events_partition('2025-11-13')")
            await conn.execute(
                "INSERT INTO events (day, event_id, site_id, event_type, path, user_id,"
                " event_time, received_at) VALUES ('2025-11-13', gen_random_uuid(), 'a',"
                " 'page_view', '/', 'u', '2025-11-13 10:00+00', now())"
            )
        batch.commit()
    assert scalar(database_url, "SELECT count(*) FROM events") == 3
    assert (
        scalar(
            database_url,
            "SELECT count(*) FROM pg_inherits WHERE inhrelid = 'events_20251113'::regclass"
            " AND inhparent = 'events'::regclass",
        )
        == 1
    )
    settings = scalar(
        database_url,
        "SELECT array_agg(proname || ':' || array_to_string(proconfig, ',') ORDER BY proname) "
        "FROM pg_proc WHERE proname IN ('ensure_events_partition', 'drop_events_partition')",
    )
    assert settings == [
        "drop_events_partition:lock_timeout=5s",
        "ensure_events_partition:lock_timeout=5s",
    ]


async def recreated_after_retention(database_url: str) -> None:
    """A day dropped by retention that late events gave a partition again, as happened before
    dropped days were recorded: 3 events counted while retained, 1 late event since."""
    await write_batch(
        database_url, [*(on_day(10, user_id=f"u{i}") for i in range(3)), on_day(11), on_day(12)]
    )
    await apply_retention(database_url, 2, TODAY)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM dropped_days")
    await write_batch(database_url, [on_day(10, user_id="late")], partition=1)
    assert events_of(database_url, date(2025, 11, 10)) == 4
    assert scalar(database_url, "SELECT count(*) FROM events_20251110") == 1


async def test_schema_finds_the_dropped_days_of_an_earlier_database(database_url: str) -> None:
    await write_batch(database_url, [on_day(9)], partition=5)
    await recreated_after_retention(database_url)
    # The 9th and 10th were dropped; the 10th, the newest of them, came back with its late
    # event. The 11th and 12th are whole.
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT drop_events_partition('2025-11-09')")
        conn.execute("DROP TABLE dropped_days")  # the earlier layout: no record at all
        unversion(conn)  # earlier releases recorded no version

    await apply_schema(database_url)
    await apply_schema(database_url)  # and again: nothing left to do

    assert dropped_days(database_url) == [date(2025, 11, 9), date(2025, 11, 10)]
    with pytest.raises(RowsRejected, match="day 2025-11-10 was dropped by retention"):
        await write_batch(database_url, [on_day(10, user_id="later")], partition=2)
    assert events_of(database_url, date(2025, 11, 10)) == 4


async def test_rebuild_leaves_a_dropped_day_alone_even_with_a_partition(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    await recreated_after_retention(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO dropped_days (day) VALUES ('2025-11-10')")
        conn.execute("UPDATE daily_stats SET events = 99 WHERE day = '2025-11-11'")

    rebuilt = await rebuild_rollups(database_url, date(2025, 11, 9), date(2025, 11, 12))
    assert rebuilt.days == [date(2025, 11, 11), date(2025, 11, 12)]
    assert rebuilt.dropped == [date(2025, 11, 10)]
    assert events_of(database_url, date(2025, 11, 10)) == 4  # not replaced by a recount of 1
    assert events_of(database_url, date(2025, 11, 11)) == 1  # recounted

    monkeypatch.setenv("DATABASE_URL", database_url)
    argv = ["--from", "2025-11-09", "--to", "2025-11-12"]
    assert await asyncio.to_thread(rebuild_main, argv) == 0
    said = capsys.readouterr().out
    assert "recounted 2 days" in said
    assert "skipped 1 days dropped by retention (2025-11-10)" in said
    assert "skipped 1 days without raw events" in said  # the 9th: never stored


async def test_retention_then_replay_leaves_the_retained_days_exact(database_url: str) -> None:
    events = [on_day(d, user_id=f"u{d}") for d in (11, 12)]
    await write_batch(database_url, events)
    await apply_retention(database_url, 2, TODAY)  # nothing to drop yet
    await write_batch(database_url, events, partition=1)  # a replay of retained days
    assert_rollups_match_raw_rows(database_url)


async def test_retention_deletes_the_answer_versions_of_the_days_it_drops(
    database_url: str,
) -> None:
    await write_batch(database_url, [on_day(d, user_id=f"u{d}") for d in (10, 11, 12)])
    stamped = "SELECT array_agg(day ORDER BY day) FROM site_day_versions"
    assert scalar(database_url, stamped) == [date(2025, 11, d) for d in (10, 11, 12)]
    await apply_retention(database_url, 2, TODAY)  # keeps the 11th and 12th
    assert scalar(database_url, stamped) == [date(2025, 11, 11), date(2025, 11, 12)]
    # A version left of a day with nothing else to drop (its partition and visits gone):
    # deleting it can lower a range's version, so the epoch moves with it.
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO site_day_versions VALUES ('site-a', '2025-11-09', 1)")
    epoch = scalar(database_url, "SELECT epoch FROM data_epoch")
    await apply_retention(database_url, 2, TODAY)
    assert scalar(database_url, stamped) == [date(2025, 11, 11), date(2025, 11, 12)]
    assert scalar(database_url, "SELECT epoch FROM data_epoch") == epoch + 1
