"""Stats answers kept by site version (ingest/stats_answers.py), against a real PostgreSQL: a
question asked again with nothing of its site committed in between is answered without a
statement, a batch of the site or a command makes it computed again (and right), another
site's batch does not, identical questions asked at once share one statement, and what is
kept stays within its bound."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool
from starlette.routing import Route

from consumer.batch import to_row
from consumer.imports import import_export
from consumer.imports_write import remove_imports
from consumer.rebuild import rebuild_rollups
from consumer.retention import apply_retention
from consumer.seal import seal_closed_days
from consumer.write import Writer
from consumer.zones import add_zone, remove_zone
from ingest.database import make_pool
from ingest.stats_answers import StatsAnswers
from tests.integration.exports_support import zip_of
from tests.integration.test_stats_raw_reads import _waiting_on_a_lock, api_settings, make_app
from tests.support import make_record, wait_for

pytestmark = pytest.mark.postgres

SITE = "site-answers"
MONTH = {"site_id": SITE, "period": "month", "date": "2025-11-12"}
# What the answers below read: SITE's November, in UTC.
SPAN = (SITE, dt.date(2025, 11, 1), dt.date(2025, 11, 30))


def _span(site: str) -> tuple[str, dt.date, dt.date]:
    return (site, *SPAN[1:])


def _answers(app: Any) -> StatsAnswers:
    route = next(r for r in app.routes if isinstance(r, Route) and r.path.endswith("/aggregate"))
    answers = route.endpoint.__self__._answers
    assert isinstance(answers, StatsAnswers)
    return answers


def _snapshot(database_url: str) -> tuple[int, int]:
    """The versions answers about SITE are kept by: the epoch and the site's."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        [row] = conn.execute(
            "SELECT (SELECT epoch FROM data_epoch),"
            " coalesce((SELECT version FROM site_versions WHERE site_id = %s), 0)",
            (SITE,),
        ).fetchall()
    return int(row[0]), int(row[1])


async def _write(database_url: str, users: list[str], offset: int) -> None:
    writer = Writer(database_url, "g", "events")
    try:
        rows = [to_row(make_record(site_id=SITE, user_id=user, path="/p")) for user in users]
        await writer.write(rows, {0: offset + len(rows)}, {0: offset} if offset else {})
    finally:
        await writer.close()


async def _twice_in_one_snapshot(
    database_url: str, ask: Callable[[], Awaitable[Any]]
) -> tuple[Any, Any]:
    """Asks twice with no version of SITE bumped in between (tries again when one was)."""
    for _ in range(20):
        before = _snapshot(database_url)
        first, second = await ask(), await ask()
        if _snapshot(database_url) == before:
            return first, second
    raise AssertionError("SITE's versions never stayed the same for two requests")


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    """The API's pool on the test's database, opened."""
    opened = make_pool(api_settings(database_url))
    await opened.open(wait=True)
    try:
        yield opened
    finally:
        await opened.close()


@contextlib.asynccontextmanager
async def _api(database_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, StatsAnswers]]:
    """A client of an API on the test's database that keeps answers, and its answers."""
    pool, app = await _client_app(database_url)
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield client, _answers(app)
    finally:
        await pool.close()


async def _client_app(database_url: str, **overrides: Any) -> tuple[Any, Any]:
    settings = api_settings(database_url, stats_answer_cache_mb=1, **overrides)
    pool = make_pool(settings)
    await pool.open(wait=True)
    return pool, make_app(settings, pool)


