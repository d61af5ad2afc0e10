"""Operators' commands against a real PostgreSQL: rollup rebuild and retention."""

from __future__ import annotations

from datetime import UTC, date, datetime

import psycopg
import pytest

from consumer.batch import to_row
from consumer.rebuild import rebuild_rollups
from consumer.retention import apply_retention, first_kept_day
from consumer.write import Writer
from tests.support import assert_rollups_match_raw_rows, make_record, scalar

pytestmark = pytest.mark.postgres


async def write(database_url: str, records: list[object]) -> None:
    writer = Writer(database_url, "g", "events")
    try:
        await writer.write([to_row(r) for r in records], {0: len(records)}, {})  # type: ignore[arg-type]
    finally:
        await writer.close()


async def test_rebuild_recounts_damaged_rollups_of_the_range_only(database_url: str) -> None:
    await write(
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
        conn.execute("UPDATE daily_stats SET page_views = 99, unique_users = 99, events = 99")
        conn.execute("UPDATE daily_paths SET views = 99")
        conn.execute("UPDATE hourly_stats SET page_views = 99, events = 99")
        conn.execute("DELETE FROM daily_users")
        # the stats API's rollups too
        conn.execute("UPDATE quarter_hour_stats SET page_views = 99, events = 99")
        conn.execute("UPDATE daily_details SET events = 99")
        conn.execute("UPDATE quarter_hour_paths SET views = 99")
        conn.execute("UPDATE daily_event_types SET events = 99")
        conn.execute("UPDATE monthly_paths SET views = 99")
        conn.execute("DELETE FROM daily_visitors")

    days = await rebuild_rollups(database_url, date(2025, 11, 12), date(2025, 11, 13), "a")
    assert days == [date(2025, 11, 12)]  # the 13th has no raw partition
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
    await write(
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
