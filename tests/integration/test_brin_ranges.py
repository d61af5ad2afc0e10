"""The consumer's summaries of the events' BRIN ranges against a real PostgreSQL: each day's
index leaves summarizing to it (autosummarize off, and turned off on days made before), a pass
summarizes every new range of the partitions that grew and nothing else, gives way to a day
someone else holds, and replicas take turns."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from consumer.brin_ranges import PASS_LOCK, Pass, RangeSummarizer
from consumer.brin_ranges import main as brin_ranges_main
from tests.support import scalar

pytestmark = pytest.mark.postgres

INDEX = "events_20251111_event_time_idx"


def insert_events(database_url: str, day: str, count: int) -> None:
    """`count` raw events of `day`, about 40 a page: each 16 pages is one BRIN range. The day
    is kept from autovacuum, whose VACUUM would summarize it too."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT ensure_events_partition(%s)", (day,))
        table = f"events_{day.replace('-', '')}"
        conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = off)")
        conn.execute(
            "INSERT INTO events (day, event_id, site_id, event_type, path, user_id, event_time,"
            " received_at) "
            "SELECT %(day)s, gen_random_uuid(), 'a', 'page_view', '/' || repeat('p', 80) || i,"
            " 'u' || i, %(day)s::date + i * interval '1 second', now() "
            "FROM generate_series(1, %(count)s) AS i",
            {"day": day, "count": count},
        )


def unsummarized(database_url: str, index: str) -> int:
    """Summarizes what is left of `index` and says how many ranges that was."""
    return int(scalar(database_url, "SELECT brin_summarize_new_values(%s::regclass)", (index,)))


async def summarize_once(database_url: str, summarizer: RangeSummarizer) -> Pass | None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        return await summarizer.summarize(conn)


def test_a_new_day_leaves_summarizing_to_the_consumer(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT ensure_events_partition('2025-11-11')")
    options = scalar(database_url, "SELECT reloptions FROM pg_class WHERE relname = %s", (INDEX,))
    assert "autosummarize=off" in options


async def test_a_pass_summarizes_the_new_ranges_of_the_days_that_grew(database_url: str) -> None:
    insert_events(database_url, "2025-11-11", 5_000)
    insert_events(database_url, "2025-11-12", 5_000)
    summarizer = RangeSummarizer()

    first = await summarize_once(database_url, summarizer)

    assert first is not None and first.days == 2 and first.ranges >= 2 * 5
    assert unsummarized(database_url, INDEX) == 0
    assert unsummarized(database_url, "events_20251112_event_time_idx") == 0
    # Nothing grew: no day is summarized again.
    assert await summarize_once(database_url, summarizer) == Pass()

    insert_events(database_url, "2025-11-11", 5_000)
    again = await summarize_once(database_url, summarizer)

    assert again is not None and again.days == 1 and again.ranges >= 5
    assert unsummarized(database_url, INDEX) == 0


async def test_a_day_made_before_gets_autosummarize_off_once_it_stops_growing(
    database_url: str,
) -> None:
    insert_events(database_url, "2025-11-11", 2_000)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"ALTER INDEX {INDEX} SET (autosummarize = on)")  # as PARTITION OF made it
    summarizer = RangeSummarizer()

    # It grew since the last pass (there was none): its index is not locked to alter it.
    first = await summarize_once(database_url, summarizer)
    assert first is not None and first.days == 1 and first.turned_off == 0
    assert unsummarized(database_url, INDEX) == 0
    with psycopg.connect(database_url, autocommit=True) as conn:  # no requests to autovacuum
        conn.execute(f"ALTER INDEX {INDEX} SET (autosummarize = off)")
        insert_events(database_url, "2025-11-11", 2_000)
        conn.execute(f"ALTER INDEX {INDEX} SET (autosummarize = on)")
    growing = await summarize_once(database_url, summarizer)
    assert growing is not None and growing.days == 1 and growing.turned_off == 0

    quiet = await summarize_once(database_url, summarizer)

    assert quiet is not None and quiet.turned_off == 1 and quiet.days == 0
    options = scalar(database_url, "SELECT reloptions FROM pg_class WHERE relname = %s", (INDEX,))
    assert "autosummarize=off" in options