async def test_an_answer_is_kept_until_a_commit_then_computed_again(database_url: str) -> None:
    await _write(database_url, ["u1", "u2"], 0)
    async with _api(database_url) as (client, answers):

        async def ask() -> httpx.Response:
            return await client.get("/api/v1/stats/aggregate", params=MONTH)

        first, second = await _twice_in_one_snapshot(database_url, ask)
        assert first.status_code == second.status_code == 200
        assert first.content == second.content
        assert first.json()["results"]["visitors"]["value"] == 2
        assert answers.counts["hit"] >= 1
        assert answers.stored_bytes > 0

        # A batch commits: the same question is computed again, and counts it.
        computed = answers.counts["computed"]
        await _write(database_url, ["u3"], 2)
        third = await ask()
        assert third.json()["results"]["visitors"]["value"] == 3
        assert answers.counts["computed"] > computed

        # The base contract's answer is kept the same way, byte for byte.
        legacy = {"site_id": SITE, "date": "2025-11-12"}
        one, two = await _twice_in_one_snapshot(
            database_url, lambda: client.get("/stats", params=legacy)
        )
        assert one.content == two.content
        assert one.json()["total_views"] == 3


async def test_identical_questions_at_once_share_one_statement(database_url: str) -> None:
    """Five clients ask the same question while `events` is locked: one statement waits on
    the lock, the other four wait for its answer, and all five get it once it is released."""
    await _write(database_url, ["u1"], 0)
    # Browsers among one country's hits in a zone whose midnights are not UTC's read raw events
    # at the range's partial UTC days: the statement waits on the lock.
    question = {
        **MONTH,
        "period": "day",
        "timezone": "Asia/Kathmandu",
        "property": "visit:browser",
        "filters": "visit:country==NL",
    }
    pool, app = await _client_app(
        database_url, stats_statement_timeout_ms=0, stats_raw_statement_timeout_ms=0
    )
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            answers = _answers(app)
            with psycopg.connect(database_url) as holder:
                holder.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
                asked = [
                    asyncio.create_task(client.get("/api/v1/stats/breakdown", params=question))
                    for _ in range(5)
                ]
                await wait_for(
                    lambda: answers.running[1] == 5,
                    timeout_s=30,
                    what="five requests waiting for answers",
                )
                await wait_for(
                    lambda: _waiting_on_a_lock(database_url) >= 1,
                    timeout_s=30,
                    what="a statement waiting on the lock",
                )
                waiting = _waiting_on_a_lock(database_url)
                computations = answers.running[0]
            async with asyncio.timeout(60):
                responses = await asyncio.gather(*asked)
    finally:
        await pool.close()
    assert [r.status_code for r in responses] == [200] * 5
    assert len({r.content for r in responses}) == 1
    # Something else committing in the cluster meanwhile would give a second snapshot (and
    # one more statement), never a wrong answer.
    assert waiting == computations <= 2
    assert answers.counts["joined"] == 5 - computations
    assert answers.counts["computed"] == computations


async def test_what_is_kept_stays_within_its_bound_and_failures_are_not(
    database_url: str, pool: AsyncConnectionPool[Any]
) -> None:
    answers = StatsAnswers(max_bytes=2_000)
    calls: list[str] = []

    def computing(body: bytes) -> Callable[[], Awaitable[bytes]]:
        async def compute() -> bytes:
            calls.append("x")
            return body

        return compute

    async def failing() -> bytes:
        calls.append("failed")
        raise RuntimeError("the statement failed")

    small = await _twice_in_one_snapshot(
        database_url, lambda: answers.answer(pool, SPAN, b"small", computing(b"s" * 500))
    )
    assert small == (b"s" * 500, b"s" * 500)
    assert answers.counts["hit"] >= 1
    # Larger than the whole bound: answered, never kept.
    calls.clear()
    await _twice_in_one_snapshot(
        database_url, lambda: answers.answer(pool, SPAN, b"large", computing(b"l" * 5_000))
    )
    assert len(calls) == 2
    assert answers.stored_bytes <= 2_000
    # Many answers: the least recently used go first, the total stays within the bound.
    for i in range(20):
        await answers.answer(pool, SPAN, b"many %d" % i, computing(b"m" * 300))
    assert 0 < answers.stored_bytes <= 2_000
    # A failure is not kept: the next request computes again.
    calls.clear()
    for _ in range(2):
        with pytest.raises(RuntimeError, match="the statement failed"):
            await answers.answer(pool, SPAN, b"failing", failing)
    assert calls == ["failed", "failed"]
    # Turned off: computed every time, and no snapshot read.
    off = StatsAnswers(max_bytes=0)
    calls.clear()
    for _ in range(2):
        await off.answer(pool, SPAN, b"off", computing(b"o"))
    assert calls == ["x", "x"] and off.counts == {"hit": 0, "joined": 0, "computed": 2}


