"""A statement sent with only the branches the facts last seen select (ingest/stats_expect.py)
against a real PostgreSQL: when a zone is added or removed, or a month sealed, between that
guess and the query, the snapshot's gates keep the wrong branch from answering and the
statement is asked again with every branch.

Which branch answered shows through damage: rows of the source that should answer are
changed by hand, and the answer must carry the change.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from consumer.batch import to_row
from consumer.seal import seal_closed_days
from consumer.write import Writer
from consumer.zones import add_zone, remove_zone
from ingest import stats_run
from ingest.stats_days import make_range
from ingest.stats_expect import FACTS, Facts
from ingest.stats_params import BreakdownRequest, StatsRequest, TimeseriesRequest
from tests.support import make_record

pytestmark = pytest.mark.postgres

SITE = "site-expect"
ZONE = "Asia/Kolkata"
Pool = AsyncConnectionPool[psycopg.AsyncConnection[TupleRow]]


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


# Kolkata's November: from 2025-10-31 18:30 to 2025-11-30 18:30 UTC; 4 page views in it.
EVENTS = [
    make_record(site_id=SITE, timestamp=at(ts), path=path, user_id=user)
    for ts, path, user in [
        ("2025-10-31 18:29:00", "/october", "u0"),
        ("2025-11-11 18:29:00", "/a", "u1"),
        ("2025-11-11 18:30:00", "/b", "u2"),
        ("2025-11-12 10:00:00", "/b", "u3"),
        ("2025-11-20 12:00:00", "/c", "u1"),
    ]
]


@pytest.fixture
async def loaded(database_url: str) -> str:
    writer = Writer(database_url, "g", "events")
    try:
        await writer.write([to_row(e) for e in EVENTS], {0: len(EVENTS)}, {})
    finally:
        await writer.close()
    return database_url


@pytest.fixture
async def pool(loaded: str) -> AsyncIterator[Pool]:
    async with AsyncConnectionPool(
        loaded, min_size=1, max_size=2, kwargs={"autocommit": True}, open=False
    ) as p:
        yield p


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The SQL of every statement the stats steps send, in order; facts start unknown."""
    texts: list[str] = []
    real = stats_run.fetch

    async def recording(pool: Pool, query: Any, params: dict[str, Any]) -> list[Any]:
        texts.append(query if isinstance(query, str) else query.as_string(None))
        return await real(pool, query, params)

    monkeypatch.setattr(stats_run, "fetch", recording)
    FACTS.clear()
    yield texts
    FACTS.clear()


def november(zone: str = ZONE, metrics: tuple[str, ...] = ("views",)) -> StatsRequest:
    days = make_range(dt.date(2025, 11, 1), dt.date(2025, 11, 30), zone)
    return StatsRequest(SITE, days, metrics)  # type: ignore[arg-type]


async def views(pool: Pool) -> int:
    values, _ = await stats_run.aggregate_values(pool, november(), exact_max_rows=0)
    return values["views"]


def execute(url: str, statement: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement)


DAMAGE_LOCAL_DAY = (
    "UPDATE local_daily_stats SET page_views = page_views + 1000 "
    "WHERE timezone = 'Asia/Kolkata' AND day = '2025-11-12'"
)


async def test_a_zone_removed_after_the_guess_is_answered_from_the_utc_rollups(
    loaded: str, pool: Pool, sent: list[str]
) -> None:
    await add_zone(loaded, SITE, ZONE)
    execute(loaded, DAMAGE_LOCAL_DAY)
    assert await views(pool) == 1004  # every branch (nothing known yet): the kept one answers
    assert FACTS.get(SITE, ZONE) == Facts(kept=True, sealed_before=None)
    assert await views(pool) == 1004  # the kept branch alone
    assert "local_daily_stats" in sent[1] and "quarter_hour_stats" not in sent[1]
    await remove_zone(loaded, SITE, ZONE)
    sent.clear()
    assert await views(pool) == 4
    [guess, again] = sent  # the kept branch, which read nothing; then every branch
    assert "quarter_hour_stats" not in guess and "quarter_hour_stats" in again
    assert FACTS.get(SITE, ZONE) == Facts(kept=False, sealed_before=None)
    sent.clear()
    assert await views(pool) == 4
    [unkept] = sent  # the 15-minute pieces alone from now on
    assert "local_daily_stats" not in unkept


async def test_a_zone_added_after_the_guess_is_answered_from_its_local_rollups(
    loaded: str, pool: Pool, sent: list[str]
) -> None:
    assert await views(pool) == 4
    assert FACTS.get(SITE, ZONE) == Facts(kept=False, sealed_before=None)
    await add_zone(loaded, SITE, ZONE)
    execute(loaded, DAMAGE_LOCAL_DAY)
    sent.clear()
    assert await views(pool) == 1004  # read from the local rollups, as the snapshot says
    assert len(sent) == 2
    series = TimeseriesRequest(november(metrics=("views", "visitors")), "day")
    rows, _ = await stats_run.timeseries_rows(pool, series)
    by_day = {t.date(): v for t, v, *_ in rows}
    assert by_day[dt.date(2025, 11, 12)] == 1002  # /b twice, plus the damage
    pages = await stats_run.breakdown_rows(pool, BreakdownRequest(november(), "path", 10, 1))
    assert [(path, n) for path, n, *_ in pages] == [("/b", 2), ("/a", 1), ("/c", 1)]


async def test_a_zone_removed_under_a_page_breakdown_by_visitors(
    loaded: str, pool: Pool, sent: list[str]
) -> None:
    await add_zone(loaded, SITE, ZONE)
    request = BreakdownRequest(november(metrics=("visitors", "views")), "path", 10, 1)
    expected = [("/b", 2, 2, 2), ("/a", 1, 1, 1), ("/c", 1, 1, 1)]
    assert await stats_run.breakdown_rows(pool, request) == expected
    await remove_zone(loaded, SITE, ZONE)
    sent.clear()
    assert await stats_run.breakdown_rows(pool, request) == expected
    assert len(sent) == 2 and "daily_details" in sent[1]


async def test_a_month_sealed_after_the_guess_is_answered_from_its_sealed_rows(
    loaded: str, pool: Pool, sent: list[str]
) -> None:
    request = BreakdownRequest(november("UTC"), "path", 10, 1)
    before = await stats_run.breakdown_rows(pool, request)
    assert [(path, n) for path, n, *_ in before] == [("/b", 2), ("/a", 1), ("/c", 1)]
    assert FACTS.get(SITE, "UTC") == Facts(kept=False, sealed_before=None)
    await seal_closed_days(loaded, dt.date(2026, 1, 2))
    execute(
        loaded,
        "UPDATE sealed_monthly_paths SET page_views = page_views + 1000 "
        "WHERE timezone = 'UTC' AND path = '/c'",
    )
    sent.clear()
    after = await stats_run.breakdown_rows(pool, request)
    assert [(path, n) for path, n, *_ in after] == [("/c", 1001), ("/b", 2), ("/a", 1)]
    assert "monthly_paths" in sent[0] and "sealed_monthly_paths" not in sent[0]
    assert "sealed_monthly_paths" in sent[1]
    facts = FACTS.get(SITE, "UTC")
    assert facts is not None and facts.sealed(dt.date(2025, 12, 1))
    # and back, as a rebuild may: the guess (sealed) is refused by the snapshot
    execute(loaded, "UPDATE sealed_days SET sealed_before = '-infinity'")
    sent.clear()
    assert await stats_run.breakdown_rows(pool, request) == before
    assert len(sent) == 2
