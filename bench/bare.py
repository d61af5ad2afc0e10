"""The ceiling: a bare Starlette endpoint that decodes the same bodies and answers 202.

Served by uvicorn with the same options as the API (uvloop, httptools, no access log).
"""

from __future__ import annotations

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from core.events import IncomingEvent

_event = msgspec.json.Decoder(IncomingEvent)
_batch = msgspec.json.Decoder(list[IncomingEvent])
ACCEPTED = b'{"message":"Event accepted"}'


async def event(request: Request) -> Response:
    _event.decode(await request.body())
    return Response(ACCEPTED, 202, media_type="application/json; charset=utf-8")


async def events(request: Request) -> Response:
    n = len(_batch.decode(await request.body()))
    body = b'{"message":"Events accepted","accepted":%d,"rejected":0,"errors":[]}' % n
    return Response(body, 202, media_type="application/json; charset=utf-8")


async def healthz(request: Request) -> Response:
    return Response(b'{"status":"ok"}', 200, media_type="application/json")


app = Starlette(
    routes=[
        Route("/event", event, methods=["POST"]),
        Route("/events", events, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
)
