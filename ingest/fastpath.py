"""`POST /event` handed straight from the middleware stack to its endpoint.

The busiest route skips what it does not use of Starlette's inner stack: the exception
middleware, the router's matching, and the request-response wrappers, a few closures and
coroutine layers per request that showed in the profile of single-event ingest
(docs/decisions/0016-ingest-per-request-overheads.md). It still runs inside the error
middleware (an unexpected exception is a 500), the request counter and CORS. API errors are
answered as the app's ApiError handler answers them. Every other request, and /event with
another method, takes the router as before.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from ingest.accept import post_event
from ingest.errors import ApiError, error_response


class EventFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/event" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        try:
            response = await post_event(Request(scope, receive, send))
        except ApiError as exc:
            response = error_response(exc)
        await response(scope, receive, send)
