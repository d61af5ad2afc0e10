"""The export route's refusals before it touches the database: a zone other than UTC, a
range it cannot take, a site's read key, every export slot taken, and a client (address or
read key) with an export running already; the slots freed however an export ends."""

from __future__ import annotations

import asyncio
import gc
import io
from typing import Any

import pytest
from starlette.requests import Request

from ingest.access import StatsAccess
from ingest.errors import ApiError
from ingest.export import ExportRoute
from ingest.export_send import ArchiveResponse, ExportSlots, owners_of, send_deadline_s
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
    for _ in range(SETTINGS.export_concurrency):
        route.slots.admit(owners_of(f"elsewhere-{_}", None))
    error = refusal(route, request("period=day&date=2025-11-12"))
    assert (error.status, error.code) == (503, "export_busy")
    assert "Retry-After" in error.headers


def test_a_client_with_an_export_running_is_answered_429() -> None:
    route = ExportRoute(SETTINGS, StatsAccess(SETTINGS))
    running = route.slots.admit(owners_of("127.0.0.1", None))
    error = refusal(route, request("period=day&date=2025-11-12"))
    assert (error.status, error.code) == (429, "export_in_progress")
    assert "client address" in error.message and "Retry-After" in error.headers
    running.release()
    assert route.slots.owners == {} and route.slots.building == 0


def test_slots_are_per_client_and_per_key_and_freed_once() -> None:
    now = [100.0]
    slots = ExportSlots(max_building=1, max_sending=2, retry_after_s=3, clock=lambda: now[0])
    first = slots.admit(owners_of("10.0.0.1", "k1"))
    # The same key from another address waits for the first export; while building, the
    # answer's Retry-After is the configured one.
    with pytest.raises(ApiError) as caught:
        slots.admit(owners_of("10.0.0.2", "k1"))
    assert (caught.value.code, caught.value.headers["Retry-After"]) == ("export_in_progress", "3")
    assert "read key" in caught.value.message
    with pytest.raises(ApiError, match="building 1 and sending 0"):
        slots.admit(owners_of("10.0.0.3", None))
    first.sending(deadline=now[0] + 41.5)
    with pytest.raises(ApiError) as caught:
        slots.admit(owners_of("10.0.0.1", None))
    assert caught.value.headers["Retry-After"] == "42"  # what is left of its deadline
    second = slots.admit(owners_of("10.0.0.3", None))
    with pytest.raises(ApiError, match="building 1 and sending 1"):
        slots.admit(owners_of("10.0.0.4", None))
    second.sending(deadline=now[0] + 1)
    with pytest.raises(ApiError, match="building 0 and sending 2"):
        slots.admit(owners_of("10.0.0.4", None))
    first.release()
    first.release()
    second.release()
    assert (slots.building, slots.sending, slots.owners) == (0, 0, {})


def test_the_send_deadline_grows_with_the_archive() -> None:
    assert send_deadline_s(0, 60.0, 65536) == 60.0
    assert send_deadline_s(65536 * 100, 60.0, 65536) == 160.0


def test_an_archive_built_while_the_sending_slots_filled_is_refused_and_frees_its_slot() -> None:
    slots = ExportSlots(max_building=2, max_sending=1, retry_after_s=3)
    first = slots.admit(owners_of("10.0.0.1", None))
    second = slots.admit(owners_of("10.0.0.2", None))  # admitted while none was sending
    first.sending(deadline=1e9)
    with pytest.raises(ApiError, match="already sending 1") as caught:
        second.sending(deadline=1e9)
    assert (caught.value.code, caught.value.headers["Retry-After"]) == ("export_busy", "3")
    second.release()
    assert (slots.building, slots.sending) == (0, 1)
    first.release()
    assert (slots.building, slots.sending, slots.owners) == (0, 0, {})


def test_an_archive_never_sent_frees_its_slot_and_file_when_collected() -> None:
    # The request cancelled after the endpoint returned its response and before the server
    # started it: the response is dropped unsent.
    slots = ExportSlots(max_building=1, max_sending=1, retry_after_s=3)
    ticket = slots.admit(owners_of("10.0.0.1", None))
    ticket.sending(deadline=1e9)
    archive = io.BytesIO(b"PK")
    response = ArchiveResponse(archive, "a.zip", 60.0, ticket.release)
    assert (slots.sending, len(slots.owners)) == (1, 1)
    del response
    gc.collect()
    assert (slots.sending, slots.owners, archive.closed) == (0, {}, True)
