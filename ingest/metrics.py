"""Prometheus metrics of the API, served at `GET /metrics` (official prometheus_client).

Each app has its own registry (tests build many apps in one process). With several uvicorn
workers each process counts its own requests; a scrape sees the worker that answered it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ingest.publish import PublishObserver

PRODUCE_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class IngestMetrics(PublishObserver):
    def __init__(self, routes: set[str]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.routes = routes
        self.requests = Counter(
            "ingest_http_requests",
            "HTTP requests answered, by route and status",
            ["route", "status"],
            registry=self.registry,
        )
        self._request_children: dict[tuple[str, int], Any] = {}
        self.events_accepted = Counter(
            "ingest_events_accepted", "Events acknowledged by Kafka", registry=self.registry
        )
        self.events_rejected = Counter(
            "ingest_events_rejected",
            "Events refused, by error code",
            ["code"],
            registry=self.registry,
        )
        self.produce_seconds = Histogram(
            "ingest_produce_seconds",
            "Time from send to Kafka's acknowledgement of a request's events",
            buckets=PRODUCE_BUCKETS_S,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "ingest_in_flight_events",
            "Events waiting for Kafka's acknowledgement",
            registry=self.registry,
        )
        self.broker_down = Gauge(
            "ingest_broker_down",
            "1 while Kafka is presumed unreachable (answering 503)",
            registry=self.registry,
        )

    def track(self, in_flight: Callable[[], float], broker_down: Callable[[], float]) -> None:
        self.in_flight.set_function(in_flight)
        self.broker_down.set_function(broker_down)

    def count_request(self, route: str, status: int) -> None:
        key = (route, status)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.requests.labels(route, str(status))
        child.inc()

    def acknowledged(self, seconds: float) -> None:
        self.produce_seconds.observe(seconds)

    def rejected(self, code: str, count: int = 1) -> None:
        self.events_rejected.labels(code).inc(count)

    async def endpoint(self, request: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


class RequestCounter:
    """ASGI middleware counting answered requests by route (known paths only) and status."""

    def __init__(self, app: ASGIApp, metrics: IngestMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        route = path if path in self.metrics.routes else "other"

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.metrics.count_request(route, message["status"])
            await send(message)

        await self.app(scope, receive, counting_send)