async def test_parameters_the_answer_does_not_read_share_its_answer(database_url: str) -> None:
    await _write(database_url, ["u1"], 0)
    async with _api(database_url) as (client, answers):

        async def ask_twice() -> tuple[httpx.Response, httpx.Response]:
            return (
                await client.get("/api/v1/stats/aggregate", params=MONTH),
                await client.get("/api/v1/stats/aggregate", params={**MONTH, "junk": "x"}),
            )

        for _ in range(20):
            before, hits = _snapshot(database_url), answers.counts["hit"]
            plain, junk = await ask_twice()
            if _snapshot(database_url) == before:
                break
        assert plain.content == junk.content
        assert answers.counts["hit"] == hits + 1
        # What the answer reads is part of the question: page views named as asked.
        named = await client.get(
            "/api/v1/stats/aggregate", params={**MONTH, "metrics": "pageviews"}
        )
        assert "pageviews" in named.json()["results"]


async def test_an_import_shows_in_the_next_answer(database_url: str, tmp_path: Path) -> None:
    """Whether a site has imports is kept per process; an answer kept for a version reads it
    as of that epoch, so an import shows at once, not when something else commits."""
    await _write(database_url, ["u1"], 0)
    async with _api(database_url) as (client, _):
        before = await client.get("/api/v1/stats/aggregate", params=MONTH)
        assert before.json()["results"]["visitors"]["value"] == 1
        text = "date,visitors,pageviews,bounces,visits,visit_duration\n"
        text += "2025-11-10,100,100,0,100,0\n"
        path = tmp_path / "history.zip"
        path.write_bytes(zip_of({"imported_visitors_20251110_20251110.csv": text}))
        await import_export(database_url, path, SITE, lambda line: None)
        after = await client.get("/api/v1/stats/aggregate", params=MONTH)
        assert after.json()["results"]["visitors"]["value"] == 101
        assert after.json().get("imports_included") is True


async def test_a_client_refused_a_slot_does_not_refuse_the_others_who_joined(
    database_url: str,
) -> None:
    """Client X holds its whole share of the costly slots (two questions waiting on a lock),
    then asks a third, which waits for X's turn; clients Y and Z ask the same question and
    join that computation. When X's wait runs out, X gets 503; Y and Z ask again, sharing
    one computation under the first one's share (a slot is free), and get the answer."""
    writer = Writer(database_url, "g", "events")
    try:
        days = (12, 13)
        rows = [to_row(make_record(site_id=SITE, user_id=f"u{d}", timestamp=_at(d))) for d in days]
        await writer.write(rows, {0: 2}, {})
    finally:
        await writer.close()
    settings = api_settings(
        database_url,
        stats_answer_cache_mb=1,
        stats_costly_concurrency=3,
        stats_costly_wait_ms=500,
        stats_raw_concurrency=8,
        db_pool_max_size=8,
        stats_statement_timeout_ms=0,
        stats_raw_statement_timeout_ms=0,
        stats_lock_timeout_ms=0,
    )
    pool = make_pool(settings)
    await pool.open(wait=True)
    app = make_app(settings, pool)

    def client(address: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, client=(address, 1))
        return httpx.AsyncClient(transport=transport, base_url="http://t")

    # Two filters on a visit's context are read from raw events: costly plans.
    def asked(filters: str, day: str) -> dict[str, str]:
        return {"site_id": SITE, "period": "day", "date": day, "filters": filters}

    x, y, z = client("10.0.0.1"), client("10.0.0.2"), client("10.0.0.3")
    try:
        with psycopg.connect(database_url) as holder:
            holder.execute("LOCK TABLE events_20251112 IN ACCESS EXCLUSIVE MODE")
            held = [
                asyncio.create_task(
                    x.get(
                        "/api/v1/stats/aggregate",
                        params=asked(f"visit:os!={i};visit:device!=ZZ", "2025-11-12"),
                    )
                )
                for i in "AB"
            ]
            await wait_for(
                lambda: _waiting_on_a_lock(database_url) == 2,
                timeout_s=30,
                what="client X's two statements waiting on the lock",
            )
            question = asked("visit:country!=ZZ;visit:device!=ZZ", "2025-11-13")
            from_x = asyncio.create_task(x.get("/api/v1/stats/aggregate", params=question))
            answers = _answers(app)
            await wait_for(
                lambda: answers.running[0] == 3,
                timeout_s=30,
                what="client X's third question computing",
            )
            joining = [
                asyncio.create_task(y.get("/api/v1/stats/aggregate", params=question)),
                asyncio.create_task(z.get("/api/v1/stats/aggregate", params=question)),
            ]
            # Y and Z wait for X's third computation (nothing committed in between).
            await wait_for(
                lambda: answers.running == (3, 5),
                timeout_s=30,
                what="Y and Z waiting for X's computation",
            )
            async with asyncio.timeout(60):
                from_y, from_z = await asyncio.gather(*joining)
                refused = await from_x
            holder.rollback()
        async with asyncio.timeout(60):
            await asyncio.gather(*held)
    finally:
        await x.aclose()
        await y.aclose()
        await z.aclose()
        await pool.close()
    assert refused.status_code == 503 and refused.json()["code"] == "stats_busy"
    assert from_y.status_code == from_z.status_code == 200
    assert from_y.json()["results"]["visitors"]["value"] == 1
    assert from_y.content == from_z.content
    # One outcome per request: X's two held questions and X's refused one computed, and Y
    # and Z asked again together (one computing, the other joining it) unless something
    # committed between them.
    assert sum(answers.counts.values()) == 5
    assert answers.counts["computed"] + answers.counts["joined"] == 5


