"""Zones kept because stats requests ask for them (consumer/zone_requests.py), against a real
PostgreSQL: the API notes requests, a consumer round keeps and drops zones."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from consumer.zone_requests import keep_requested_zones
from consumer.zones import add_zone, list_zones
from ingest import stats_read
from ingest.query import parse_stats
from tests.integration.test_operations import write
from tests.support import assert_rollups_match_raw_rows, make_record, scalar

pytestmark = pytest.mark.postgres

IDLE = dt.timedelta(days=30)
NOW = dt.datetime(2025, 11, 20, tzinfo=dt.UTC)


async def visitors(pool: AsyncConnectionPool, site: str, zone: str) -> dict[str, object]:  # type: ignore[type-arg]
    request = parse_stats(
        {"site_id": site, "timezone": zone, "period": "month", "date": "2025-11-12"}, now=NOW
    )
    return await stats_read.aggregate(pool, request, exact_max_rows=0)


def requested(database_url: str, site: str, zone: str, days_ago: int = 0) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO zone_requests (site_id, timezone, first_requested_at, last_requested_at)"
            " VALUES (%s, %s, now() - %s, now() - %s) ON CONFLICT (site_id, timezone) DO UPDATE"
            " SET last_requested_at = EXCLUDED.last_requested_at",
            (site, zone, dt.timedelta(days=days_ago, seconds=1), dt.timedelta(days=days_ago)),
        )


async def test_a_zone_asked_for_through_the_api_is_kept_by_the_next_round(
    database_url: str,
) -> None:
    await write(database_url, [make_record(site_id="a", user_id=f"u{i}") for i in range(5)])
    async with AsyncConnectionPool(database_url, min_size=1, max_size=2) as pool:
        before = await visitors(pool, "a", "Asia/Kathmandu")
        await visitors(pool, "a", "UTC")  # UTC days: nothing to keep
        noted = "SELECT last_requested_at FROM zone_requests WHERE site_id = 'a'"
        first = scalar(database_url, noted)
        await visitors(pool, "a", "Asia/Kathmandu")
        assert scalar(database_url, noted) == first  # at most once a minute per process
        assert await keep_requested_zones(database_url, 1, IDLE) == ([("a", "Asia/Kathmandu")], [])
        assert await list_zones(database_url) == [("a", "Asia/Kathmandu", 1, True)]
        assert await visitors(pool, "a", "Asia/Kathmandu") == before  # now from its rollups
    assert_rollups_match_raw_rows(database_url)


async def test_rounds_keep_up_to_the_cap_and_drop_idle_zones_they_kept(database_url: str) -> None:
    await write(database_url, [make_record(site_id=s) for s in ("a", "b")])
    await add_zone(
        database_url, "a", "America/St_Johns"
    )  # an operator's: neither counted nor dropped
    requested(database_url, "a", "America/St_Johns", days_ago=90)
    requested(database_url, "a", "Asia/Kathmandu", days_ago=0)
    requested(database_url, "a", "Asia/Kolkata", days_ago=0)  # asked for after Kathmandu
    requested(database_url, "b", "Asia/Kolkata", days_ago=0)
    requested(database_url, "b", "Australia/Adelaide", days_ago=3)  # not asked for lately
    assert await keep_requested_zones(database_url, 1, IDLE) == (
        [("a", "Asia/Kathmandu"), ("b", "Asia/Kolkata")],
        [],
    )
    assert await keep_requested_zones(database_url, 1, IDLE) == ([], [])  # a is at its cap
    requested(database_url, "a", "Asia/Kathmandu", days_ago=31)
    assert await keep_requested_zones(database_url, 1, IDLE) == (
        [("a", "Asia/Kolkata")],
        [("a", "Asia/Kathmandu")],
    )
    assert [(s, z, auto) for s, z, _, auto in await list_zones(database_url)] == [
        ("a", "America/St_Johns", False),
        ("a", "Asia/Kolkata", True),
        ("b", "Asia/Kolkata", True),
    ]
    assert_rollups_match_raw_rows(database_url)


async def test_zones_postgres_does_not_know_are_left_alone(database_url: str) -> None:
    requested(database_url, "a", "Mars/Olympus_Mons")
    assert await keep_requested_zones(database_url, 1, IDLE) == ([], [])


async def test_an_operators_add_makes_an_automatic_zone_stay(database_url: str) -> None:
    await add_zone(database_url, "a", "Asia/Kolkata", auto=True)
    await add_zone(database_url, "a", "Asia/Kolkata")
    requested(database_url, "a", "Asia/Kolkata", days_ago=90)
    assert await keep_requested_zones(database_url, 1, IDLE) == ([], [])
    assert await list_zones(database_url) == [("a", "Asia/Kolkata", 0, False)]


async def test_one_replica_at_a_time(database_url: str) -> None:
    requested(database_url, "a", "Asia/Kolkata")
    with psycopg.connect(database_url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(hashtext('keep requested zones'))")
        assert await keep_requested_zones(database_url, 1, IDLE) == ([], [])
    assert await keep_requested_zones(database_url, 1, IDLE) == ([("a", "Asia/Kolkata")], [])
