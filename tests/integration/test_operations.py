"""Operators' commands against a real PostgreSQL: rollup rebuild, retention, schema upgrade,
site time zones."""

from __future__ import annotations

from datetime import UTC, date, datetime

import psycopg
import pytest
from psycopg import sql

from consumer.rebuild import rebuild_rollups
from consumer.retention import apply_retention, first_kept_day
from consumer.schema import apply_schema
from consumer.zones import _add, _lock, add_zone, list_zones, remove_zone
from consumer.zones import main as zones_main
from core.events import EventRecord
from tests.support import (
    assert_rollups_match_raw_rows,
    make_record,
    scalar,
    started_and_waiting,
    unversion,
    write_batch,
    write_without_commit,
)

pytestmark = pytest.mark.postgres


async def test_rebuild_recounts_damaged_rollups_of_the_range_only(database_url: str) -> None:
    await add_zone(database_url, "a", "Asia/Kolkata")
    await write_batch(
        database_url,
        [
            make_record(site_id=site, user_id=f"u{i % 3}", path=f"/{i % 2}", timestamp=ts)
            for i, (site, ts) in enumerate(
                [
                    ("a", datetime(2025, 11, 11, 10, tzinfo=UTC)),
                    ("a", datetime(2025, 11, 12, 10, tzinfo=UTC)),
                    ("a", datetime(2025, 11, 12, 11, tzinfo=UTC)),
                    ("b", datetime(2025, 11, 12, 12, tzinfo=UTC)),
                ]
            )
        ],
    )
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE daily_stats SET page_views = 99, visitors = 99, events = 99")
        conn.execute("UPDATE daily_paths SET page_views = 99")
        conn.execute("UPDATE hourly_stats SET page_views = 99, events = 99")
        conn.execute("DELETE FROM daily_visitor_ids")
        # the stats API's rollups too
        conn.execute("UPDATE quarter_hour_stats SET page_views = 99, events = 99")
        conn.execute("UPDATE daily_details SET events = 99")
        conn.execute("UPDATE quarter_hour_paths SET page_views = 99")
        conn.execute("UPDATE daily_event_types SET events = 99")
        conn.execute("UPDATE monthly_paths SET page_views = 99")
        conn.execute("DELETE FROM daily_visitors")
        # and the site's zone's
        conn.execute("UPDATE local_daily_stats SET page_views = 99, events = 99")
        conn.execute("DELETE FROM local_daily_paths")
        conn.execute("UPDATE local_monthly_paths SET page_views = 99")

    rebuilt = await rebuild_rollups(database_url, date(2025, 11, 12), date(2025, 11, 13), "a")
    assert rebuilt.days == [date(2025, 11, 12)]  # the 13th has no raw partition
    assert rebuilt.dropped == []
    assert (
        scalar(
            database_url,
            "SELECT page_views FROM daily_stats WHERE site_id = 'a' AND day = %s",
            (date(2025, 11, 12),),
        )
        == 2
    )
    assert (
        scalar(  # outside the range: left alone
            database_url,
            "SELECT page_views FROM daily_stats WHERE site_id = 'a' AND day = %s",
            (date(2025, 11, 11),),
        )
        == 99
    )

    await rebuild_rollups(database_url, date(2025, 11, 1), date(2025, 11, 30))
    assert_rollups_match_raw_rows(database_url)


async def test_retention_drops_old_day_partitions_and_keeps_rollups(database_url: str) -> None:
    await write_batch(
        database_url,
        [make_record(timestamp=datetime(2025, 11, d, 12, tzinfo=UTC)) for d in (10, 11, 12)],
    )
    today = date(2025, 11, 12)
    assert first_kept_day(2, today) == date(2025, 11, 11)
    dropped = await apply_retention(database_url, 2, today)
    assert dropped == ["events_20251110"]
    assert scalar(database_url, "SELECT count(*) FROM events") == 2
    assert scalar(database_url, "SELECT sum(page_views) FROM daily_stats") == 3
    assert await apply_retention(database_url, 2, today) == []


