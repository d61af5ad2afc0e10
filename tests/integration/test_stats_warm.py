"""Each new stats connection asks the dashboard's default view before it serves (against a
real PostgreSQL): it reads the rollups of every zone kind for a site no event can carry,
notes nothing, loads the kept zones as the planner's facts, leaves the connection idle, and
on a database missing what it reads it gives up (saying so once) without keeping the pool
from handing the connection out."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
import psycopg
import pytest
from prometheus_client import generate_latest

from core.events import MAX_SITE_ID_BYTES, InvalidEvent, decode_event
from ingest import stats_warm
from ingest.database import make_pool
from ingest.metrics import IngestMetrics
from ingest.stats_expect import FACTS, Facts
from ingest.stats_warm import WARM_SITE, configure, warm
from tests.integration.test_stats_raw_reads import api_settings
from tests.support import scalar

pytestmark = pytest.mark.postgres

# Read by the view in UTC (whole days), in Berlin (hours at the edges) and in Kathmandu
# (quarter hours at the edges).
READ_BY_THE_VIEW = ("daily_paths", "hourly_paths", "quarter_hour_paths", "quarter_hour_visits")
# Read by the statements a page sends besides: the kept answers' version, the realtime count.
READ_BESIDES = ("site_day_versions", "visits")


def _scans(conn: psycopg.Connection[Any]) -> dict[str, int]:
    rows = conn.execute(
        "SELECT relname, coalesce(seq_scan, 0) + coalesce(idx_scan, 0) FROM pg_stat_user_tables"
        " WHERE relname = ANY(%s)",
        ([*READ_BY_THE_VIEW, *READ_BESIDES],),
    ).fetchall()
    return dict(rows)


async def _warmed(database_url: str) -> psycopg.pq.TransactionStatus:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await warm(conn, exact_max_rows=10_000)
        # This backend's table counters reach pg_stat_user_tables at its next report.
        await conn.execute("SELECT pg_stat_force_next_flush()")
        await conn.execute("SELECT 1")
        return conn.info.transaction_status


async def test_the_warm_up_reads_the_views_rollups_and_notes_nothing(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        before = _scans(conn)
    status = await _warmed(database_url)
    assert status == psycopg.pq.TransactionStatus.IDLE
    with psycopg.connect(database_url) as conn:
        after = _scans(conn)
    read = (*READ_BY_THE_VIEW, *READ_BESIDES)
    assert {t: after[t] > before.get(t, 0) for t in read} == dict.fromkeys(read, True)
    # No zone asked for, nothing of the warm-up site stored.
    assert scalar(database_url, "SELECT count(*) FROM zone_requests") == 0
    assert scalar(database_url, "SELECT count(*) FROM site_versions") == 0


def test_the_warm_up_site_is_one_no_event_can_carry() -> None:
    assert len(WARM_SITE) > MAX_SITE_ID_BYTES
    event = {
        "site_id": WARM_SITE,
        "event_type": "page_view",
        "path": "/",
        "user_id": "u",
        "timestamp": "2025-11-12T10:00:00Z",
    }
    with pytest.raises(InvalidEvent, match="site_id"):
        decode_event(msgspec.json.encode(event))  # what /event and /events decode with


async def test_the_zones_sites_keep_seed_the_facts_once_a_process(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO site_zones (site_id, timezone, auto)"
            " VALUES ('kept', 'Asia/Kolkata', true), ('learnt', 'Asia/Tokyo', true)"
        )
    monkeypatch.setattr(stats_warm._ONCE, "seeded", False)
    FACTS.clear()
    try:
        # What a request reported before the seed is not overwritten by it.
        FACTS.put("learnt", "Asia/Tokyo", Facts(kept=False, sealed_before=None))
        await _warmed(database_url)
        # A restarted API guesses a kept zone kept, and any other pair not kept.
        assert FACTS.guess("kept", "Asia/Kolkata") == Facts(kept=True, sealed_before=None)
        assert FACTS.guess("kept", "Europe/Berlin") == Facts(kept=False, sealed_before=None)
        assert FACTS.get("learnt", "Asia/Tokyo") == Facts(kept=False, sealed_before=None)
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO site_zones (site_id, timezone, auto) VALUES ('b', 'UTC', true)"
            )
        await _warmed(database_url)  # the next connection: no second load
        assert FACTS.get("b", "UTC") is None
    finally:
        FACTS.clear()


async def test_a_database_missing_what_the_view_reads_still_gets_its_connections(
    database_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DROP TABLE quarter_hour_paths")
    monkeypatch.setattr(stats_warm._ONCE, "warned", False)
    with caplog.at_level(logging.DEBUG, logger=stats_warm.__name__):
        assert await _warmed(database_url) == psycopg.pq.TransactionStatus.IDLE
        assert await _warmed(database_url) == psycopg.pq.TransactionStatus.IDLE
    said = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in said] == [logging.WARNING, logging.DEBUG]  # once a process
    assert "quarter_hour_paths" in said[0][1]
    settings = api_settings(database_url, db_pool_max_size=1, stats_warm_connections=True)
    warming = configure(settings)
    assert warming is not None
    async with make_pool(settings, warming) as pool:
        metrics = IngestMetrics(set())
        metrics.track_pool(pool.get_stats)
        await pool.wait(timeout=10)
        async with pool.connection() as conn:
            assert await (await conn.execute("SELECT 1")).fetchone() == (1,)
        exposed = generate_latest(metrics.registry).decode()
        assert "stats_pool_connections 1.0" in exposed
        assert "stats_pool_available 1.0" in exposed


def test_the_warm_up_is_a_setting() -> None:
    assert configure(api_settings("postgresql://unused", stats_warm_connections=False)) is None
