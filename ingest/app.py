"""The Starlette application: routes, and the lifespan that owns the producer and the pool."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from uuid_utils.compat import uuid7

from ingest.database import make_pool
from ingest.errors import (
    JSON_MEDIA_TYPE,
    ApiError,
    BadRequest,
    MalformedJson,
    ServiceUnavailable,
    error_response,
)
from ingest.events import InvalidEvent, decode_event, to_record
from ingest.publish import Publisher, PublishUnavailable, make_producer
from ingest.settings import Settings
from ingest.stats_api import stats_routes
from ingest.topics import ensure_topics

log = logging.getLogger(__name__)

ACCEPTED_BODY = b'{"message":"Event accepted"}'


async def post_event(request: Request) -> Response:
    """Validates one event and answers 202 once Kafka has acknowledged it."""
    body = await request.body()
    try:
        event = decode_event(body)
    except InvalidEvent as exc:
        error_type = MalformedJson if exc.malformed else BadRequest
        raise error_type(exc.message, field=exc.field) from None
    received_at = datetime.now(UTC)
    record = to_record(event, event.event_id or uuid7(), received_at)
    publisher: Publisher = request.app.state.publisher
    try:
        await publisher.publish([record])
    except PublishUnavailable as exc:
        raise ServiceUnavailable(f"Event not accepted: {exc}; retry later") from None
    return Response(ACCEPTED_BODY, 202, media_type=JSON_MEDIA_TYPE)


async def healthz(request: Request) -> Response:
    return Response(b'{"status":"ok"}', 200, media_type=JSON_MEDIA_TYPE)


async def handle_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc)


def create_app(settings: Settings) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await ensure_topics(
            settings.kafka_bootstrap_servers,
            [settings.events_topic, settings.dlq_topic],
            partitions=settings.topic_partitions,
            replication_factor=settings.topic_replication_factor,
        )
        publisher = Publisher(
            make_producer(settings), settings.events_topic, settings.publish_timeout_s
        )
        await publisher.start()
        # Ingest must work while PostgreSQL is down, so the pool connects in the background.
        pool = make_pool(settings)
        await pool.open(wait=False)
        app.state.publisher = publisher
        app.state.pool = pool
        log.info(
            "API ready: Kafka %s topic %r, database pool for stats",
            settings.kafka_bootstrap_servers,
            settings.events_topic,
        )
        try:
            yield
        finally:
            # Requests have drained (uvicorn stops accepting first); flush what is in flight.
            await publisher.stop()
            await pool.close()

    return Starlette(
        routes=[
            Route("/event", post_event, methods=["POST"]),
            *stats_routes(settings),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        exception_handlers={ApiError: handle_api_error},
        lifespan=lifespan,
    )