def test_a_new_day_keeps_the_index_events_time_makes_when_its_definition_changed(
    database_url: str,
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DROP INDEX events_time")  # an operator's other operator class
        conn.execute(
            "CREATE INDEX events_time ON events"
            " USING brin (event_time timestamptz_minmax_multi_ops)"
            " WITH (pages_per_range = 32, autosummarize = on)"
        )
        conn.execute("SELECT ensure_events_partition('2025-11-11')")
    indexes = scalar(
        database_url,
        "SELECT array_agg(pg_get_indexdef(x.indexrelid) || ' ' || c.reloptions::text)"
        " FROM pg_index AS x JOIN pg_class AS c ON c.oid = x.indexrelid"
        " WHERE x.indrelid = 'events_20251111'::regclass AND x.indexrelid IN"
        " (SELECT inhrelid FROM pg_inherits WHERE inhparent = 'events_time'::regclass)",
    )
    assert len(indexes) == 1
    assert "timestamptz_minmax_multi_ops" in indexes[0]
    assert "autosummarize=off" in indexes[0]
    brin_indexes = scalar(
        database_url,
        "SELECT count(*) FROM pg_index AS x JOIN pg_class AS c ON c.oid = x.indexrelid"
        " JOIN pg_am AS a ON a.oid = c.relam"
        " WHERE x.indrelid = 'events_20251111'::regclass AND a.amname = 'brin'",
    )
    assert brin_indexes == 1  # the one made before ATTACH is not left behind


async def test_a_new_day_and_a_pass_work_when_events_time_is_not_brin(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DROP INDEX events_time")  # an operator's B-tree instead
        conn.execute("CREATE INDEX events_time ON events (event_time)")
    insert_events(database_url, "2025-11-11", 100)

    indexes = scalar(
        database_url,
        "SELECT array_agg(a.amname ORDER BY a.amname) FROM pg_index AS x"
        " JOIN pg_class AS c ON c.oid = x.indexrelid JOIN pg_am AS a ON a.oid = c.relam"
        " WHERE x.indrelid = 'events_20251111'::regclass",
    )
    assert indexes == ["btree", "btree"]  # events_time's and the primary key's
    assert await summarize_once(database_url, RangeSummarizer()) == Pass()


async def test_lock_waits_stay_bounded_whatever_deadlock_timeout(database_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute("SET deadlock_timeout = 1")  # half of it would be 0: no limit
        await RangeSummarizer().summarize(conn)
        small = await (await conn.execute("SHOW lock_timeout")).fetchone()
        await conn.execute("RESET deadlock_timeout")
        default = await RangeSummarizer().summarize(conn)
        usual = await (await conn.execute("SHOW lock_timeout")).fetchone()
    assert default is not None
    assert small is not None and small[0] == "1ms"
    assert usual is not None and usual[0] == "100ms"


async def test_a_day_held_by_someone_else_is_left_for_the_next_pass(database_url: str) -> None:
    insert_events(database_url, "2025-11-11", 2_000)
    insert_events(database_url, "2025-11-12", 2_000)
    summarizer = RangeSummarizer()
    with psycopg.connect(database_url) as vacuum:  # holds what a VACUUM of the day would
        vacuum.execute("LOCK TABLE events_20251111 IN SHARE UPDATE EXCLUSIVE MODE")

        held = await summarize_once(database_url, summarizer)

        assert held is not None and held.left == 1 and held.days == 1
        assert unsummarized(database_url, "events_20251112_event_time_idx") == 0

    later = await summarize_once(database_url, summarizer)

    assert later is not None and later.days == 1 and later.left == 0
    assert unsummarized(database_url, INDEX) == 0


async def test_a_day_that_keeps_failing_is_said_once(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    insert_events(database_url, "2025-11-11", 100)
    role = f"brin_{uuid.uuid4().hex[:12]}"  # a role that owns no day and may not lock one
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    try:
        summarizer = RangeSummarizer()
        passes = []
        async with await psycopg.AsyncConnection.connect(
            make_conninfo(database_url, user=role), autocommit=True
        ) as conn:
            for _ in range(3):
                passes.append(await summarizer.summarize(conn))
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))

    assert [p.failed if p else None for p in passes] == [1, 1, 1]
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(said) == 1
    assert "events_20251111's new ranges failed (42501" in said[0]


async def test_replicas_take_turns(database_url: str) -> None:
    insert_events(database_url, "2025-11-11", 2_000)
    with psycopg.connect(database_url, autocommit=True) as other_replica:
        other_replica.execute(PASS_LOCK)

        assert await summarize_once(database_url, RangeSummarizer()) is None

    assert unsummarized(database_url, INDEX) > 0  # left to the pass that held the lock


def test_the_command_summarizes_every_day(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    insert_events(database_url, "2025-11-11", 2_000)
    monkeypatch.setenv("DATABASE_URL", database_url)

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"ALTER INDEX {INDEX} SET (autosummarize = on)")

    assert brin_ranges_main() == 0

    said = capsys.readouterr().out
    assert "(days that grew: 1)" in said
    assert "autosummarize turned off on 1 earlier days" in said
    assert unsummarized(database_url, INDEX) == 0
