"""`POST /api/event`: the hits of the tracker script, straight from visitors' browsers.

The body (sent as `text/plain` so that no CORS preflight is needed; `application/json` is
accepted too), at most 8 KiB:

    {"n": "pageview" or an event name, "u": the page's absolute http(s) URL, "d": the site id,
     "r": the referrer URL or null, "p": {"key": "value", ...} (optional)}

`pageview` becomes event_type `page_view`; the path is the URL's path; the time is the
receipt's. The visitor (`user_id`) is a keyed hash of the site, the client's address and its
user agent under the day's salt (ingest/visitor_id.py, ingest/salts.py); neither the address
nor the user agent is put on the record, only what ingest.context derives from them.

Answers: 202 with an empty body once Kafka acknowledged the hit, and also for a bot's hit,
which is dropped before Kafka and counted by reason (`ingest_bots_dropped_total`): a bot is
not told. 400 naming the field (`n`, `u`, `d`, `r`, `p` or `p.<key>`), 413 past 8 KiB, 415
for another media type, 503 while Kafka does not acknowledge, when VISITOR_KEY is unset
(`browser_route_disabled`) or when no salt for the day is known yet (`visitor_salt_unavailable`,
`visitor_key_mismatch`). Every answer carries `Access-Control-Allow-Origin: *`.

With WRITE_KEYS set, a hit needs a key valid for its site like every ingest request (the
`write_key` query parameter suits a script tag); such a key is visible in the page, so it
limits which sites a page can write to, not who can.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta
from starlette.requests import Request
from starlette.responses import Response

from core.events import (
    MAX_EVENT_TYPE_BYTES,
    MAX_PATH_BYTES,
    MAX_SITE_ID_BYTES,
    MAX_URL_BYTES,
    EventRecord,
    InvalidEvent,
    Props,
    SiteId,
    check_props,
    check_text,
    new_event_ids,
)
from ingest.accept import Ingest, publish_records
from ingest.bots import bot_reason
from ingest.client_address import client_of
from ingest.context import Derived
from ingest.errors import (
    ApiError,
    BadRequest,
    FieldTooLong,
    MalformedJson,
    ServiceUnavailable,
    UnsupportedMediaType,
    error_response,
)
from ingest.keys import presented_key
from ingest.receive import read_body
from ingest.salts import SaltKeeper
from ingest.visitor_id import visitor_id

MAX_BROWSER_BODY_BYTES = 8 * 1024
PAGEVIEW = "pageview"
PAGE_VIEW = "page_view"
ACCEPTED_MEDIA_TYPES = ("", "text/plain", "application/json")
CORS_HEADERS = {"Access-Control-Allow-Origin": "*"}


class BrowserRouteDisabled(ServiceUnavailable):
    code = "browser_route_disabled"


class VisitorSaltUnavailable(ServiceUnavailable):
    code = "visitor_salt_unavailable"


class VisitorKeyMismatch(ServiceUnavailable):
    code = "visitor_key_mismatch"


class BrowserHit(msgspec.Struct, frozen=True, kw_only=True):
    """A hit as the tracker script sends it (short names: it travels from every page)."""

    n: Annotated[str, Meta(min_length=1, max_length=MAX_EVENT_TYPE_BYTES)]
    u: Annotated[str, Meta(min_length=1, max_length=MAX_URL_BYTES)]
    d: SiteId
    r: Annotated[str, Meta(max_length=MAX_URL_BYTES)] | None = None
    p: Props | None = None


_hit_decoder = msgspec.json.Decoder(BrowserHit)
_LIMITS = {
    "n": MAX_EVENT_TYPE_BYTES,
    "u": MAX_URL_BYTES,
    "d": MAX_SITE_ID_BYTES,
    "r": MAX_URL_BYTES,
}


def decode_hit(body: bytes) -> BrowserHit:
    """Parses and validates a hit, or raises InvalidEvent naming the field."""
    try:
        hit = _hit_decoder.decode(body)
    except msgspec.ValidationError as exc:
        text = str(exc)
        if "missing required field `" in text:
            name = text.split("`")[1]
            raise InvalidEvent(f"`{name}` is required", name) from None
        name = ""
        if " - at `$." in text:
            name = text.rsplit(" - at `$.", 1)[1].rstrip("`")[:1]
        if name in _LIMITS and "of length <=" in text:
            raise InvalidEvent(
                f"`{name}` is longer than {_LIMITS[name]} bytes in UTF-8; shorten it",
                name,
                code=FieldTooLong.code,
            ) from None
        raise InvalidEvent(
            f"Invalid `{name}`: {text.rsplit(' - at ', 1)[0]}", name or None
        ) from None
    except msgspec.DecodeError as exc:
        raise InvalidEvent(f"Malformed JSON: {exc}", None, malformed=True) from None
    except RecursionError:
        raise InvalidEvent("Malformed JSON: nested too deeply", None, malformed=True) from None
    for name, limit in _LIMITS.items():
        value: str | None = getattr(hit, name)
        if value is not None:
            check_text(name, value, limit)
    if hit.p is not None:
        check_props(hit.p, "p")
    return hit


def page_path(url: str) -> str:
    """The path of an absolute http(s) URL ("/" when it has none); raises InvalidEvent."""
    try:
        parts = urlsplit(url)
    except ValueError:
        parts = None
    if parts is None or parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise InvalidEvent("`u` must be the page's absolute http or https URL", "u")
    path = parts.path or "/"
    if not path.startswith("/"):
        path = "/" + path
    check_text("u", path, MAX_PATH_BYTES)
    return path


def event_type(name: str) -> str:
    return PAGE_VIEW if name == PAGEVIEW else name


class _Head(msgspec.Struct):
    """The request headers the route reads, from one pass over the scope's (the first of each,
    as Starlette's `Headers.get` answers; every `X-Forwarded-For`, in order)."""

    media_type: str = ""
    user_agent: str | None = None
    country: str | None = None
    content_length: str | None = None
    content_encoding: str | None = None
    forwarded: list[bytes] = msgspec.field(default_factory=list)