def _at(day: int) -> dt.datetime:
    return dt.datetime(2025, 11, day, 10, tzinfo=dt.UTC)


async def test_requests_arriving_together_share_one_read_of_the_version(
    pool: AsyncConnectionPool[Any],
) -> None:
    answers = StatsAnswers(max_bytes=1_000_000)

    async def compute() -> bytes:
        return b"answer"

    sites = [f"site-{i % 4}" for i in range(20)]
    bodies = await asyncio.gather(
        *(answers.answer(pool, _span(site), b"q " + site.encode(), compute) for site in sites)
    )
    assert bodies == [b"answer"] * 20
    # All twenty were waiting when the read started: one statement for them all, whatever
    # their sites.
    assert answers._versions.reads == 1
    assert answers.counts["computed"] == 4
    assert answers.counts["joined"] + answers.counts["hit"] == 16
    # A request after it gets a read of its own (something may have committed since).
    await answers.answer(pool, _span("site-0"), b"q site-0", compute)
    assert answers._versions.reads == 2


async def test_a_batch_of_another_site_leaves_a_sites_answers_kept(database_url: str) -> None:
    await _write(database_url, ["u1"], 0)
    async with _api(database_url) as (client, answers):

        async def visitors() -> int:
            r = await client.get("/api/v1/stats/aggregate", params=MONTH)
            return int(r.json()["results"]["visitors"]["value"])

        assert await visitors() == 1
        computed = answers.counts["computed"]
        # Another site's batch commits: the answer stays kept.
        writer = Writer(database_url, "g", "events")
        try:
            other = [to_row(make_record(site_id="other-site", user_id="x", path="/p"))]
            await writer.write(other, {1: 1}, {})
        finally:
            await writer.close()
        assert await visitors() == 1
        assert answers.counts["computed"] == computed
        # A batch of the site itself: computed again, and right.
        await _write(database_url, ["u2"], 1)
        assert await visitors() == 2
        assert answers.counts["computed"] == computed + 1


def _epoch(database_url: str) -> int:
    return int(_snapshot(database_url)[0])


