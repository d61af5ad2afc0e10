"""`GET /healthz` (the process answers) and `GET /readyz` (it can accept events now)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

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