def _read_head(headers: list[tuple[bytes, bytes]], country_header: bytes) -> _Head:
    head = _Head()
    content_type: bytes | None = None
    for name, value in headers:
        if name == b"user-agent":
            if head.user_agent is None:
                head.user_agent = value.decode("latin-1")
        elif name == b"x-forwarded-for":
            head.forwarded.append(value)
        elif name == b"content-type":
            if content_type is None:
                content_type = value
        elif name == b"content-length":
            if head.content_length is None:
                head.content_length = value.decode("latin-1")
        elif name == b"content-encoding":
            if head.content_encoding is None:
                head.content_encoding = value.decode("latin-1")
        elif name == country_header and head.country is None:
            head.country = value.decode("latin-1")
    if content_type is not None:
        head.media_type = content_type.decode("latin-1").split(";")[0].strip().lower()
    return head


def hit_record(
    hit: BrowserHit, path: str, user_id: str, derived: Derived, received_at: datetime
) -> EventRecord:
    """The hit's record with its context, built in one go (not copied to add the context)."""
    return EventRecord(
        event_id=new_event_ids(1)[0],
        site_id=hit.d,
        event_type=event_type(hit.n),
        path=path,
        user_id=user_id,
        timestamp=received_at,
        received_at=received_at,
        props=hit.p,
        **msgspec.structs.asdict(derived),
    )


