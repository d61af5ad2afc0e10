"""CORS for browser emitters: Starlette's CORSMiddleware, for requests that carry `Origin`."""

from __future__ import annotations

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from ingest.settings import Settings


class CorsWhenOrigin:
    """Sends only requests that carry an `Origin` header through the CORS middleware: the
    others (servers, apps, sendBeacon without CORS) skip its per-request header work."""

    def __init__(self, app: ASGIApp, cors: ASGIApp) -> None:
        self.app = app
        self.cors = cors

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, _ in scope["headers"]:
                if name == b"origin":
                    await self.cors(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def cors(app: ASGIApp, settings: Settings) -> ASGIApp:
    """Preflight allowed for JSON bodies, gzip bodies and write-key headers, cached 24 h."""
    return CorsWhenOrigin(
        app,
        CORSMiddleware(
            app,
            allow_origins=settings.cors_allow_origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Content-Type", "Content-Encoding", "Authorization", "X-Write-Key"],
            max_age=86400,
        ),
    )
