"""Step 6: the stats routes and their admission: base `/stats` (ingest/stats_legacy.py), the
Plausible-shaped `/api/v1/stats/*`, and the dashboard.

Every data route passes the client's rate limit, then parses its parameters
(ingest/stats_params.py: anything out of range is a 400 naming the parameter), then the site's
read keys and the key's rate limit (ingest/access.py), then plans, renders, runs and shapes
the answer (ingest/stats_plan.py, stats_sql.py, stats_run.py, stats_response.py).
PostgreSQL being unreachable answers 503, and so does a query cancelled by the pool's
statement or lock timeout; a client that goes away has its query cancelled. A question read
from raw events (filters no rollup holds) takes one of STATS_RAW_CONCURRENCY slots, or is
answered 503 `stats_busy` at once, so such questions never hold the whole pool. Any costly
plan (ingest/stats_plan_cost.py) takes one of STATS_COSTLY_CONCURRENCY slots, waiting its
turn for at most STATS_COSTLY_WAIT_MS (then 503 `stats_busy`); the other questions never
wait on them. Event ingest does not depend on any of this.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import psycopg
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from ingest import stats_imported, stats_legacy, stats_params, stats_realtime, stats_response
from ingest.access import StatsAccess, bearer_token
from ingest.database import DatabaseUnavailable, QueryTimedOut
from ingest.errors import JSON_MEDIA_TYPE, SchemaOutdated, ServiceUnavailable, StatsTimedOut
from ingest.export import ExportRoute
from ingest.settings import Settings
from ingest.stats_answers import StatsAnswers, question
from ingest.stats_days import DateRange, data_horizon, make_range
from ingest.stats_run import (
    COSTLY,
    COSTLY_CLIENT,
    RAW_READS,
    CostlyBusy,
    CostlyPlans,
    RawQueryTimedOut,
    RawReads,
    RawReadsBusy,
    cancel_on_disconnect,
)
from ingest.zone_requests import ZoneRequests

log = logging.getLogger(__name__)

T = TypeVar("T")

DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboard"


Handler = Callable[["StatsApi", Request], Awaitable[Response]]


def _timed(handler: Handler) -> Handler:
    """Adds `Server-Timing: app;dur=<ms>`: the time spent in the handler (parsing, the
    database, encoding), which benchmarks read to separate server time from the client's."""

    @functools.wraps(handler)
    async def timed(self: StatsApi, request: Request) -> Response:
        started = time.perf_counter()
        response = await handler(self, request)
        elapsed_ms = (time.perf_counter() - started) * 1000
        response.headers["Server-Timing"] = f"app;dur={elapsed_ms:.3f}"
        return response

    return timed


# Costly questions waiting for a slot in one process: past it, one more is refused at once
# (each waiter holds its client's connection and a task).
MAX_COSTLY_WAITING = 64


class StatsBusy(ServiceUnavailable):
    """Every slot for questions read from raw events is taken in this process."""

    code = "stats_busy"


def _named(body: dict[str, Any], params: dict[str, str]) -> dict[str, Any]:
    return stats_response.with_views_named(body, stats_params.views_named(params))


def _asked(route: str, parsed: Any, params: dict[str, str]) -> bytes:
    """The question of a Plausible-shaped route: its parsed request, and the parameters its
    answer reads besides (the name of page views, whether imports are added)."""
    with_imported = stats_imported.parse_with_imported(params)
    return question(route, parsed, stats_params.views_named(params), with_imported)


def _json(body: bytes) -> Response:
    return Response(body, 200, media_type=JSON_MEDIA_TYPE)


