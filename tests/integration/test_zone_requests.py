"""Zones kept because stats are read in them (consumer/zone_requests.py), against a real
PostgreSQL: the API counts requests per zone, consumer rounds keep and drop zones."""

from __future__ import annotations

import asyncio
import datetime as dt

import httpx
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette

from consumer.zone_requests import keep_requested_zones
from consumer.zones import add_zone, list_zones, remove_zone
from consumer.zones import main as zones_main
from ingest import stats_response
from ingest.settings import Settings
from ingest.stats_params import parse_stats
from ingest.stats_routes import stats_routes
from ingest.zone_requests import ZoneRequests
from tests.support import assert_rollups_match_raw_rows, make_record, scalar, write_batch

pytestmark = pytest.mark.postgres

IDLE = dt.timedelta(days=30)
NOW = dt.datetime(2025, 11, 20, tzinfo=dt.UTC)


async def visitors(pool: AsyncConnectionPool, site: str, zone: str) -> dict[str, object]:  # type: ignore[type-arg]
    request = parse_stats(
        {"site_id": site, "timezone": zone, "period": "month", "date": "2025-11-12"}, now=NOW
    )
    return await stats_response.aggregate(pool, request, exact_max_rows=0)


def requested(
    database_url: str, site: str, zone: str, days_ago: int = 0, requests: int = 1
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO zone_requests (site_id, timezone, requests, first_requested_at,"
            " last_requested_at) VALUES (%s, %s, %s, now() - %s, now() - %s)"
            " ON CONFLICT (site_id, timezone) DO UPDATE"
            " SET last_requested_at = EXCLUDED.last_requested_at",
            (
                site,
                zone,
                requests,
                dt.timedelta(days=days_ago, seconds=1),
                dt.timedelta(days=days_ago),
            ),
        )


async def keep_round(database_url: str, per_site: int = 1, most: int = 100) -> object:
    return await keep_requested_zones(database_url, per_site, most, IDLE)


async def test_the_api_counts_requests_per_zone_and_writes_them_in_one_go(
    database_url: str,
) -> None:
    await write_batch(database_url, [make_record(site_id="a", user_id=f"u{i}") for i in range(5)])
    zone_requests = ZoneRequests()
    app = Starlette(routes=stats_routes(Settings(stats_rate_limit_per_s=0), zone_requests))
    async with AsyncConnectionPool(database_url, min_size=1, max_size=2) as pool:
        app.state.pool = pool
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            month = {"site_id": "a", "period": "month", "date": "2025-11-12"}
            for zone, path in [
                ("Asia/Kathmandu", "/api/v1/stats/aggregate"),
                ("Asia/Kathmandu", "/api/v1/stats/breakdown"),
                ("Asia/Kathmandu", "/api/v1/stats/timeseries"),
                ("Europe/London", "/stats"),  # a UTC-aligned day still counts for its zone
                ("UTC", "/api/v1/stats/aggregate"),  # UTC days need no zone
            ]:
                params = (
                    {**month, "timezone": zone}
                    if path != "/stats"
                    else {"site_id": "a", "date": "2025-11-12", "timezone": zone}
                )
                assert (await client.get(path, params=params)).status_code == 200
        assert scalar(database_url, "SELECT count(*) FROM zone_requests") == 0  # not yet
        assert await zone_requests.flush(pool) == 2
        assert await zone_requests.flush(pool) == 0
        with psycopg.connect(database_url) as conn:
            rows = conn.execute(
                "SELECT site_id, timezone, requests FROM zone_requests ORDER BY 2"
            ).fetchall()
        assert rows == [("a", "Asia/Kathmandu", 3), ("a", "Europe/London", 1)]
        before = await visitors(pool, "a", "Asia/Kathmandu")
        assert await keep_round(database_url) == ([("a", "Asia/Kathmandu")], [])
        assert await list_zones(database_url) == [("a", "Asia/Kathmandu", 1, True)]
        assert await visitors(pool, "a", "Asia/Kathmandu") == before
        with psycopg.connect(database_url, autocommit=True) as conn:  # read from its rollups:
            conn.execute("UPDATE local_daily_stats SET page_views = page_views + 1000")
        damaged = await visitors(pool, "a", "Asia/Kathmandu")
        assert damaged["results"]["views"]["value"] == before["results"]["views"]["value"] + 1000  # type: ignore[index]
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("UPDATE local_daily_stats SET page_views = page_views - 1000")
    assert_rollups_match_raw_rows(database_url)


async def test_rounds_keep_up_to_the_caps_and_drop_idle_zones_they_kept(
    database_url: str,
) -> None:
    await write_batch(database_url, [make_record(site_id=s) for s in ("a", "b", "c")])
    await add_zone(database_url, "a", "America/St_Johns")  # an operator's: not counted or dropped
    requested(database_url, "a", "America/St_Johns", days_ago=90)
    requested(database_url, "a", "Asia/Kathmandu", requests=5)
    requested(database_url, "a", "Asia/Kolkata", requests=9)  # the most requested of a's
    requested(database_url, "b", "Asia/Kolkata")
    requested(database_url, "b", "Australia/Adelaide", days_ago=3)  # not asked for lately
    requested(database_url, "no-events", "Asia/Kolkata", requests=100)  # a site with no events
    assert await keep_round(database_url) == (
        [("a", "Asia/Kolkata"), ("b", "Asia/Kolkata")],
        [],
    )
    assert await keep_round(database_url) == ([], [])  # a is at its cap
    requested(database_url, "a", "Asia/Kolkata", days_ago=31)
    assert await keep_round(database_url) == ([("a", "Asia/Kathmandu")], [("a", "Asia/Kolkata")])
    assert [(s, z, auto) for s, z, _, auto in await list_zones(database_url)] == [
        ("a", "America/St_Johns", False),
        ("a", "Asia/Kathmandu", True),
        ("b", "Asia/Kolkata", True),
    ]
    # Requests as old as that are forgotten; an operator's zone keeps its row.
    assert scalar(database_url, "SELECT count(*) FROM zone_requests WHERE site_id = 'a'") == 2
    # The total cap; and with none per site, rounds only drop.
    requested(database_url, "c", "Asia/Kolkata")
    assert await keep_round(database_url, most=2) == ([], [])
    requested(database_url, "b", "Asia/Kolkata", days_ago=40)
    assert await keep_round(database_url, per_site=0) == ([], [("b", "Asia/Kolkata")])
    assert_rollups_match_raw_rows(database_url)


async def test_a_zone_that_cannot_be_kept_is_declined_and_does_not_block_others(
    database_url: str,
) -> None:
    await write_batch(database_url, [make_record(site_id="a"), make_record(site_id="b")])
    requested(database_url, "a", "Mars/Olympus_Mons", requests=50)  # unknown to PostgreSQL
    requested(database_url, "a", "Africa/Abidjan", requests=40)  # its days are UTC days
    requested(database_url, "b", "Asia/Kolkata")
    assert await keep_round(database_url) == ([("b", "Asia/Kolkata")], [])
    with psycopg.connect(database_url) as conn:
        declined = conn.execute(
            "SELECT timezone FROM zone_requests WHERE declined IS NOT NULL ORDER BY 1"
        ).fetchall()
    assert declined == [("Africa/Abidjan",), ("Mars/Olympus_Mons",)]
    assert await keep_round(database_url) == ([], [])


async def test_a_zone_an_operator_removes_is_not_brought_back_by_requests(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await write_batch(database_url, [make_record(site_id="a")])
    requested(database_url, "a", "Asia/Kolkata")
    assert await keep_round(database_url) == ([("a", "Asia/Kolkata")], [])
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert await asyncio.to_thread(zones_main, ["remove", "a", "Asia/Kolkata"]) == 0  # the CLI
    requested(database_url, "a", "Asia/Kolkata")
    assert await keep_round(database_url) == ([], [])
    assert await list_zones(database_url) == []


async def test_an_operators_add_makes_an_automatic_zone_stay(database_url: str) -> None:
    await add_zone(database_url, "a", "Asia/Kolkata", auto=True)
    await add_zone(database_url, "a", "Asia/Kolkata")
    requested(database_url, "a", "Asia/Kolkata", days_ago=90)
    assert await keep_round(database_url) == ([], [])
    assert await list_zones(database_url) == [("a", "Asia/Kolkata", 0, False)]


async def test_one_replica_at_a_time(database_url: str) -> None:
    await write_batch(database_url, [make_record(site_id="a")])
    requested(database_url, "a", "Asia/Kolkata")
    with psycopg.connect(database_url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(hashtext('keep requested zones'))")
        assert await keep_round(database_url) == ([], [])
    assert await keep_round(database_url) == ([("a", "Asia/Kolkata")], [])


async def test_dropping_an_idle_zone_spares_one_an_operator_has_made_theirs(
    database_url: str,
) -> None:
    await add_zone(database_url, "a", "Asia/Kolkata", auto=True)
    await add_zone(database_url, "a", "Asia/Kolkata")  # between a round's query and its drop
    assert not await remove_zone(database_url, "a", "Asia/Kolkata", only_auto=True)
    assert await list_zones(database_url) == [("a", "Asia/Kolkata", 0, False)]