async def test_every_command_that_changes_what_stats_read_bumps_the_epoch(
    database_url: str, tmp_path: Path
) -> None:
    """Seal, zones, rebuild, retention and imports change rollups no batch versions: each
    bumps the epoch in its transaction, so every kept answer is computed again."""
    old = make_record(site_id=SITE, user_id="u0", timestamp=dt.datetime(2025, 10, 2, tzinfo=dt.UTC))
    writer = Writer(database_url, "g", "events")
    try:
        await writer.write([to_row(old)], {0: 1}, {})
    finally:
        await writer.close()
    await _write(database_url, ["u1"], 1)
    steps: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("seal", lambda: seal_closed_days(database_url, dt.date(2025, 12, 20))),
        ("zones add", lambda: add_zone(database_url, SITE, "Asia/Kolkata")),
        ("zones remove", lambda: remove_zone(database_url, SITE, "Asia/Kolkata")),
        (
            "rebuild",
            lambda: rebuild_rollups(database_url, dt.date(2025, 11, 1), dt.date(2025, 11, 30)),
        ),
        ("retention", lambda: apply_retention(database_url, 30, dt.date(2025, 11, 20))),
    ]
    path = tmp_path / "history.zip"
    text = "date,visitors,pageviews,bounces,visits,visit_duration\n2025-11-10,1,1,0,1,0\n"
    path.write_bytes(zip_of({"imported_visitors_20251110_20251110.csv": text}))
    steps.append(("import", lambda: import_export(database_url, path, SITE, lambda line: None)))

    async def remove() -> None:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            assert await remove_imports(conn, SITE)

    steps.append(("import removal", remove))
    for name, step in steps:
        before = _epoch(database_url)
        await step()
        assert _epoch(database_url) > before, name


async def test_a_database_not_yet_migrated_answers_503_naming_the_migration(
    database_url: str,
) -> None:
    """An API of this release on a database its migrations have not reached (no data_epoch,
    which 0016 adds) says what to run instead of answering 500."""
    await _write(database_url, ["u1"], 0)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DROP TABLE data_epoch")
    async with _api(database_url) as (client, _):
        response = await client.get("/api/v1/stats/aggregate", params=MONTH)
    assert response.status_code == 503 and response.headers["retry-after"] == "60"
    body = response.json()
    assert body["code"] == "schema_outdated"
    assert "python -m consumer.migrate" in body["message"]