class StatsApi:
    def __init__(
        self, settings: Settings, zone_requests: ZoneRequests, answers: StatsAnswers
    ) -> None:
        self._zone_requests = zone_requests
        self._answers = answers
        self._access = StatsAccess(settings)
        self._exact_max_rows = settings.stats_exact_visitors_max_rows
        self._statement_timeout_ms = settings.stats_statement_timeout_ms
        self._raw_reads = RawReads(
            settings.stats_raw_concurrency, settings.stats_raw_statement_timeout_ms
        )
        self._costly = CostlyPlans(
            settings.stats_costly_concurrency,
            settings.stats_costly_wait_ms / 1000,
            MAX_COSTLY_WAITING,
        )
        self._retry_after_s = settings.retry_after_s
        self._max_future_s = settings.max_future_s
        self._realtime = stats_realtime.RealtimeCounts()
        page = (DASHBOARD_DIR / "index.html").read_text()
        self._dashboard_page = page.replace("{{REFRESH_S}}", str(settings.dashboard_refresh_s))

    def _admit(self, request: Request) -> dict[str, str]:
        """The client's rate limit, the site (parsed), its read keys; returns the query
        parameters."""
        client = self._access.limit_client(request.scope)
        COSTLY_CLIENT.set(client)  # this request's task only: its share of the costly slots
        params = dict(request.query_params)
        site_id = stats_params.parse_site(params)
        token = bearer_token(request.headers.get("authorization"))
        self._access.check_key(client, site_id, token)
        return params

    async def _read(self, request: Request, reading: Awaitable[T]) -> T:
        """Awaits `reading` (a stats_response or stats_legacy coroutine) unless the client
        disconnects first, in which case it is cancelled (psycopg then cancels its statement
        in the server) and ClientClosedRequest raised. Database failures become 503s, and
        so does a question over raw events while every raw slot is taken (`stats_busy`)."""
        token = RAW_READS.set(self._raw_reads)
        costly_token = COSTLY.set(self._costly)
        try:
            return await cancel_on_disconnect(request.receive, reading)
        except CostlyBusy as busy:
            raise StatsBusy(
                f"Stats are busy: this question is costly ({busy.reason}), and this API "
                f"already runs as many costly questions as it allows ({busy.limit}, "
                "STATS_COSTLY_CONCURRENCY) with others waiting their turn; retry later, or "
                "ask for a shorter range, UTC days, or without filters",
                retry_after_s=self._retry_after_s,
            ) from None
        except RawReadsBusy:
            raise StatsBusy(
                "Stats are busy: this API is already running as many questions over raw "
                f"events (filters on visit:* or event:props:*) as it allows "
                f"({self._raw_reads.limit}, STATS_RAW_CONCURRENCY); retry later, or ask "
                "without those filters",
                retry_after_s=self._retry_after_s,
            ) from None
        except RawQueryTimedOut:
            timeout_ms = self._raw_reads.statement_timeout_ms or self._statement_timeout_ms
            raise StatsTimedOut(
                "Stats query cancelled: a question over raw events (filters on visit:* or "
                f"event:props:*) ran longer than this API allows ({timeout_ms} ms) or waited "
                "too long for a lock; narrow the range or filters, or retry later"
            ) from None
        except QueryTimedOut:
            raise StatsTimedOut(
                "Stats query cancelled: it ran longer than this API allows "
                f"({self._statement_timeout_ms} ms) or waited too long for a lock; narrow the "
                "range or filters, or retry later"
            ) from None
        except DatabaseUnavailable:
            raise _unavailable() from None
        except _SCHEMA_MISSING as exc:
            log.error("stats: the database lacks what this release reads (%s)", exc)
            raise SchemaOutdated(
                "Stats are unavailable: the database's schema is older than this API's; an "
                "operator runs `python -m consumer.migrate` (make migrate)",
                retry_after_s=60,
            ) from None
        finally:
            COSTLY.reset(costly_token)
            RAW_READS.reset(token)

    async def _answered(
        self,
        request: Request,
        site: str,
        days: DateRange,
        asked: bytes,
        compute: Callable[[], Awaitable[bytes]],
    ) -> bytes:
        """The question's answer as `_read` gives it: the one already computed for the
        current version of the site's UTC days the range touches, or `compute`'s
        (ingest/stats_answers.py)."""
        pool = request.app.state.pool
        span = (site, *days.utc_days)
        return await self._read(request, self._answers.answer(pool, span, asked, compute))

    @staticmethod
    def _now() -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    def _when(self) -> tuple[dt.datetime, dt.datetime]:
        """`now`, and the horizon past which no event is dated: the ranges of the parsed
        requests are read no further than it makes a difference (stats_days.readable_end)."""
        now = self._now()
        return now, data_horizon(now, self._max_future_s)

    @_timed
    async def base_stats(self, request: Request) -> Response:
        params = self._admit(request)
        parsed = stats_legacy.parse_stats_query(params)
        self._zone_requests.note(parsed.site_id, parsed.timezone)
        pool = request.app.state.pool

        async def compute() -> bytes:
            return msgspec.json.encode(await stats_legacy.daily_stats(pool, parsed))

        asked = question("stats", parsed)
        days = make_range(parsed.day, parsed.day, parsed.timezone)
        return _json(await self._answered(request, parsed.site_id, days, asked, compute))

    @_timed
    async def aggregate(self, request: Request) -> Response:
        params = self._admit(request)
        now, horizon = self._when()
        parsed = stats_params.parse_stats(params, now=now, horizon=horizon)
        self._zone_requests.note(parsed.site_id, parsed.range.timezone)
        pool = request.app.state.pool

        async def compute() -> bytes:
            body = await stats_imported.aggregate(pool, parsed, params, self._exact_max_rows)
            return msgspec.json.encode(_named(body, params))

        asked = _asked("aggregate", parsed, params)
        return _json(await self._answered(request, parsed.site_id, parsed.range, asked, compute))

    @_timed
    async def timeseries(self, request: Request) -> Response:
        params = self._admit(request)
        now, horizon = self._when()
        parsed = stats_params.parse_timeseries(params, now=now, horizon=horizon)
        self._zone_requests.note(parsed.stats.site_id, parsed.stats.range.timezone)
        pool = request.app.state.pool

        async def compute() -> bytes:
            body = await stats_imported.timeseries(pool, parsed, params)
            return msgspec.json.encode(_named(body, params))

        asked = _asked("timeseries", parsed, params)
        stats = parsed.stats
        return _json(await self._answered(request, stats.site_id, stats.range, asked, compute))

    @_timed
    async def breakdown(self, request: Request) -> Response:
        params = self._admit(request)
        now, horizon = self._when()
        parsed = stats_params.parse_breakdown(params, now=now, horizon=horizon)
        self._zone_requests.note(parsed.stats.site_id, parsed.stats.range.timezone)
        pool = request.app.state.pool

        async def compute() -> bytes:
            body = await stats_imported.breakdown(pool, parsed, params)
            return msgspec.json.encode(_named(body, params))

        asked = _asked("breakdown", parsed, params)
        stats = parsed.stats
        return _json(await self._answered(request, stats.site_id, stats.range, asked, compute))

    @_timed
    async def realtime_visitors(self, request: Request) -> Response:
        """A bare number, as Plausible answers: the visitors active in the last 5 minutes."""
        params = self._admit(request)
        site_id = stats_params.parse_site(params)
        pool = request.app.state.pool
        count = await self._read(
            request, self._realtime.current_visitors(pool, site_id, self._now())
        )
        return _json(msgspec.json.encode(count))

    async def dashboard(self, request: Request) -> Response:
        """The page itself holds no data; its script calls the API (with `#key=` if given)."""
        stats_params.parse_site(dict(request.query_params))
        return HTMLResponse(self._dashboard_page)


