"""The export route's refusals before it touches the database: a zone other than UTC, a
range it cannot take, a site's read key, and every export slot taken."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.requests import Request

from ingest.access import StatsAccess
from ingest.errors import ApiError
from ingest.export import EXPORT_CONCURRENCY, ExportRoute
from ingest.settings import Settings


def request(
    query: str, site: str = "site-a", headers: list[tuple[bytes, bytes]] | None = None
) -> Any:
    scope = {
        "type": "http",
        "method": "GET",
        "path": f"/api/v1/sites/{site}/export",
        "query_string": query.encode(),
        "headers": headers or [],
        "client": ("127.0.0.1", 5000),
        "path_params": {"site_id": site},
    }
    return Request(scope)


def refusal(route: ExportRoute, req: Request) -> ApiError:
    with pytest.raises(ApiError) as caught:
        asyncio.run(route.export(req))
    return caught.value


SETTINGS = Settings(stats_rate_limit_per_s=0, stats_read_keys={"private": ("k1",)})


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("period=day&date=2025-11-12&timezone=Asia/Kolkata", "timezone"),
        ("period=custom&date=2025-11-12", "date"),
        ("from=2025-11-12&to=2025-11-01", "to"),
        ("from=2000-01-01&to=2025-11-01", "to"),
    ],
)
def test_bad_parameters_are_named(query: str, field: str) -> None:
    error = refusal(ExportRoute(SETTINGS, StatsAccess(SETTINGS)), request(query))
    assert (error.status, error.code, error.field) == (400, "invalid_request", field)


def test_a_site_with_read_keys_needs_one() -> None:
    route = ExportRoute(SETTINGS, StatsAccess(SETTINGS))
    error = refusal(route, request("period=day&date=2025-11-12", site="private"))
    assert (error.status, error.code) == (401, "unauthorized")
    wrong = [(b"authorization", b"Bearer nope")]
    error = refusal(route, request("period=day&date=2025-11-12", "private", wrong))
    assert (error.status, error.code) == (403, "forbidden")


def test_every_slot_taken_is_busy_with_retry_after() -> None:
    route = ExportRoute(SETTINGS, StatsAccess(SETTINGS))
    route.running = EXPORT_CONCURRENCY
    error = refusal(route, request("period=day&date=2025-11-12"))
    assert (error.status, error.code) == (503, "export_busy")
    assert "Retry-After" in error.headers