class _Batches:
    """Consumer batches of SITE, each one transaction of the Writer, as a replica commits."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.offset = 0

    async def write(self, *events: tuple[str, dt.datetime]) -> None:
        """Stores one page view per (visitor, time)."""
        rows = [
            to_row(make_record(site_id=SITE, user_id=user, timestamp=at, received_at=at))
            for user, at in events
        ]
        writer = Writer(self.database_url, "g", "events")
        try:
            previous = {0: self.offset} if self.offset else {}
            self.offset += len(rows)
            await writer.write(rows, {0: self.offset}, previous)
        finally:
            await writer.close()


def _utc(day: int, hour: int, minute: int = 0, month: int = 11) -> dt.datetime:
    return dt.datetime(2025, month, day, hour, minute, tzinfo=dt.UTC)


async def test_a_batch_of_other_days_leaves_an_answer_kept(database_url: str) -> None:
    """Answers are keyed by the UTC days they read: a batch of December keeps the answers
    about November, in UTC and in a zone whose November ends before December's first UTC
    hours; a batch on a day the range touches, even only through its zone's offset, sends it
    back to PostgreSQL, and the new answer counts it."""
    batches = _Batches(database_url)
    await batches.write(("u1", _utc(12, 10)))
    new_york = {**MONTH, "timezone": "America/New_York"}
    december = {**MONTH, "date": "2025-12-03"}
    async with _api(database_url) as (client, answers):

        async def visitors(params: dict[str, str]) -> int:
            response = await client.get("/api/v1/stats/aggregate", params=params)
            assert response.status_code == 200, response.text
            return int(response.json()["results"]["visitors"]["value"])

        assert [await visitors(p) for p in (MONTH, new_york, december)] == [1, 1, 0]
        computed = answers.counts["computed"]

        # December 3: neither November is touched; December is computed again.
        await batches.write(("u2", _utc(3, 12, month=12)))
        assert [await visitors(p) for p in (MONTH, new_york)] == [1, 1]
        assert answers.counts["computed"] == computed
        assert await visitors(december) == 1
        assert answers.counts["computed"] == computed + 1

        # December 1, 03:00 UTC is November 30 in New York: its November (and the base
        # contract's November 30 there) is computed again and counts the visitor; UTC's
        # November is still kept.
        legacy_ny = {"site_id": SITE, "date": "2025-11-30", "timezone": "America/New_York"}

        async def legacy_views() -> int:
            response = await client.get("/stats", params=legacy_ny)
            assert response.status_code == 200, response.text
            return int(response.json()["total_views"])

        assert await legacy_views() == 0
        await batches.write(("u3", _utc(1, 3, month=12)))
        hits = answers.counts["hit"]
        assert await visitors(MONTH) == 1
        assert answers.counts["hit"] == hits + 1
        assert await visitors(new_york) == 2
        assert await legacy_views() == 1

        # A batch in UTC's November: computed again.
        await batches.write(("u4", _utc(20, 8)))
        assert await visitors(MONTH) == 2


async def test_a_visit_changed_on_another_day_than_the_batchs_events(database_url: str) -> None:
    """The visit rollups count a visit on the day it starts: a batch whose events are on
    November 13 can extend a visit of the 12th, and a late one on the 11th can move a visit
    out of the 12th. Both change the 12th's answer, which is computed again."""
    batches = _Batches(database_url)
    await batches.write(("extended", _utc(12, 23, 50)), ("moved", _utc(12, 0, 10)))
    day = {"site_id": SITE, "period": "day", "date": "2025-11-12"}
    question = {**day, "metrics": "visits,visit_duration"}
    async with _api(database_url) as (client, _):

        async def visits() -> tuple[int, int]:
            response = await client.get("/api/v1/stats/aggregate", params=question)
            assert response.status_code == 200, response.text
            results = response.json()["results"]
            return int(results["visits"]["value"]), int(results["visit_duration"]["value"])

        assert await visits() == (2, 0)
        # The visit of 23:50 goes on past midnight, ten minutes: its duration is the 12th's.
        await batches.write(("extended", _utc(13, 0, 0)))
        assert await visits() == (2, 300)
        # An event at 23:55 on the 11th starts the visit that began at 00:10 on the 12th.
        await batches.write(("moved", _utc(11, 23, 55)))
        assert await visits() == (1, 600)


async def test_a_batch_that_stamps_no_day_sends_every_answer_back(database_url: str) -> None:
    """A consumer of the release before migration 0020 bumps the site's version but stamps no
    day. Until a batch of this release comes, the API keys the site's answers by that version;
    after one (which stamps December only), the old batch's version still keys them: an answer
    about a day the old batch wrote counts it, whether or not it was asked in between."""
    batches = _Batches(database_url)
    await batches.write(("u1", _utc(12, 10)))
    day = {"site_id": SITE, "period": "day", "date": "2025-11-20"}
    async with _api(database_url) as (client, answers):

        async def visitors(params: dict[str, str]) -> int:
            response = await client.get("/api/v1/stats/aggregate", params=params)
            return int(response.json()["results"]["visitors"]["value"])

        assert [await visitors(MONTH), await visitors(day)] == [1, 0]
        # What an older consumer's batch leaves: the version bumped, no day stamped.
        await batches.write(("u2", _utc(20, 8)))
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(
                "DELETE FROM site_day_versions WHERE site_id = %s AND day = '2025-11-20'", (SITE,)
            )
            conn.execute(
                "UPDATE site_versions SET stamped = stamped - 1 WHERE site_id = %s", (SITE,)
            )
        assert await visitors(MONTH) == 2  # asked before any batch of this release
        await batches.write(("u3", _utc(3, 12, month=12)))
        assert await visitors(day) == 1  # asked only after one
        computed = answers.counts["computed"]
        assert [await visitors(MONTH), await visitors(day)] == [2, 1]
        assert answers.counts["computed"] == computed  # and kept again
