"""The consumer's own HTTP port: `/metrics` (Prometheus), `/healthz` and `/readyz`.

Served by the standard library's threaded WSGI server in a daemon thread, with
prometheus_client's WSGI app for the metrics. The health answers read what the event loop
last recorded, so a loop that stopped polling shows as unhealthy even though this thread
still answers.

- `/healthz` (liveness): 200 while the loop polled Kafka within `STALE_AFTER_S`, else 503.
- `/readyz` (readiness): 200 while batches are being stored, 503 while writes to
  PostgreSQL are failing (fetching is then paused and the batch retried with backoff).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

from consumer.loop import Health, ReplicaHealth

STALE_AFTER_S = 30.0

StartResponse = Callable[..., Any]


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # scrapes every few seconds would flood the log


def make_app(
    registry: CollectorRegistry, health: Health | ReplicaHealth
) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path not in ("/healthz", "/readyz"):
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        state = health.snapshot()
        if path == "/healthz":
            ok = state["seconds_since_poll"] < STALE_AFTER_S
        else:
            ok = not state["database_writes_failing"]
        body = json.dumps({"status": "ok" if ok else "failing", **state}).encode()
        start_response(
            "200 OK" if ok else "503 Service Unavailable",
            [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
        )
        return [body]

    return app


def serve(
    host: str, port: int, registry: CollectorRegistry, health: Health | ReplicaHealth
) -> WSGIServer:
    """Starts serving in a daemon thread; `shutdown()` the returned server to stop."""
    server = make_server(
        host, port, make_app(registry, health), _ThreadingServer, handler_class=_QuietHandler
    )
    threading.Thread(target=server.serve_forever, name="consumer-http", daemon=True).start()
    return server
