"""The Starlette application: routes, and the lifespan that owns the producer and the pool."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Mapping

import msgspec
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from core.config import environ
from core.topics import ensure_topics
from ingest import bots, stats_warm
from ingest.accept import Ingest, post_event, post_events
from ingest.browser import BrowserRoute, post_browser_event
from ingest.context import Enricher
from ingest.cors import cors
from ingest.database import keep_pool_filled, make_pool, make_salt_pool
from ingest.errors import JSON_MEDIA_TYPE, ApiError, error_response
from ingest.fastpath import EventFastPath
from ingest.health import browser_readyz, healthz, readyz
from ingest.keys import WriteKeys
from ingest.metrics import IngestMetrics, RequestCounter
from ingest.openapi import openapi_document
from ingest.publish import Publisher, make_producer
from ingest.salts import SaltKeeper, decode_key
from ingest.settings import Settings
from ingest.stats_answers import StatsAnswers
from ingest.stats_routes import stats_routes
from ingest.tracker_routes import tracker_routes
from ingest.zone_requests import ZoneRequests

log = logging.getLogger(__name__)


async def handle_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc)


def create_app(settings: Settings, env: Mapping[str, str] | None = None) -> Starlette:
    """The API; `env` holds the enrichment's settings (ingest.context), the process's
    environment unless given."""
    enricher = Enricher.from_settings(environ() if env is None else env)
    bots.prepare()  # compiles the crawler list now, not on the first hit
    # The trusted CDN header holding the client's country, lower-case ("" for none).
    country_header = enricher.country_header or ""
    openapi_body = msgspec.json.encode(openapi_document(settings.max_batch_events))

    async def openapi_json(request: Request) -> Response:
        return Response(openapi_body, 200, media_type=JSON_MEDIA_TYPE)

    zone_requests = ZoneRequests()
    answers = StatsAnswers(settings.stats_answer_cache_mb * 1024 * 1024)
    routes = [
        # POST /event and POST /api/event never reach these routes: EventFastPath
        # (ingest/fastpath.py) serves them ahead of the router. Kept for the 405 of other
        # methods and the metrics' route set.
        Route("/event", post_event, methods=["POST"]),
        Route("/events", post_events, methods=["POST"]),
        Route("/api/event", post_browser_event, methods=["POST"]),
        *stats_routes(settings, zone_requests, answers),
        *tracker_routes(),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/readyz/browser", browser_readyz, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
    ]
    metrics = IngestMetrics({r.path for r in routes if isinstance(r, Route | Mount)} | {"/metrics"})
    metrics.track_answers(answers)
    routes.append(Route("/metrics", metrics.endpoint, methods=["GET"]))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Start-up fails fast (with the broker address) when Kafka cannot be reached;
        # mid-run outages are answered with 503 and recovered from without a restart.
        await ensure_topics(
            settings.kafka_bootstrap_servers,
            [settings.events_topic, settings.dlq_topic],
            partitions=settings.topic_partitions,
            replication_factor=settings.topic_replication_factor,
        )
        publisher = Publisher(
            make_producer(settings),
            settings.events_topic,
            settings.publish_timeout_s,
            max_in_flight_events=settings.max_in_flight_events,
            site_arrays=settings.produce_site_arrays,
            coalesce=settings.produce_coalesce,
            observer=metrics,
            hot_sites=settings.hot_sites,
        )
        await publisher.start()
        metrics.track(
            lambda: publisher.in_flight_events, lambda: 1.0 if publisher.broker_down else 0.0
        )
        # Ingest must work while PostgreSQL is down, so the pool connects in the background.
        pool = make_pool(settings, stats_warm.configure(settings))
        await pool.open(wait=False)
        metrics.track_pool(pool.get_stats)
        ingest = Ingest(
            settings,
            publisher,
            WriteKeys(settings.write_keys),
            metrics,
            enricher=enricher,
            country_header=country_header,
        )
        app.state.ingest = ingest
        app.state.publisher = publisher
        app.state.pool = pool
        flushing = asyncio.create_task(zone_requests.flush_periodically(pool), name="zone-requests")
        filling = asyncio.create_task(keep_pool_filled(pool), name="stats-pool-check")
        salts: SaltKeeper | None = None
        keeping: asyncio.Task[None] | None = None
        salt_pool = None
        if settings.visitor_key:
            salts = SaltKeeper(
                decode_key(settings.visitor_key),
                refresh_s=settings.visitor_salt_refresh_s,
                timeout_s=2 * settings.db_timeout_s,
            )
            # Its own connection: stats load cannot starve the refreshes.
            salt_pool = make_salt_pool(settings)
            await salt_pool.open(wait=False)
            app.state.salt_pool = salt_pool
            # Bounded: with PostgreSQL down the API starts anyway, its browser route (and
            # /readyz) answering 503 until the keeper's next turns load the day's salt.
            await salts.refresh_logged(salt_pool)
            keeping = asyncio.create_task(salts.run(salt_pool), name="visitor-salts")
        app.state.browser = BrowserRoute(ingest, salts)
        log.info(
            "API ready: Kafka %s topic %r, write keys %s, database pool for stats, "
            "browser route %s",
            settings.kafka_bootstrap_servers,
            settings.events_topic,
            "required" if settings.write_keys else "off",
            "on" if salts is not None else "off (VISITOR_KEY unset)",
        )
        try:
            yield
        finally:
            # Requests have drained (uvicorn stops accepting first).
            for task in (flushing, filling, keeping):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            await zone_requests.final_flush(pool)
            await publisher.stop()  # flushes what is in flight
            await pool.close()
            if salt_pool is not None:
                await salt_pool.close()

    return Starlette(
        routes=routes,
        middleware=[
            Middleware(RequestCounter, metrics=metrics),
            Middleware(cors, settings=settings),
            Middleware(EventFastPath),
        ],
        exception_handlers={ApiError: handle_api_error},
        lifespan=lifespan,
    )


def app_from_env() -> Starlette:
    """Factory for `uvicorn --factory` (several workers each build their own app)."""
    settings = Settings.from_env(environ())
    app = create_app(settings)
    tune_gc(settings.gc_gen0_threshold)
    return app


def tune_gc(gen0_threshold: int) -> None:
    """Makes the cyclic garbage collector run less often in a serving process.

    Every request allocates a few dozen container objects, so with Python's default
    threshold (700) the youngest generation is collected every few requests, and each
    collection of an older generation walks every live object of the process (modules,
    aiokafka, the metrics). Moving what exists at start-up out of the collector's sight
    (`gc.freeze`) and collecting the youngest generation every `gen0_threshold` allocations
    removed a large share of the API's CPU per single event and of its latency tail
    (docs/decisions/0011-gc-threshold.md). 0 keeps Python's defaults. Called once per process,
    before serving.
    """
    if gen0_threshold <= 0:
        return
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0_threshold, gen1, gen2)
