"""The batch transaction against a real PostgreSQL: dedupe, rollups, offsets, fencing."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime

import psycopg
import pytest

from consumer.batch import to_row
from consumer.retention import apply_retention
from consumer.write import DatabaseUnavailable, Fenced, RejectedRow, RowsRejected, Writer
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
            "SELECT (page_views, visitors, events)::text FROM daily_stats "
            "WHERE site_id = %s AND day = %s",
            ("site-a", day),
        )
        == "(3,2,4)"
    )
    assert scalar(database_url, "SELECT page_views FROM daily_paths WHERE path = '/a'") == 2
    assert await writer.load_offsets([0, 1]) == {0: 4, 1: None}
    assert_rollups_match_raw_rows(database_url)


async def test_redelivered_rows_count_once(writer: Writer, database_url: str) -> None:
    rows = [to_row(make_record(user_id=f"u{i}")) for i in range(10)]
    assert await writer.write(rows, {0: 10}, {}) == 10
    # The same events again (a client retry, or a replay after a crash) add nothing.
    assert await writer.write(rows, {0: 20}, {0: 10}) == 0
    assert scalar(database_url, "SELECT page_views FROM daily_stats") == 10
    assert scalar(database_url, "SELECT visitors FROM daily_stats") == 10
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
    # Retention (one day kept: 2024-03-01) drops the older partition, and records it.
    dropped = await apply_retention(database_url, 1, date(2024, 3, 1))
    assert dropped == ["events_20240229"]
    assert scalar(database_url, "SELECT count(*) FROM events") == 1


async def test_rows_the_database_refuses_raise_rows_rejected(
    writer: Writer, database_url: str
) -> None:
    with pytest.raises(RowsRejected) as refused:
        await writer.write([to_row(make_record(path="/nul\x00"))], {0: 1}, {})
    assert refused.value.sqlstate == "22021"
    assert scalar(database_url, "SELECT count(*) FROM consumer_offsets") == 0


def long_path(seed: int = 1) -> str:
    """About 6 kB of random CJK: no compression brings its index key under the btree limit."""
    rng = random.Random(seed)
    return "/" + "".join(chr(rng.randrange(0x4E00, 0x9FFF)) for _ in range(2000))


async def test_an_index_key_too_large_is_the_datas_fault(writer: Writer) -> None:
    # SQLSTATE 54000, which psycopg maps onto OperationalError like a lost connection.
    with pytest.raises(RowsRejected) as refused:
        await writer.write([to_row(make_record(path=long_path()))], {0: 1}, {})
    assert refused.value.sqlstate == "54000"
    assert "exceeds btree" in refused.value.reason


async def test_a_missing_table_is_the_databases_fault(writer: Writer, database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE daily_paths RENAME TO daily_paths_away")
    with pytest.raises(DatabaseUnavailable, match="UndefinedTable"):
        await writer.write([to_row(make_record())], {0: 1}, {})
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE daily_paths_away RENAME TO daily_paths")
    assert await writer.write([to_row(make_record())], {0: 1}, {}) == 1


class DeadLetterSpy:
    """Records what the writer dead-letters, and what was committed at that moment."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.rejected: list[RejectedRow] = []
        self.stored_meanwhile: int | None = None

    async def __call__(self, rows: list[RejectedRow]) -> None:
        self.rejected = rows
        self.stored_meanwhile = scalar(self.database_url, "SELECT count(*) FROM events")


async def test_isolation_stores_all_but_the_culprits(writer: Writer, database_url: str) -> None:
    records = [make_record(site_id=f"site-{i % 5}", user_id=f"u{i}") for i in range(200)]
    bad = {17: long_path(1), 18: "/nul\x00", 150: long_path(2)}
    for index, path in bad.items():
        records[index] = make_record(path=path)
    rows = [to_row(r) for r in records]
    with pytest.raises(RowsRejected):
        await writer.write(rows, {0: 200}, {})
    spy = DeadLetterSpy(database_url)
    isolated = await writer.write_isolating(rows, {0: 200}, {}, spy)
    assert [r.index for r in isolated.rejected] == sorted(bad)
    assert [r.sqlstate for r in isolated.rejected] == ["54000", "22021", "54000"]
    assert spy.rejected == isolated.rejected
    assert spy.stored_meanwhile == 0  # dead-lettered before the commit
    assert isolated.inserted == 197
    assert scalar(database_url, "SELECT count(*) FROM events") == 197
    assert await writer.load_offsets([0]) == {0: 200}
    assert_rollups_match_raw_rows(database_url)


