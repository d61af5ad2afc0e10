"""`POST /event` and `POST /api/event` handed straight from the middleware stack to their
endpoints.

The busiest routes skip what it does not use of Starlette's inner stack: the exception
middleware, the router's matching, and the request-response wrappers, a few closures and
coroutine layers per request that showed in the profile of single-event ingest
(docs/decisions/0016-ingest-per-request-overheads.md). It still runs inside the error
middleware (an unexpected exception is a 500), the request counter and CORS. API errors are
answered as the app's ApiError handler answers them (the browser route answers its own, with
its CORS header). Every other request, and these paths with another method, take the router
as before.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from ingest.accept import post_event
from ingest.browser import post_browser_event
from ingest.errors import ApiError, error_response


class EventFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path == "/event":
            try:
                response = await post_event(Request(scope, receive, send))
            except ApiError as exc:
                response = error_response(exc)
        elif path == "/api/event":
            response = await post_browser_event(Request(scope, receive, send))
        else:
            await self.app(scope, receive, send)
            return
        await response(scope, receive, send)