class BrowserRoute:
    """What the browser route needs besides the ingest endpoints' state: the salts (None
    when VISITOR_KEY is unset) and how to find the client."""

    def __init__(self, ingest: Ingest, salts: SaltKeeper | None) -> None:
        self.ingest = ingest
        self.salts = salts
        self.trusted_proxy_hops = ingest.settings.trusted_proxy_hops
        # Never equal to an ASGI header name (those are lower-case, without spaces) when unset.
        self.country_header = (ingest.country_header or " none").encode("latin-1")

    async def handle(self, request: Request) -> Response:
        """Validates a hit and answers 202 once Kafka acknowledged it (or at once for a bot's
        hit, which is not published)."""
        ingest = self.ingest
        self.check_enabled()
        scope = request.scope
        if ingest.keys.required:
            ingest.keys.check(presented_key(request.headers, request.query_params), ())
        head = _read_head(scope["headers"], self.country_header)
        if head.media_type not in ACCEPTED_MEDIA_TYPES:
            raise UnsupportedMediaType(
                f"Content-Type {head.media_type!r} is not accepted: send text/plain or "
                "application/json",
                field="Content-Type",
            )
        body = await ingest.deadlines.read(
            read_body(
                head.content_length,
                head.content_encoding,
                request.stream(),
                max_bytes=MAX_BROWSER_BODY_BYTES,
            )
        )
        try:
            hit = decode_hit(body)
            path = page_path(hit.u)
        except InvalidEvent as exc:
            ingest.metrics.rejected(exc.code)
            error = MalformedJson if exc.malformed else BadRequest
            if exc.code == FieldTooLong.code:
                error = FieldTooLong
            raise error(exc.message, field=exc.field) from None
        if ingest.keys.required:
            ingest.keys.check(presented_key(request.headers, request.query_params), (hit.d,))
        user_agent = head.user_agent
        reason = bot_reason(user_agent)
        if reason is not None:
            ingest.metrics.bot_dropped(reason)
            return _accepted()
        address = client_of(scope, head.forwarded, self.trusted_proxy_hops)
        record = self._record(hit, path, user_agent or "", address, head.country)
        await publish_records(ingest, [record])
        return _accepted()

    def _record(
        self, hit: BrowserHit, path: str, user_agent: str, address: str, country: str | None
    ) -> EventRecord:
        """The hit's record, its context included, built once."""
        received_at = datetime.now(UTC)
        salt = self._salt(received_at)
        derived = self.ingest.enricher.derive(
            user_agent=user_agent,
            client_address=address,
            url=hit.u,
            referrer=hit.r,
            country_header=country,
        )
        user_id = visitor_id(salt, hit.d, address, user_agent)
        return hit_record(hit, path, user_id, derived, received_at)

    def _salt(self, received_at: datetime) -> bytes:
        assert self.salts is not None  # checked first by handle
        return self.salt_for(received_at.date())

    def check_enabled(self) -> None:
        if self.salts is None:
            raise BrowserRouteDisabled(
                "The browser route is disabled: set VISITOR_KEY (32 random bytes in base64, "
                "the same on every API replica) and restart the API"
            )

    def salt_for(self, day: date) -> bytes:
        """The salt of `day` (UTC), or raises why this replica cannot identify visitors:
        VisitorKeyMismatch (even with salts in memory: other replicas count with another
        key's salts, so its ids would count each visitor twice) or VisitorSaltUnavailable.
        /readyz/browser asks the same for today."""
        assert self.salts is not None
        if self.salts.mismatch is not None:
            raise VisitorKeyMismatch(
                "Visitors cannot be identified: this API replica's VISITOR_KEY is not the one "
                "that sealed the stored visitor salts (see its log); retry later"
            )
        salt = self.salts.salt_for(day)
        if salt is not None:
            return salt
        raise VisitorSaltUnavailable(
            "Visitors cannot be identified: today's visitor salt is not loaded yet (PostgreSQL "
            "has not been reachable since this API replica started); retry later"
        )


# One answer object for every accepted hit, as for POST /event: a Response holds no
# per-request state, and building its headers each time showed in the route's profile.
_ACCEPTED = Response(b"", 202, headers=CORS_HEADERS)


def _accepted() -> Response:
    return _ACCEPTED


async def post_browser_event(request: Request) -> Response:
    """The route's endpoint: every answer, errors included, may be read by any origin."""
    route: BrowserRoute = request.app.state.browser
    try:
        return await route.handle(request)
    except ApiError as exc:
        exc.headers.update(CORS_HEADERS)
        return error_response(exc)