# A table, column or function this release reads is missing: a migration has not run.
_SCHEMA_MISSING = (
    psycopg.errors.UndefinedTable,
    psycopg.errors.UndefinedColumn,
    psycopg.errors.UndefinedFunction,
)


def _unavailable() -> ServiceUnavailable:
    return ServiceUnavailable("Stats are unavailable: the database cannot be reached")


def stats_routes(
    settings: Settings,
    zone_requests: ZoneRequests | None = None,
    answers: StatsAnswers | None = None,
) -> list[BaseRoute]:
    """The routes; `zone_requests` collects the zones stats are read in (the app flushes it
    to the database every minute), `answers` keeps the answers (a process's metrics read
    its counts)."""
    if answers is None:
        answers = StatsAnswers(settings.stats_answer_cache_mb * 1024 * 1024)
    api = StatsApi(settings, zone_requests or ZoneRequests(), answers)
    exports = ExportRoute(settings, api._access)
    return [
        Route("/stats", api.base_stats, methods=["GET"]),
        Route("/api/v1/stats/aggregate", api.aggregate, methods=["GET"]),
        Route("/api/v1/stats/timeseries", api.timeseries, methods=["GET"]),
        Route("/api/v1/stats/breakdown", api.breakdown, methods=["GET"]),
        Route("/api/v1/stats/realtime/visitors", api.realtime_visitors, methods=["GET"]),
        Route("/api/v1/sites/{site_id}/export", exports.export, methods=["GET"]),
        Route("/dashboard", api.dashboard, methods=["GET"]),
        Mount("/dashboard/static", StaticFiles(directory=DASHBOARD_DIR), name="dashboard"),
    ]