async def test_a_failed_dead_letter_stores_nothing(writer: Writer, database_url: str) -> None:
    rows = [to_row(make_record(path="/nul\x00")), to_row(make_record())]

    async def unavailable(rows: list[RejectedRow]) -> None:
        raise ConnectionError("dead-letter topic down")

    with pytest.raises(ConnectionError):
        await writer.write_isolating(rows, {0: 2}, {}, unavailable)
    assert scalar(database_url, "SELECT count(*) FROM events") == 0
    assert await writer.load_offsets([0]) == {0: None}


def wrap_partition_function(database_url: str, body: str) -> None:
    """Puts `body` in place of ensure_events_partition(d), the original still callable as
    ensure_partition_0(d)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("ALTER FUNCTION ensure_events_partition(date) RENAME TO ensure_partition_0")
        conn.execute(
            "CREATE FUNCTION ensure_events_partition(d date) RETURNS void LANGUAGE plpgsql AS $$"
            f" BEGIN {body} END $$"
        )


@pytest.mark.parametrize(
    ("sqlstate", "message"),
    [
        ("42804", 'column "hour" in child table must be a generated column'),
        ("22023", 'unrecognized parameter "autosummarize"'),  # the code of a dropped day
    ],
)
async def test_a_partition_that_cannot_be_made_is_retried_not_dead_lettered(
    writer: Writer, database_url: str, sqlstate: str, message: str
) -> None:
    # Any other error of the partition's DDL is the database's (a schema it cannot copy,
    # say): the batch is retried, and no event of that day is set aside.
    wrap_partition_function(
        database_url, f"RAISE EXCEPTION '%', {message!r} USING ERRCODE = '{sqlstate}';"
    )
    rows = [to_row(make_record()) for _ in range(3)]
    spy = DeadLetterSpy(database_url)
    with pytest.raises(DatabaseUnavailable) as refused:
        await writer.write(rows, {0: 3}, {})
    day = rows[0][0]
    assert str(refused.value).startswith(f"cannot make the partition of {day}: {message}")
    assert f"(SQLSTATE {sqlstate})" in str(refused.value)

    # The same from an isolation pass (a batch refused for another reason first).
    with pytest.raises(DatabaseUnavailable):
        await writer.write_isolating(rows, {0: 3}, {}, spy)

    assert spy.rejected == []
    assert scalar(database_url, "SELECT count(*) FROM events") == 0
    assert await writer.load_offsets([0]) == {0: None}

    # Once the function can make the day again, the retry stores the batch, on the same
    # connection.
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DROP FUNCTION ensure_events_partition(date)")
        conn.execute("ALTER FUNCTION ensure_partition_0(date) RENAME TO ensure_events_partition")
    assert await writer.write(rows, {0: 3}, {}) == 3
    assert await writer.load_offsets([0]) == {0: 3}


async def test_a_day_whose_partition_is_refused_isolates_that_days_events(
    writer: Writer, database_url: str
) -> None:
    # What the partition function does for a day retention dropped: refuse it with a
    # class-22 code of its own.
    wrap_partition_function(
        database_url,
        """IF d < date '2020-01-01' THEN
               RAISE EXCEPTION 'day % was dropped by retention', d USING ERRCODE = '22023';
           END IF;
           PERFORM ensure_partition_0(d);""",
    )
    old = datetime(2019, 5, 1, 12, tzinfo=UTC)
    records = [
        make_record(timestamp=old if i % 4 == 0 else make_record().timestamp) for i in range(12)
    ]
    rows = [to_row(r) for r in records]
    with pytest.raises(RowsRejected) as refused:
        await writer.write(rows, {0: 12}, {})
    assert refused.value.sqlstate == "22023"
    isolated = await writer.write_isolating(rows, {0: 12}, {}, DeadLetterSpy(database_url))
    assert [r.index for r in isolated.rejected] == [0, 4, 8]
    assert {r.reason for r in isolated.rejected} == {"day 2019-05-01 was dropped by retention"}
    assert {r.sqlstate for r in isolated.rejected} == {"22023"}
    assert scalar(database_url, "SELECT count(*) FROM events") == 9
    assert await writer.load_offsets([0]) == {0: 12}
    assert_rollups_match_raw_rows(database_url)
