"""`GET /healthz` (the process answers), `GET /readyz` (it can accept events now) and
`GET /readyz/browser` (the browser route can too).

The browser route's state is its own endpoint, not part of /readyz: it depends on
PostgreSQL (the day's visitor salt), and /readyz must not, or a PostgreSQL outage during a
rolling restart would take every replica out of the load balancer, `POST /event` included,
which never needs the database."""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response

from ingest.browser import BrowserRoute
from ingest.errors import JSON_MEDIA_TYPE, ServiceUnavailable

READY_TIMEOUT_S = 1.0


async def healthz(request: Request) -> Response:
    return Response(b'{"status":"ok"}', 200, media_type=JSON_MEDIA_TYPE)


async def readyz(request: Request) -> Response:
    """200 when Kafka answers a metadata request within a second, no publish has failed
    since the last acknowledged one, and the producer is not saturated; 503 otherwise."""
    ingest = request.app.state.ingest
    publisher = ingest.publisher
    retry_after = ingest.settings.retry_after_s
    if publisher.saturated:
        raise ServiceUnavailable("Not ready: the producer is saturated", retry_after_s=retry_after)
    if publisher.broker_down or not await publisher.broker_reachable(READY_TIMEOUT_S):
        raise ServiceUnavailable("Not ready: Kafka is unreachable", retry_after_s=retry_after)
    return Response(b'{"status":"ready"}', 200, media_type=JSON_MEDIA_TYPE)


async def browser_readyz(request: Request) -> Response:
    """/readyz, and the browser route holds today's visitor salt under a key that matches
    the stored salts' (503 `browser_route_disabled`, `visitor_salt_unavailable` or
    `visitor_key_mismatch` otherwise): for a load balancer that routes /api/event apart."""
    await readyz(request)
    browser: BrowserRoute = request.app.state.browser
    retry_after = request.app.state.ingest.settings.retry_after_s
    try:
        browser.check_enabled()
        browser.salt_for(datetime.now(UTC).date())
    except ServiceUnavailable as exc:
        raise type(exc)(f"Not ready: {exc.message}", retry_after_s=retry_after) from None
    return Response(b'{"status":"ready"}', 200, media_type=JSON_MEDIA_TYPE)
