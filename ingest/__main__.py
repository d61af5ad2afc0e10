"""`python -m ingest`: serve the API with uvicorn (uvloop, httptools) on HOST:PORT."""

from __future__ import annotations

import sys

import uvicorn

from ingest.app import create_app, tune_gc
from ingest.config import ConfigError, environ
from ingest.logs import configure_logging
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
        http="httptools",
        access_log=False,
        log_config=None,  # keep configure_logging's format
        timeout_graceful_shutdown=10,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
