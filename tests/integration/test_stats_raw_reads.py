"""Questions read from raw events hold a share of the stats pool, not all of it: against a real
PostgreSQL, raw statements held up by a lock on `events` fill their slots, one more is
answered 503 `stats_busy` at once, and questions rollups answer keep answering 200."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import msgspec
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette

from ingest.app import handle_api_error
from ingest.database import make_pool
from ingest.errors import ApiError
from ingest.settings import Settings
from ingest.stats_routes import stats_routes
from tests.support import wait_for

pytestmark = pytest.mark.postgres

RAW_TOTALS = {
    "site_id": "site-raw",
    "period": "12mo",
    "date": "2025-11-12",
    # Two context filters: one alone is answered from daily_dimensions.
    "filters": "visit:country!=ZZ;visit:device!=ZZ",
}
RAW_QUESTION = {**RAW_TOTALS, "property": "event:page"}
ROLLUP_QUESTION = {"site_id": "site-other", "period": "day", "date": "2025-11-12"}


def api_settings(database_url: str, **overrides: Any) -> Settings:
    base = Settings(
        database_url=database_url,
        db_pool_max_size=4,
        stats_rate_limit_per_s=0.0,
        stats_client_rate_limit_per_s=0.0,
        retry_after_s=3,
        # These tests count statements running at once for the same question: with answers
        # shared by snapshot they would be one (tests/integration/test_stats_answers.py).
        stats_answer_cache_mb=0,
    )
    return msgspec.structs.replace(base, **overrides)


def make_app(settings: Settings, pool: AsyncConnectionPool[Any]) -> Starlette:
    app = Starlette(routes=stats_routes(settings), exception_handlers={ApiError: handle_api_error})
    app.state.pool = pool
    return app


def _waiting_on_a_lock(database_url: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        [(count,)] = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = 'analytics-api' AND wait_event_type = 'Lock'"
        ).fetchall()
    return int(count)


async def test_raw_questions_fill_their_slots_and_the_rest_keep_answering(
    database_url: str,
) -> None:
    # No timeouts: the raw statements wait on the lock for as long as the test holds it.
    settings = api_settings(
        database_url,
        stats_raw_concurrency=2,
        stats_statement_timeout_ms=0,
        stats_raw_statement_timeout_ms=0,
        stats_lock_timeout_ms=0,
    )
    pool = make_pool(settings)
    await pool.open(wait=True)
    try:
        transport = httpx.ASGITransport(app=make_app(settings, pool))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            with psycopg.connect(database_url) as holder:
                holder.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
                held = [
                    asyncio.create_task(client.get("/api/v1/stats/breakdown", params=RAW_QUESTION))
                    for _ in range(2)
                ]
                await wait_for(
                    lambda: _waiting_on_a_lock(database_url) == 2,
                    timeout_s=30,
                    what="two raw statements waiting on the lock",
                )
                # Bounded so that, without the limit, the test fails instead of waiting
                # on the lock it holds.
                # From another client: this one holds its share of the costly slots, where
                # its next raw question would queue (ingest/stats_run.py, CostlyPlans).
                other = httpx.ASGITransport(app=transport.app, client=("127.0.0.2", 123))
                async with (
                    asyncio.timeout(60),
                    httpx.AsyncClient(transport=other, base_url="http://t") as second,
                ):
                    busy = await second.get("/api/v1/stats/aggregate", params=RAW_TOTALS)
                    rollup = await client.get("/api/v1/stats/aggregate", params=ROLLUP_QUESTION)
                    base = await client.get(
                        "/stats", params={"site_id": "site-other", "date": "2025-11-12"}
                    )
                    series = await client.get(
                        "/api/v1/stats/timeseries", params={**ROLLUP_QUESTION, "period": "7d"}
                    )
                assert not any(task.done() for task in held)
            # The lock is released: the held questions finish.
            answers = await asyncio.gather(*held)
            again = await client.get("/api/v1/stats/breakdown", params=RAW_QUESTION)
    finally:
        await pool.close()
    assert busy.status_code == 503, busy.text
    assert busy.json()["code"] == "stats_busy"
    assert "STATS_RAW_CONCURRENCY" in busy.json()["message"]
    assert busy.headers["retry-after"] == "3"
    assert rollup.status_code == 200, rollup.text
    assert base.status_code == 200, base.text
    assert base.json()["total_views"] == 0
    assert series.status_code == 200, series.text
    assert [a.status_code for a in answers] == [200, 200]
    assert again.status_code == 200, again.text


async def test_a_raw_question_runs_under_the_raw_statement_timeout(database_url: str) -> None:
    settings = api_settings(
        database_url,
        stats_statement_timeout_ms=0,
        stats_raw_statement_timeout_ms=50,
        stats_lock_timeout_ms=0,
    )
    pool = make_pool(settings)
    await pool.open(wait=True)
    try:
        transport = httpx.ASGITransport(app=make_app(settings, pool))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            with psycopg.connect(database_url) as holder:
                holder.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
                async with asyncio.timeout(60):  # without the raw timeout: fail, not hang
                    raw = await client.get("/api/v1/stats/breakdown", params=RAW_QUESTION)
            # The raw timeout was the transaction's: the connection is back to no timeout.
            async with pool.connection() as conn:
                cur = await conn.execute("SHOW statement_timeout")
                shown = await cur.fetchone()
    finally:
        await pool.close()
    assert raw.status_code == 503, raw.text
    assert raw.json()["code"] == "stats_timeout"
    assert "(50 ms)" in raw.json()["message"]
    assert "raw events" in raw.json()["message"]
    assert shown == ("0",)