async def test_schema_upgrades_a_database_of_the_previous_layout(database_url: str) -> None:
    """A database made by earlier schemas (a per-(type, path) 15-minute table, a sketch in
    monthly_paths, none in hourly_stats) is brought to the current one on the next start, its
    page views and visitors kept."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE quarter_hour_details (site_id text, bucket timestamptz, event_type "
            "text, path text, events bigint, users hll, PRIMARY KEY (site_id, bucket, "
            "event_type, path))"
        )
        conn.execute(
            "INSERT INTO quarter_hour_details VALUES "
            "('a', '2025-11-12 10:15+00', 'page_view', '/x', 3, "
            "hll_add(hll_empty(), hll_hash_text('u1'))), "
            "('a', '2025-11-12 10:15+00', 'click', '/x', 5, hll_empty())"
        )
        conn.execute("ALTER TABLE monthly_paths ADD COLUMN visitors hll NOT NULL")
        unversion(conn)  # earlier releases recorded no version
        conn.execute("ALTER TABLE hourly_stats DROP COLUMN visitors")
        conn.execute("INSERT INTO hourly_stats VALUES ('a', '2025-11-12 10:00+00', 2, 2)")
        conn.execute(
            "INSERT INTO quarter_hour_stats VALUES ('a', '2025-11-12 10:15+00', 1, 1, "
            "hll_add(hll_empty(), hll_hash_text('u1'))), ('a', '2025-11-12 10:45+00', 1, 1, "
            "hll_add(hll_empty(), hll_hash_text('u2')))"
        )

    await apply_schema(database_url)
    await apply_schema(database_url)  # and again: nothing left to do

    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT to_regclass('quarter_hour_details')").fetchone() == (None,)
        rows = conn.execute(
            "SELECT site_id, path, page_views, hll_cardinality(visitors) FROM quarter_hour_paths"
        ).fetchall()
        assert rows == [("a", "/x", 3, 1.0)]
        columns = conn.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name = 'monthly_paths' ORDER BY 1"
        ).fetchall()
        assert [c for (c,) in columns] == ["month", "page_views", "path", "site_id"]
        # the hour's sketch: the union of its 15-minute ones
        hourly = conn.execute("SELECT hll_cardinality(visitors) FROM hourly_stats").fetchall()
        assert hourly == [(2.0,)]


async def test_a_zone_added_after_retention_keeps_the_days_only_rollups_hold(
    database_url: str,
) -> None:
    await write_batch(
        database_url,
        [
            make_record(site_id="a", timestamp=datetime(2025, 11, d, 20, tzinfo=UTC), path="/p")
            for d in (10, 11, 12)
        ],
    )
    await apply_retention(database_url, 1, date(2025, 11, 12))  # raw rows of the 12th only
    days = await add_zone(database_url, "a", "Asia/Kolkata")
    # 20:00 UTC is 01:30 the next local day: the 11th, 12th and 13th in Kolkata.
    assert days == 3
    assert await list_zones(database_url) == [("a", "Asia/Kolkata", 3, False)]
    assert (
        scalar(
            database_url,
            "SELECT sum(page_views) FROM local_daily_stats WHERE day < '2025-11-13'",
        )
        == 2
    )
    assert (
        scalar(
            database_url,
            "SELECT page_views FROM local_monthly_paths WHERE site_id = 'a' AND path = '/p'",
        )
        == 3
    )
    assert await remove_zone(database_url, "a", "Asia/Kolkata")
    assert await list_zones(database_url) == []
    assert scalar(database_url, "SELECT count(*) FROM local_daily_paths") == 0


@pytest.mark.parametrize(
    ("argv", "code", "said"),
    [
        (["add", "a", "Mars/Olympus_Mons"], 2, "not a known IANA time zone"),
        (["add", "a", "UTC"], 2, "days in UTC are UTC days"),
        (["add", "a", "Africa/Abidjan"], 2, "which are always kept"),
        (["remove", "a", "Asia/Kolkata"], 1, "had no zone"),
        (["add", "a", "Asia/Kolkata"], 0, "local days built"),
        (["list"], 0, ""),
    ],
)
def test_zones_command_says_what_it_did_or_why_not(
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    code: int,
    said: str,
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert zones_main(argv) == code
    out = capsys.readouterr()
    assert said in out.out + out.err
    if argv == ["list"]:
        assert out.out == ""  # a fresh database keeps no zone


def kolkata_evening(count: int, user: str) -> list[EventRecord]:
    """Page views around a Kolkata midnight (18:30 UTC), so they fall in two local days."""
    return [
        make_record(
            site_id="a",
            user_id=user,
            path=f"/{i % 3}",
            timestamp=datetime(2025, 11, 12, 18, 28 + i, tzinfo=UTC),
        )
        for i in range(count)
    ]


@pytest.mark.parametrize("isolation", ["read committed", "repeatable read"])
async def test_a_batch_in_flight_when_a_zone_is_added_is_counted_once(
    database_url: str, isolation: str
) -> None:
    """Whatever the database's default isolation: the zone's build must see the batch."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        name = conn.execute("SELECT current_database()").fetchone()
        assert name
        conn.execute(
            sql.SQL("ALTER DATABASE {} SET default_transaction_isolation = {}").format(
                sql.Identifier(name[0]), sql.Literal(isolation)
            )
        )
    await write_batch(database_url, kolkata_evening(4, "u1"), partition=0)
    async with await psycopg.AsyncConnection.connect(database_url) as batch:
        # A batch's transaction that has written its rows and rollups (no zone yet: no local
        # rows) but not committed: the zone's build waits for it, then counts its events.
        async with batch.transaction():
            await write_without_commit(batch, kolkata_evening(3, "u2"))
            # The zone's build waits for the batch.
            adding = await started_and_waiting(
                add_zone(database_url, "a", "Asia/Kolkata"), database_url
            )
        assert await adding == 2
    assert_rollups_match_raw_rows(database_url)
    assert scalar(database_url, "SELECT sum(page_views) FROM local_daily_stats") == 7


async def test_a_batch_arriving_during_a_zone_build_waits_and_counts_into_it(
    database_url: str,
) -> None:
    await write_batch(database_url, kolkata_evening(4, "u1"), partition=0)
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        async with conn.transaction():
            await _lock(conn)
            # The batch waits for the zone change.
            arriving = await started_and_waiting(
                write_batch(database_url, kolkata_evening(5, "u2"), partition=1), database_url
            )
            await _add(conn, "a", "Asia/Kolkata")
        await arriving  # it took its snapshot after the commit: it sees the zone
    assert_rollups_match_raw_rows(database_url)
    assert scalar(database_url, "SELECT sum(page_views) FROM local_daily_stats") == 9
