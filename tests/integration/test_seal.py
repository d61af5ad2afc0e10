"""Sealing closed days into monthly rows (consumer/seal.py) against a real PostgreSQL: what
the stats read after a seal, late events, a rebuild, and batches meeting a seal."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from consumer.batch import to_row
from consumer.rebuild import rebuild_rollups
from consumer.retention import apply_retention
from consumer.seal import _seal_step, main, seal_closed_days, seal_target
from consumer.table_locks import connect_read_committed
from consumer.write import Writer
from consumer.zones import add_zone, remove_zone
from core.events import EventRecord
from ingest import stats_response
from ingest.stats_params import parse_breakdown
from tests.support import (
    assert_rollups_match_raw_rows,
    make_record,
    scalar,
    started_and_waiting,
    write_batch,
    write_without_commit,
)

pytestmark = pytest.mark.postgres

UTC = dt.UTC
TODAY = dt.date(2026, 1, 2)  # a seal then seals every day of 2025


def november(count: int, user_prefix: str, day: int = 12) -> list[EventRecord]:
    """Page views on /a and /b over one November day (UTC evening: Kolkata's next day)."""
    return [
        make_record(
            site_id="a",
            path=f"/{'ab'[i % 2]}",
            user_id=f"{user_prefix}{i % 5}",
            timestamp=dt.datetime(2025, 11, day, 10 + i % 12, tzinfo=UTC),
        )
        for i in range(count)
    ]


async def month_pages(database_url: str, zone: str, **params: str) -> list[dict[str, Any]]:
    """The page breakdown the API answers (views and visitors), November by default."""
    request = parse_breakdown(
        {"site_id": "a", "timezone": zone, "period": "month", "date": "2025-11-01", **params},
        now=dt.datetime(2026, 1, 2, tzinfo=UTC),
    )
    async with AsyncConnectionPool(database_url, min_size=1, max_size=1) as pool:
        return await stats_response.breakdown_results(pool, request)


async def month_visits(database_url: str, dimension: str, **params: str) -> list[dict[str, Any]]:
    """A visit breakdown the API answers, November in UTC by default."""
    request = parse_breakdown(
        {
            "site_id": "a",
            "period": "month",
            "date": "2025-11-01",
            "property": f"visit:{dimension}",
            "metrics": "visitors,visits,bounce_rate,visit_duration",
            **params,
        },
        now=dt.datetime(2026, 1, 2, tzinfo=UTC),
    )
    async with AsyncConnectionPool(database_url, min_size=1, max_size=1) as pool:
        return await stats_response.breakdown_results(pool, request)


def visits_by_value(rows: list[dict[str, Any]], dimension: str) -> dict[str, int]:
    return {row[dimension]: row["visits"] for row in rows}


async def test_a_sealed_month_of_visits_answers_as_its_days_and_counts_late_visits_once(
    database_url: str,
) -> None:
    # Ten visits of one event each (a visitor's events are five hours apart): /a and /b.
    await write_batch(database_url, november(10, "u"))
    questions = [
        ("entry_page", {}),
        ("exit_page", {"limit": "1", "page": "2"}),
        ("source", {"period": "custom", "date": "2025-10-20,2025-12-05"}),
        ("entry_page", {"timezone": "Asia/Kolkata"}),
    ]
    before = [await month_visits(database_url, d, **q) for d, q in questions]
    assert visits_by_value(before[0], "entry_page") == {"/a": 5, "/b": 5}
    await seal_closed_days(database_url, TODAY)
    entry_rows = "SELECT sum(visits) FROM sealed_monthly_visit_dimensions WHERE dimension = %s"
    assert scalar(database_url, entry_rows, ("entry_page",)) == 10
    assert [await month_visits(database_url, d, **q) for d, q in questions] == before
    # Late, for sealed days: new visits on the 29th, and an event that extends u0's first
    # visit (10:00 on the 12th, entered and left by /a) to leave by /c.
    extend = make_record(
        site_id="a",
        path="/c",
        user_id="u0",
        timestamp=dt.datetime(2025, 11, 12, 10, 10, tzinfo=UTC),
    )
    await write_batch(database_url, [*november(3, "late-", day=29), extend], partition=1)
    assert_rollups_match_raw_rows(database_url)
    assert scalar(database_url, entry_rows, ("entry_page",)) == 13
    entries = await month_visits(database_url, "entry_page")
    exits = await month_visits(database_url, "exit_page")
    assert visits_by_value(entries, "entry_page") == {"/a": 7, "/b": 6}
    assert visits_by_value(exits, "exit_page") == {"/a": 6, "/b": 6, "/c": 1}
    assert [e["bounce_rate"] for e in entries] == [86, 100]  # u0's visit is no bounce now
    # Read from the sealed rows, until a rebuild recounts them from the daily ones.
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE sealed_monthly_visit_dimensions SET visits = visits + 1000")
    damaged = await month_visits(database_url, "entry_page")
    assert visits_by_value(damaged, "entry_page") == {"/a": 1007, "/b": 1006}
    await rebuild_rollups(database_url, dt.date(2025, 11, 12), dt.date(2025, 11, 12))
    assert await month_visits(database_url, "entry_page") == entries
    assert await month_visits(database_url, "exit_page") == exits
    assert_rollups_match_raw_rows(database_url)


async def test_a_seal_answers_what_the_daily_rows_answered(database_url: str) -> None:
    await add_zone(database_url, "a", "Asia/Kolkata")
    await write_batch(database_url, november(20, "u") + november(6, "v", day=30))
    questions = [
        ("UTC", {}),
        ("Asia/Kolkata", {}),
        ("UTC", {"period": "custom", "date": "2025-10-20,2025-12-05"}),
        ("Asia/Kolkata", {"period": "custom", "date": "2025-11-01,2025-12-31"}),
        ("UTC", {"limit": "1", "page": "2"}),
    ]
    before = [await month_pages(database_url, zone, **q) for zone, q in questions]
    assert before[0] == [
        {"path": "/a", "views": 13, "visitors": 8},
        {"path": "/b", "views": 13, "visitors": 8},
    ]
    assert await seal_closed_days(database_url, dt.date(2025, 11, 14)) == (
        None,
        dt.date(2025, 11, 13),  # November in part
    )
    assert [await month_pages(database_url, zone, **q) for zone, q in questions] == before
    assert await seal_closed_days(database_url, TODAY) == (
        dt.date(2025, 11, 13),
        seal_target(TODAY),
    )
    assert [await month_pages(database_url, zone, **q) for zone, q in questions] == before
    assert_rollups_match_raw_rows(database_url)
    # Nothing new: the watermark stays, nothing is locked or written.
    assert await seal_closed_days(database_url, TODAY) == (seal_target(TODAY),) * 2


async def test_a_sealed_month_is_read_from_its_rows_until_a_rebuild(database_url: str) -> None:
    await add_zone(database_url, "a", "Asia/Kolkata")
    await write_batch(database_url, november(10, "u"))
    expected = {zone: await month_pages(database_url, zone) for zone in ("UTC", "Asia/Kolkata")}
    await seal_closed_days(database_url, TODAY)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE sealed_monthly_paths SET page_views = page_views + 1000")
    for zone, pages in expected.items():
        damaged = await month_pages(database_url, zone)
        assert [p["views"] for p in damaged] == [p["views"] + 1000 for p in pages]  # read there
    await rebuild_rollups(database_url, dt.date(2025, 11, 12), dt.date(2025, 11, 12))
    for zone, pages in expected.items():
        assert await month_pages(database_url, zone) == pages
    assert_rollups_match_raw_rows(database_url)


async def test_late_events_for_sealed_days_are_counted_once(database_url: str) -> None:
    await add_zone(database_url, "a", "Asia/Kolkata")
    first = november(10, "u")
    await write_batch(database_url, first)
    await seal_closed_days(database_url, TODAY)
    late = november(8, "late-", day=29)
    # A redelivery of part of the first batch along with them: written once, counted once.
    await write_batch(database_url, first[:4] + late, partition=1)
    assert_rollups_match_raw_rows(database_url)
    assert scalar(database_url, "SELECT sum(page_views) FROM sealed_monthly_paths") == 2 * 18
    [a, b] = await month_pages(database_url, "UTC")
    assert (a["views"] + b["views"], a["visitors"], b["visitors"]) == (18, 9, 9)


async def test_a_seal_waits_for_a_batch_in_flight_and_counts_it(database_url: str) -> None:
    await write_batch(database_url, november(4, "u"))
    async with await psycopg.AsyncConnection.connect(database_url) as batch:
        # A batch that has written its rows and rollups but not committed.
        async with batch.transaction():
            await write_without_commit(batch, november(3, "v"))
            # The seal waits for the batch.
            sealing = await started_and_waiting(seal_closed_days(database_url, TODAY), database_url)
        await sealing
    assert_rollups_match_raw_rows(database_url)
    assert scalar(database_url, "SELECT sum(page_views) FROM sealed_monthly_paths") == 7


async def test_a_batch_arriving_during_a_seal_waits_and_adds_its_late_events(
    database_url: str,
) -> None:
    await write_batch(database_url, november(4, "u"))
    async with await connect_read_committed(database_url) as conn:
        async with conn.transaction():
            assert await _seal_step(conn, seal_target(TODAY)) == dt.date(2025, 12, 1)
            # The batch waits for the seal to commit.
            arriving = await started_and_waiting(
                write_batch(database_url, november(5, "v"), partition=1), database_url
            )
        await arriving  # its snapshot follows its locks: it sees November sealed
    assert_rollups_match_raw_rows(database_url)
    assert scalar(database_url, "SELECT sum(page_views) FROM sealed_monthly_paths") == 9


async def test_a_batch_on_a_connection_that_prepared_its_statement_waits_for_a_seal_too(
    database_url: str,
) -> None:
    """psycopg prepares a statement run five times: the locks are then taken when it runs,
    not when it is parsed, and the snapshot still follows them."""
    writer = Writer(database_url, "g", "events")
    try:
        for i in range(6):
            await writer.write(
                [to_row(r) for r in november(2, f"w{i}-")], {0: i + 1}, {0: i or None}
            )
        async with await connect_read_committed(database_url) as conn:
            async with conn.transaction():
                await _seal_step(conn, seal_target(TODAY))
                rows = [to_row(r) for r in november(3, "late-")]
                arriving = await started_and_waiting(
                    writer.write(rows, {0: 7}, {0: 6}), database_url
                )
            await arriving
    finally:
        await writer.close()
    assert_rollups_match_raw_rows(database_url)
    assert scalar(database_url, "SELECT sum(page_views) FROM sealed_monthly_paths") == 15


async def test_zones_added_or_removed_after_a_seal_bring_or_take_their_sealed_months(
    database_url: str,
) -> None:
    await write_batch(database_url, november(6, "u"))
    await seal_closed_days(database_url, TODAY)
    await add_zone(database_url, "a", "America/St_Johns")
    assert_rollups_match_raw_rows(database_url)
    zone_rows = "SELECT count(*) FROM sealed_monthly_paths WHERE timezone = 'America/St_Johns'"
    assert scalar(database_url, zone_rows) == 2
    assert await month_pages(database_url, "America/St_Johns") == await month_pages(
        database_url, "UTC"
    )
    assert await remove_zone(database_url, "a", "America/St_Johns")
    assert scalar(database_url, zone_rows) == 0
    assert_rollups_match_raw_rows(database_url)


async def test_a_rebuild_keeps_the_sealed_days_that_retention_dropped(database_url: str) -> None:
    await write_batch(database_url, november(4, "u", day=3) + november(6, "v", day=20))
    await seal_closed_days(database_url, TODAY)
    expected = await month_pages(database_url, "UTC")
    # Raw rows of Nov 3 gone; its rollups stay and the sealed month still counts it.
    await apply_retention(database_url, 10, dt.date(2025, 11, 25))
    await rebuild_rollups(database_url, dt.date(2025, 11, 1), dt.date(2025, 11, 30))
    assert await month_pages(database_url, "UTC") == expected
    assert scalar(database_url, "SELECT sum(page_views) FROM sealed_monthly_paths") == 10


async def test_an_event_older_than_every_sealed_day_is_counted_in_its_month(
    database_url: str,
) -> None:
    await write_batch(database_url, november(4, "u"))
    await seal_closed_days(database_url, TODAY)
    october = [make_record(site_id="a", path="/a", timestamp=dt.datetime(2025, 10, 2, tzinfo=UTC))]
    await write_batch(database_url, october, partition=1)
    assert_rollups_match_raw_rows(database_url)
    oct_rows = "SELECT sum(page_views) FROM sealed_monthly_paths WHERE month = '2025-10-01'"
    assert scalar(database_url, oct_rows) == 1


async def test_a_seal_with_nothing_to_seal_takes_no_lock(database_url: str) -> None:
    await write_batch(database_url, november(4, "u"))
    hold = "LOCK TABLE sealed_monthly_paths IN ROW EXCLUSIVE MODE"  # what a batch holds
    async with await psycopg.AsyncConnection.connect(database_url) as batch:
        async with asyncio.timeout(5):  # a seal that tried to lock would wait for `batch`
            await batch.execute(hold)
            # Events too recent to seal (a young database): nothing locked.
            assert await seal_closed_days(database_url, dt.date(2025, 11, 13)) == (None, None)
            await batch.rollback()
            assert await seal_closed_days(database_url, TODAY) == (None, seal_target(TODAY))
            await batch.execute(hold)
            # Nothing new since the last seal: nothing locked.
            assert await seal_closed_days(database_url, TODAY) == (seal_target(TODAY),) * 2
            await batch.rollback()


async def test_a_first_seal_goes_a_month_at_a_time_from_the_first_day(database_url: str) -> None:
    await write_batch(database_url, november(2, "u", day=3) + november(2, "v", day=20))
    async with await connect_read_committed(database_url) as conn:
        await conn.set_autocommit(True)
        steps = []
        while (moved := await _seal_step(conn, dt.date(2026, 1, 15))) is not None:
            steps.append(moved)
    assert steps == [dt.date(2025, 12, 1), dt.date(2026, 1, 1), dt.date(2026, 1, 15)]


def test_the_command_seals_and_says_so(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(write_batch(database_url, november(2, "u")))
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert main([]) == 0
    assert "are sealed" in capsys.readouterr().out
    assert main([]) == 0
    assert "nothing new to seal" in capsys.readouterr().out
    assert main(["--now"]) == 2
    assert scalar(database_url, "SELECT count(*) FROM sealed_monthly_paths") == 2
