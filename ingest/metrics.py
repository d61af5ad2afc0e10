"""Prometheus metrics of the API, served at `GET /metrics` (official prometheus_client).

Each app has its own registry (tests build many apps in one process). With several uvicorn
workers each process counts its own requests; a scrape sees the worker that answered it.

The counters touched on every request (requests by route and status, accepted events, the
produce-latency histogram) are plain integers in one event loop, turned into metric families
only when scraped: prometheus_client's own objects take a lock and several calls per update,
which showed up in the profile of single-event ingest. Rarer ones use prometheus_client.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ingest.publish import PublishObserver
from ingest.stats_answers import StatsAnswers

PRODUCE_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class _HotCounters(Collector):
    """Per-request counters kept as plain numbers; exported as metric families on scrape."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}
        self.accepted = 0
        self.produce_buckets = [0] * (len(PRODUCE_BUCKETS_S) + 1)  # the last one is +Inf
        self.produce_sum = 0.0

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "ingest_http_requests",
            "HTTP requests answered, by route and status",
            labels=["route", "status"],
        )
        for (route, status), count in sorted(self.requests.items()):
            requests.add_metric([route, str(status)], count)
        yield requests
        yield CounterMetricFamily(
            "ingest_events_accepted", "Events acknowledged by Kafka", value=self.accepted
        )
        cumulative, buckets = 0, []
        bounds = (*PRODUCE_BUCKETS_S, float("inf"))
        for bound, count in zip(bounds, self.produce_buckets, strict=True):
            cumulative += count
            buckets.append((_bound_label(bound), cumulative))
        yield HistogramMetricFamily(
            "ingest_produce_seconds",
            "Time from send to Kafka's acknowledgement of a request's events",
            buckets=buckets,
            sum_value=self.produce_sum,
        )


class _AnswerCounts(Collector):
    def __init__(self, answers: StatsAnswers) -> None:
        self._answers = answers

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "stats_answers_requests",
            "Stats requests by how they were answered: `hit` (an answer stored for the "
            "site's current version), `joined` (the same question's computation in "
            "flight), `computed`",
            labels=["outcome"],
        )
        for outcome, count in self._answers.counts.items():
            requests.add_metric([outcome], count)
        yield requests
        yield GaugeMetricFamily(
            "stats_answers_stored_bytes",
            "Bytes of stats answers kept by this process (STATS_ANSWER_CACHE_MB bounds them)",
            value=self._answers.stored_bytes,
        )


def _bound_label(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


class IngestMetrics(PublishObserver):
    def __init__(self, routes: set[str]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.routes = routes
        self._hot = _HotCounters()
        self.registry.register(self._hot)
        self.events_rejected = Counter(
            "ingest_events_rejected",
            "Events refused, by error code",
            ["code"],
            registry=self.registry,
        )
        self.bots_dropped = Counter(
            "ingest_bots_dropped",
            "Hits from bots, dropped before Kafka (and answered 202), by reason",
            ["reason"],
            registry=self.registry,
        )
        self.messages = Counter(
            "ingest_kafka_messages",
            "Kafka messages handed to the producer (each holds one event or an array of them)",
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

    def track_pool(self, stats: Callable[[], dict[str, int]]) -> None:
        """Exports the stats pool's connections: those open or opening, and those ready and
        free right now (a new one is ready once warmed, ingest/stats_warm.py)."""

        def reading(key: str) -> Callable[[], float]:
            return lambda: float(stats().get(key, 0))

        Gauge(
            "stats_pool_connections", "Stats connections open or opening", registry=self.registry
        ).set_function(reading("pool_size"))
        Gauge(
            "stats_pool_available", "Stats connections ready and free", registry=self.registry
        ).set_function(reading("pool_available"))

    def track_answers(self, answers: StatsAnswers) -> None:
        """Exports the stats answers' counts and stored bytes (ingest/stats_answers.py)."""
        self.registry.register(_AnswerCounts(answers))

    def count_request(self, route: str, status: int) -> None:
        requests = self._hot.requests
        key = (route, status)
        requests[key] = requests.get(key, 0) + 1

    def accepted(self, count: int) -> None:
        self._hot.accepted += count

    def acknowledged(self, seconds: float) -> None:
        hot = self._hot
        hot.produce_buckets[bisect.bisect_left(PRODUCE_BUCKETS_S, seconds)] += 1
        hot.produce_sum += seconds

    def messages_sent(self, count: int) -> None:
        self.messages.inc(count)

    def bot_dropped(self, reason: str) -> None:
        self.bots_dropped.labels(reason).inc()

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
        count_request = self.metrics.count_request

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                count_request(route, message["status"])
            await send(message)

        await self.app(scope, receive, counting_send)
