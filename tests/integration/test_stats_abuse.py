"""The stats API under hostile input, against a real PostgreSQL: the reproductions of issue 11
answer 400 naming their parameter, a property test finds no input answered 5xx, a costly
query or one queued behind a lock is cancelled by the pool's timeouts and answered 503, and
a client that disconnects has its query cancelled in the server."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import psycopg
import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette

from ingest.app import handle_api_error
from ingest.database import make_pool
from ingest.errors import ApiError
from ingest.settings import Settings
from ingest.stats_routes import stats_routes
from tests.support import make_record, wait_for, write_batch

pytestmark = pytest.mark.postgres

SITE = "site-abuse"
DAY = dt.datetime(2025, 11, 12, 10, tzinfo=dt.UTC)
UNLIMITED = {"stats_rate_limit_per_s": 0.0, "stats_client_rate_limit_per_s": 0.0}


def api_settings(database_url: str, **overrides: Any) -> Settings:
    return msgspec.structs.replace(
        Settings(database_url=database_url, db_pool_max_size=2, **UNLIMITED), **overrides
    )


def make_app(settings: Settings, pool: AsyncConnectionPool[Any]) -> Starlette:
    app = Starlette(routes=stats_routes(settings), exception_handlers={ApiError: handle_api_error})
    app.state.pool = pool
    return app


async def open_pool(settings: Settings) -> AsyncConnectionPool[Any]:
    pool = make_pool(settings)
    await pool.open(wait=True)
    return pool


@pytest.fixture
async def loaded(database_url: str) -> str:
    await write_batch(
        database_url,
        [
            make_record(site_id=SITE, timestamp=DAY, path=f"/p{i % 3}", user_id=f"u{i}")
            for i in range(10)
        ],
    )
    return database_url


@pytest.fixture
async def client(loaded: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = api_settings(loaded)
    pool = await open_pool(settings)
    try:
        transport = httpx.ASGITransport(app=make_app(settings, pool))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            yield c
    finally:
        await pool.close()


AGGREGATE = "/api/v1/stats/aggregate"
REPRODUCTIONS = [
    (AGGREGATE, {"period": "30d", "date": "0001-01-01"}, "out_of_range", "date"),
    (AGGREGATE, {"period": "30d", "date": "9999-12-31"}, "out_of_range", "date"),
    (AGGREGATE, {"period": "month", "date": "9999-12-31"}, "out_of_range", "date"),
    (AGGREGATE, {"site_id": "\x00"}, "invalid_text", "site_id"),
    (AGGREGATE, {"filters": "event:page==/\x00"}, "invalid_text", "filters"),
    (AGGREGATE, {"filters": "event:name==\x00"}, "invalid_text", "filters"),
    (AGGREGATE, {"filters": ";".join(["event:page!=/a"] * 11)}, "too_many_filters", "filters"),
    (AGGREGATE, {"filters": "event:page==/" + "界" * 700}, "too_long", "filters"),
    (AGGREGATE, {"site_id": "s" * 129}, "too_long", "site_id"),
    (AGGREGATE, {"from": "0001-01-01", "to": "0001-01-31"}, "out_of_range", "from"),
    (
        "/api/v1/stats/timeseries",
        {"date": "9999-12-31", "timezone": "Asia/Kolkata"},
        "out_of_range",
        "date",
    ),
    (
        "/api/v1/stats/timeseries",
        {"site_id": "\x00", "timezone": "Asia/Kolkata"},
        "invalid_text",
        "site_id",
    ),
    ("/api/v1/stats/breakdown", {"limit": "²"}, "invalid_request", "limit"),
    ("/api/v1/stats/breakdown", {"page": "9" * 5000}, "invalid_request", "page"),
    ("/api/v1/stats/breakdown", {"period": "12mo", "date": "1970-03-01"}, "out_of_range", "date"),
    ("/stats", {"date": "0001-01-01", "timezone": "Asia/Tokyo"}, "out_of_range", "date"),
    ("/stats", {"date": "9999-12-31", "timezone": "America/Lima"}, "out_of_range", "date"),
    ("/stats", {"date": "2025-11-12", "site_id": "a\x00"}, "invalid_text", "site_id"),
]


@pytest.mark.parametrize(("path", "params", "code", "field"), REPRODUCTIONS)
async def test_what_answered_500_answers_400_naming_the_parameter(
    client: httpx.AsyncClient, path: str, params: dict[str, str], code: str, field: str
) -> None:
    response = await client.get(path, params={"site_id": SITE, **params})
    assert response.status_code == 400, response.text
    body = response.json()
    assert (body["code"], body["field"]) == (code, field)
    assert f"`{field}`" in body["message"]


async def test_a_nul_site_never_reaches_the_zone_request_flush(loaded: str) -> None:
    from ingest.zone_requests import ZoneRequests

    settings = api_settings(loaded)
    zone_requests = ZoneRequests()
    pool = await open_pool(settings)
    try:
        app = Starlette(
            routes=stats_routes(settings, zone_requests),
            exception_handlers={ApiError: handle_api_error},
        )
        app.state.pool = pool
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            for site in ("\x00", SITE):
                await c.get(AGGREGATE, params={"site_id": site, "timezone": "Asia/Kolkata"})
        # Even if one got in, the others are written.
        zone_requests._pending[("bad\x00", "Asia/Kolkata")] = 1
        assert await zone_requests.flush(pool) == 1
    finally:
        await pool.close()
    with psycopg.connect(loaded) as conn:
        rows = conn.execute("SELECT site_id, timezone, requests FROM zone_requests").fetchall()
    assert rows == [(SITE, "Asia/Kolkata", 1)]


# --- property: no input answers 5xx ---------------------------------------------------------

ROUTES = ["/stats", AGGREGATE, "/api/v1/stats/timeseries", "/api/v1/stats/breakdown"]
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
LONG_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), min_size=100, max_size=3000)
DATES = (
    st.sampled_from(
        [
            "0001-01-01",
            "9999-12-31",
            "1969-12-31",
            "1970-01-01",
            "9998-12-31",
            "9998-12-01",
            "2025-11-12",
            "2024-02-29",
            "2025-02-29",
            "0000-00-00",
        ]
    )
    | st.dates().map(dt.date.isoformat)
    | TEXT
)
ZONES = (
    st.sampled_from(
        [
            "UTC",
            "Asia/Kolkata",
            "Pacific/Kiritimati",
            "Pacific/Pago_Pago",
            "America/St_Johns",
            "Asia/Kathmandu",
            "Europe/London",
            "Etc/GMT+12",
            "localtime",
            "Factory",
        ]
    )
    | TEXT
)
FILTER = st.tuples(
    st.sampled_from(["event:page", "event:name", "path", "event_type", "visit:source", ""]),
    st.sampled_from(["==", "!=", "=", ""]),
    st.sampled_from(["/", "page_view", "signup", "\x00", ""]) | TEXT | LONG_TEXT,
).map("".join)
NUMBERS = st.integers(-5, 10**12).map(str) | st.sampled_from(["²", "٣", "1e3", " 1"]) | TEXT
PARAMS = st.fixed_dictionaries(
    {},
    optional={
        "site_id": st.sampled_from([SITE, "\x00", "s" * 129, "é" * 64]) | TEXT | LONG_TEXT,
        "date": DATES | st.tuples(DATES, DATES).map(",".join),
        "from": DATES,
        "to": DATES,
        "period": st.sampled_from(["day", "7d", "30d", "month", "6mo", "12mo", "custom"]) | TEXT,
        "timezone": ZONES,
        "metrics": st.lists(st.sampled_from(["views", "visitors", "events", "x"])).map(",".join),
        "filters": st.lists(FILTER, max_size=12).map(";".join),
        "interval": st.sampled_from(["hour", "day", "week"]) | TEXT,
        "property": st.sampled_from(["event:page", "event:name", "path", "x"]) | TEXT,
        "limit": NUMBERS,
        "page": NUMBERS,
    },
)
EXAMPLES = 300  # requests per run, spread over the four routes


def test_no_stats_request_answers_5xx(loaded: str) -> None:
    """Any parameters, on every route: a 2xx/4xx answer, or 503 with Retry-After."""
    loop = asyncio.new_event_loop()
    settings = api_settings(loaded)
    pool = loop.run_until_complete(open_pool(settings))
    transport = httpx.ASGITransport(app=make_app(settings, pool))
    client = httpx.AsyncClient(transport=transport, base_url="http://test")

    @settings_for_property
    @given(route=st.sampled_from(ROUTES), params=PARAMS)
    def answers_without_5xx(route: str, params: dict[str, str]) -> None:
        response = loop.run_until_complete(client.get(route, params=params))
        if response.status_code == 503:
            assert "retry-after" in response.headers, response.text
        else:
            assert response.status_code < 500, (route, params, response.text)
        if response.status_code == 400:
            assert response.json()["field"], response.text

    try:
        answers_without_5xx()
    finally:
        loop.run_until_complete(client.aclose())
        loop.run_until_complete(pool.close())
        loop.close()


settings_for_property = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --- timeouts --------------------------------------------------------------------------------


async def test_a_query_past_the_statement_timeout_answers_503(loaded: str) -> None:
    # A year of 500 paths a day: a filtered breakdown reads every row, far beyond 1 ms.
    with psycopg.connect(loaded, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO daily_details (site_id, day, event_type, path, events, visitors)"
            " SELECT 'costly', d::date, 'page_view', '/p' || i, 1, hll_empty()"
            " FROM generate_series('2025-01-01'::date, '2025-12-31', '1 day') d,"
            " generate_series(1, 500) i"
        )
    settings = api_settings(loaded, stats_statement_timeout_ms=1)
    pool = await open_pool(settings)
    try:
        transport = httpx.ASGITransport(app=make_app(settings, pool))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            response = await c.get(
                "/api/v1/stats/breakdown",
                params={
                    "site_id": "costly",
                    "period": "12mo",
                    "date": "2025-12-31",
                    "filters": "event:page!=/none",
                    "metrics": "visitors,views",
                },
            )
    finally:
        await pool.close()
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "stats_timeout"
    assert "1 ms" in response.json()["message"]
    assert int(response.headers["retry-after"]) >= 1


async def test_a_read_queued_behind_ddl_gives_up_at_the_lock_timeout(loaded: str) -> None:
    settings = api_settings(loaded, stats_lock_timeout_ms=50)
    pool = await open_pool(settings)
    try:
        transport = httpx.ASGITransport(app=make_app(settings, pool))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            with psycopg.connect(loaded) as ddl:
                ddl.execute("LOCK TABLE daily_stats IN ACCESS EXCLUSIVE MODE")
                queued = await c.get("/stats", params={"site_id": SITE, "date": "2025-11-12"})
            after = await c.get("/stats", params={"site_id": SITE, "date": "2025-11-12"})
    finally:
        await pool.close()
    assert queued.status_code == 503, queued.text
    assert queued.json()["code"] == "stats_timeout"
    assert "retry-after" in queued.headers
    assert after.status_code == 200
    assert after.json()["total_views"] == 10


# --- a client that disconnects --------------------------------------------------------------


def _api_queries(database_url: str, state: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = 'analytics-api' AND state = %s"
            " AND query LIKE '%%daily_stats%%'",
            (state,),
        ).fetchone()
    assert row is not None
    return int(row[0])


async def test_a_client_that_disconnects_has_its_query_cancelled(loaded: str) -> None:
    settings = api_settings(loaded, stats_statement_timeout_ms=0, stats_lock_timeout_ms=0)
    pool = await open_pool(settings)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(make_app(settings, pool), log_level="warning", lifespan="off")
    )
    serving = asyncio.create_task(server.serve(sockets=[listener]))
    try:
        await wait_for(lambda: server.started, timeout_s=10, what="the API to listen")
        with psycopg.connect(loaded) as ddl:
            # The query waits on this lock for as long as the lock is held: only a cancel ends it.
            ddl.execute("LOCK TABLE daily_stats IN ACCESS EXCLUSIVE MODE")
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                f"GET /stats?site_id={SITE}&date=2025-11-12 HTTP/1.1\r\nHost: t\r\n\r\n".encode()
            )
            await writer.drain()
            await wait_for(
                lambda: _api_queries(loaded, "active") == 1,
                timeout_s=10,
                what="the stats query to wait on the lock",
            )
            writer.close()
            await wait_for(
                lambda: _api_queries(loaded, "active") == 0,
                timeout_s=10,
                what="the disconnected client's query to be cancelled",
            )
            assert await reader.read() == b""  # no answer was sent
        # The connection went back to the pool in working order.
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
            after = await c.get("/stats", params={"site_id": SITE, "date": "2025-11-12"})
        assert after.status_code == 200
    finally:
        server.should_exit = True
        await serving
        await pool.close()


# --- rate limits ------------------------------------------------------------------------------


async def test_key_guessing_is_limited_per_client_and_spares_other_callers(loaded: str) -> None:
    settings = api_settings(
        loaded,
        stats_read_keys={SITE: ("the-key",)},
        stats_client_rate_limit_per_s=0.001,
        stats_client_rate_burst=50,
        stats_key_failures_per_min=0.001,
        stats_key_failure_burst=5,
        trusted_proxy_hops=1,
    )
    pool = await open_pool(settings)
    params = {"site_id": SITE, "date": "2025-11-12"}

    def via(client: str, token: str | None = None) -> dict[str, str]:
        headers = {"X-Forwarded-For": f"6.6.6.6, {client}"}  # the left entry is not believed
        return headers | ({"Authorization": f"Bearer {token}"} if token else {})

    try:
        transport = httpx.ASGITransport(app=make_app(settings, pool))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            guesses = [
                (await c.get("/stats", params=params, headers=via("1.1.1.1", f"guess-{i}")))
                for i in range(8)
            ]
            assert [r.status_code for r in guesses] == [403] * 5 + [429] * 3
            assert "failed read-key attempts" in guesses[-1].json()["message"]
            assert "retry-after" in guesses[-1].headers
            # The same address, even with the right key, waits; another address does not.
            right = await c.get("/stats", params=params, headers=via("1.1.1.1", "the-key"))
            assert right.status_code == 429
            other = await c.get("/stats", params=params, headers=via("2.2.2.2", "the-key"))
            assert other.status_code == 200
            # Tokens on a public site never reach a key bucket; the client's own limit holds.
            answers = [
                (
                    await c.get(
                        "/stats",
                        params={**params, "site_id": "open"},
                        headers=via("3.3.3.3", f"t{i}"),
                    )
                ).status_code
                for i in range(55)
            ]
            assert answers == [200] * 50 + [429] * 5
    finally:
        await pool.close()
