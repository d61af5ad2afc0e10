"""`python -m ingest`: serve the API with uvicorn (uvloop, httptools) on HOST:PORT.

Limits against slow or idle clients (ingest/server.py, Settings' docstring): a request head
of at most MAX_HEADER_BYTES, whole within KEEP_ALIVE_TIMEOUT_S of connecting or of the last
response; idle keep-alive connections closed after KEEP_ALIVE_TIMEOUT_S; at most
MAX_CONNECTIONS connections or requests per process (503 `overloaded` past it), of which one
client address holds at most MAX_CONNECTIONS_PER_CLIENT (429 `too_many_connections`, then
closed); the body within BODY_READ_TIMEOUT_S (in the app).
"""

from __future__ import annotations

import sys

import uvicorn

from core.config import ConfigError, environ
from core.logs import configure_logging
from ingest.app import create_app, tune_gc
from ingest.server import protocol
from ingest.settings import Settings


def main() -> int:
    configure_logging("api")
    try:
        settings = Settings.from_env(environ())
    except ConfigError as exc:
        print(f"api: configuration error: {exc}", file=sys.stderr)
        return 2
    # Several workers each build their own app (and producer) through the factory.
    app = "ingest.app:app_from_env" if settings.workers > 1 else create_app(settings)
    if settings.workers == 1:
        tune_gc(settings.gc_gen0_threshold)  # workers tune their own, in app_from_env
    uvicorn.run(
        app,
        factory=settings.workers > 1,
        workers=settings.workers,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        # Behind proxies every connection comes from one: the proxies cap them per client.
        http=protocol(
            0 if settings.trusted_proxy_hops > 0 else settings.max_connections_per_client,
            settings.retry_after_s,
        ),
        timeout_keep_alive=settings.keep_alive_timeout_s,
        limit_concurrency=settings.max_connections,
        # uvicorn reads it for h11 only; ingest/server.py applies it to httptools.
        h11_max_incomplete_event_size=settings.max_header_bytes,
        # TRUSTED_PROXY_HOPS alone decides whether X-Forwarded-For names the client
        # (ingest/client_address.py): uvicorn's own handling would trust the header from
        # FORWARDED_ALLOW_IPS (loopback by default) whatever that setting says.
        proxy_headers=False,
        access_log=False,
        log_config=None,  # keep configure_logging's format
        timeout_graceful_shutdown=10,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
