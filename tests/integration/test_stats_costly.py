"""Costly plans queue for a few slots, and the others never wait on them: against a real
PostgreSQL, costly questions held up by a lock on `events` fill the slots; a cheap question
(in the same zone) still answers 200, a costly one waits its turn and gets it once a slot is
free, or waits its longest and gets 503 `stats_busy` with Retry-After."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import psycopg
import pytest
from starlette.routing import Route

from ingest.database import make_pool
from ingest.stats_run import CostlyPlans
from tests.integration.test_stats_raw_reads import _waiting_on_a_lock, api_settings, make_app
from tests.support import wait_for

pytestmark = pytest.mark.postgres

WHEN = {"site_id": "site-costly", "period": "day", "date": "2025-11-12"}
# Browsers among one country's hits in a zone whose midnights are not UTC's: no sub-day rollup
# holds a pair of context values, so the range's partial UTC days come from raw events and the
# plan is costly.
COSTLY_QUESTION = {
    **WHEN,
    "timezone": "Asia/Kathmandu",
    "property": "visit:browser",
    "filters": "visit:country==NL",
}
# Totals in the same zone: whole UTC days, hours and quarter hours of rollups only.
CHEAP_QUESTION = {**WHEN, "timezone": "Asia/Kathmandu"}


def _costly_plans(app: Any) -> CostlyPlans:
    route = next(r for r in app.routes if isinstance(r, Route) and r.path.endswith("/breakdown"))
    plans = route.endpoint.__self__._costly
    assert isinstance(plans, CostlyPlans)
    return plans


async def _held_costly_questions(database_url: str, wait_ms: int, then: Any) -> Any:
    """Runs `then(client, app, held)` while one costly question holds the only slot, waiting
    on a lock of `events` this test holds; returns its result and the held question's answer
    after the lock is released."""
    settings = api_settings(
        database_url,
        stats_costly_concurrency=1,
        stats_costly_wait_ms=wait_ms,
        stats_statement_timeout_ms=0,
        stats_raw_statement_timeout_ms=0,
        stats_lock_timeout_ms=0,
    )
    pool = make_pool(settings)
    await pool.open(wait=True)
    try:
        app = make_app(settings, pool)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            with psycopg.connect(database_url) as holder:
                holder.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
                held = asyncio.create_task(
                    client.get("/api/v1/stats/breakdown", params=COSTLY_QUESTION)
                )
                await wait_for(
                    lambda: _waiting_on_a_lock(database_url) == 1,
                    timeout_s=30,
                    what="a costly statement waiting on the lock",
                )
                # Bounded so that, without the queue, the test fails instead of waiting on
                # the lock it holds.
                async with asyncio.timeout(60):
                    result = await then(client, app, held)
            async with asyncio.timeout(60):
                answer = await held
    finally:
        await pool.close()
    return result, answer


async def test_a_costly_question_waits_its_longest_then_is_refused(database_url: str) -> None:
    async def ask(client: httpx.AsyncClient, app: Any, held: Any) -> Any:
        cheap = await client.get("/api/v1/stats/aggregate", params=CHEAP_QUESTION)
        series = await client.get("/api/v1/stats/timeseries", params=CHEAP_QUESTION)
        busy = await client.get("/api/v1/stats/breakdown", params=COSTLY_QUESTION)
        assert not held.done()
        return cheap, series, busy

    (cheap, series, busy), held = await _held_costly_questions(database_url, 200, ask)
    assert cheap.status_code == 200, cheap.text
    assert series.status_code == 200, series.text
    assert busy.status_code == 503, busy.text
    assert busy.json()["code"] == "stats_busy"
    assert "STATS_COSTLY_CONCURRENCY" in busy.json()["message"]
    assert "raw events" in busy.json()["message"]
    assert busy.headers["retry-after"] == "3"
    assert held.status_code == 200, held.text


async def test_a_costly_question_queues_for_its_turn(database_url: str) -> None:
    async def ask(client: httpx.AsyncClient, app: Any, held: Any) -> Any:
        queued = asyncio.create_task(client.get("/api/v1/stats/breakdown", params=COSTLY_QUESTION))
        plans = _costly_plans(app)
        await wait_for(lambda: plans.waiting == 1, timeout_s=30, what="one costly question queued")
        cheap = await client.get("/api/v1/stats/aggregate", params=CHEAP_QUESTION)
        assert not queued.done() and _waiting_on_a_lock(database_url) == 1
        return cheap, queued

    (cheap, queued), held = await _held_costly_questions(database_url, 60_000, ask)
    assert cheap.status_code == 200, cheap.text
    assert held.status_code == 200, held.text
    async with asyncio.timeout(60):
        answer = await queued
    assert answer.status_code == 200, answer.text
    assert answer.json()["results"] == []
