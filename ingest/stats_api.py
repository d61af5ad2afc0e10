"""The stats routes: base `/stats`, the Plausible-shaped `/api/v1/stats/*`, and the dashboard.

Every data route passes the rate limit, then the site's read keys, then parses its
parameters (ingest/query.py) and reads the rollups (ingest/stats_read.py). PostgreSQL being
unreachable answers 503; event ingest does not depend on any of this.
"""

from __future__ import annotations

import datetime as dt
import functools
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from ingest import query, stats, stats_read
from ingest.access import RateLimiter, ReadKeys, bearer_token
from ingest.database import DatabaseUnavailable
from ingest.errors import JSON_MEDIA_TYPE, ServiceUnavailable
from ingest.settings import Settings
from ingest.zone_requests import ZoneRequests

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


def _json(body: Any) -> Response:
    return Response(msgspec.json.encode(body), 200, media_type=JSON_MEDIA_TYPE)


class StatsApi:
    def __init__(self, settings: Settings, zone_requests: ZoneRequests) -> None:
        self._zone_requests = zone_requests
        self._keys = ReadKeys(settings.stats_read_keys)
        self._limiter = RateLimiter(settings.stats_rate_limit_per_s, settings.stats_rate_burst)
        self._exact_max_rows = settings.stats_exact_visitors_max_rows
        page = (DASHBOARD_DIR / "index.html").read_text()
        self._dashboard_page = page.replace("{{REFRESH_S}}", str(settings.dashboard_refresh_s))

    def _admit(self, request: Request) -> dict[str, str]:
        """Rate limit, then read keys; returns the query parameters."""
        token = bearer_token(request.headers.get("authorization"))
        client = request.client.host if request.client else "unknown"
        self._limiter.take(f"key:{token}" if token else f"client:{client}")
        params = dict(request.query_params)
        self._keys.check(query.parse_site(params), token)
        return params

    @staticmethod
    def _now() -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    @_timed
    async def base_stats(self, request: Request) -> Response:
        params = self._admit(request)
        parsed = stats.parse_stats_query(params)
        self._zone_requests.note(parsed.site_id, parsed.timezone)
        try:
            result = await stats.daily_stats(request.app.state.pool, parsed)
        except DatabaseUnavailable:
            raise _unavailable() from None
        return Response(msgspec.json.encode(result), 200, media_type=JSON_MEDIA_TYPE)

    @_timed
    async def aggregate(self, request: Request) -> Response:
        params = self._admit(request)
        parsed = query.parse_stats(params, now=self._now())
        self._zone_requests.note(parsed.site_id, parsed.range.timezone)
        try:
            body = await stats_read.aggregate(request.app.state.pool, parsed, self._exact_max_rows)
        except DatabaseUnavailable:
            raise _unavailable() from None
        return _json(body)

    @_timed
    async def timeseries(self, request: Request) -> Response:
        params = self._admit(request)
        parsed = query.parse_timeseries(params, now=self._now())
        self._zone_requests.note(parsed.stats.site_id, parsed.stats.range.timezone)
        try:
            body = await stats_read.timeseries(request.app.state.pool, parsed)
        except DatabaseUnavailable:
            raise _unavailable() from None
        return _json(body)

    @_timed
    async def breakdown(self, request: Request) -> Response:
        params = self._admit(request)
        parsed = query.parse_breakdown(params, now=self._now())
        self._zone_requests.note(parsed.stats.site_id, parsed.stats.range.timezone)
        try:
            body = await stats_read.breakdown(request.app.state.pool, parsed)
        except DatabaseUnavailable:
            raise _unavailable() from None
        return _json(body)

    async def dashboard(self, request: Request) -> Response:
        """The page itself holds no data; its script calls the API (with `#key=` if given)."""
        query.parse_site(dict(request.query_params))
        return HTMLResponse(self._dashboard_page)


def _unavailable() -> ServiceUnavailable:
    return ServiceUnavailable("Stats are unavailable: the database cannot be reached")


def stats_routes(settings: Settings, zone_requests: ZoneRequests | None = None) -> list[BaseRoute]:
    """The routes; `zone_requests` collects the zones stats are read in (the app flushes it
    to the database every minute)."""
    api = StatsApi(settings, zone_requests or ZoneRequests())
    return [
        Route("/stats", api.base_stats, methods=["GET"]),
        Route("/api/v1/stats/aggregate", api.aggregate, methods=["GET"]),
        Route("/api/v1/stats/timeseries", api.timeseries, methods=["GET"]),
        Route("/api/v1/stats/breakdown", api.breakdown, methods=["GET"]),
        Route("/dashboard", api.dashboard, methods=["GET"]),
        Mount("/dashboard/static", StaticFiles(directory=DASHBOARD_DIR), name="dashboard"),
    ]
