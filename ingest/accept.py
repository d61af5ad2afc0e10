"""The ingest endpoints: `POST /event` (one event) and `POST /events` (a batch).

Both answer 202 only once Kafka has acknowledged every accepted event (acks=all). A batch
accepts its valid items and names each refused one (index, code, field, message); when none
is valid it is refused as a whole with 400 and the same list.

Events may carry context (`url`, `referrer`, `props`), and a server tracking on a browser's
behalf may forward the browser's `user_agent` and `client_address`: those two are honoured
only on requests with a valid write key (WRITE_KEYS), and refused otherwise (403
`write_key_needed` naming the field; in a batch, that item). They serve to derive the
record's context (ingest.context) and to drop bots (ingest.bots: answered as accepted, never
published, counted in /metrics); neither is ever put on the record.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from core.events import (
    EventRecord,
    IncomingEvent,
    InvalidEvent,
    ItemError,
    decode_event,
    may_hold_nul,
    new_event_ids,
)
from core.events import to_record as _to_record
from ingest.body_deadline import BodyDeadlines
from ingest.bots import bot_reason
from ingest.context import Derived, Enricher
from ingest.errors import (
    JSON_MEDIA_TYPE,
    ApiError,
    BadRequest,
    FieldTooLong,
    MalformedJson,
    Overloaded,
    PayloadTooLarge,
    ServiceUnavailable,
    TimestampExpired,
    TimestampTooOld,
    WriteKeyNeeded,
)
from ingest.keys import WriteKeys, presented_key
from ingest.metrics import IngestMetrics
from ingest.publish import Publisher, PublishSaturated, PublishUnavailable
from ingest.receive import NDJSON_MEDIA_TYPES, read_body, split_batch
from ingest.settings import Settings
from ingest.time_window import TimeWindow

ACCEPTED_BODY = b'{"message":"Event accepted"}'
# One answer object for every accepted event: a Response holds no per-request state.
_ACCEPTED = Response(ACCEPTED_BODY, 202, media_type=JSON_MEDIA_TYPE)

# The answer to each refused event, by InvalidEvent.code.
_REFUSALS: dict[str, type[ApiError]] = {
    error.code: error
    for error in (
        WriteKeyNeeded,
        BadRequest,
        MalformedJson,
        FieldTooLong,
        TimestampTooOld,
        TimestampExpired,
    )
}
FORWARDED_FIELDS = ("user_agent", "client_address")


@dataclass(frozen=True)
class Ingest:
    """What the ingest endpoints share, built once in the app's lifespan."""

    settings: Settings
    publisher: Publisher
    keys: WriteKeys
    metrics: IngestMetrics
    enricher: Enricher = field(default_factory=Enricher)
    # The trusted CDN header holding the client's country, lower-case ("" for none).
    country_header: str = ""
    max_future: timedelta = field(init=False)
    window: TimeWindow = field(init=False)
    deadlines: BodyDeadlines = field(init=False)

    def __post_init__(self) -> None:
        settings = self.settings
        object.__setattr__(self, "max_future", timedelta(seconds=settings.max_future_s))
        window = TimeWindow(settings.max_past_days, settings.retention_days)
        object.__setattr__(self, "window", window)
        object.__setattr__(self, "deadlines", BodyDeadlines(settings.body_read_timeout_s))

    def record(
        self, event: IncomingEvent, event_id: uuid.UUID, received_at: datetime
    ) -> EventRecord:
        """The Kafka record of an event; raises InvalidEvent when its time is outside the
        window (ingest/time_window.py)."""
        record = _to_record(event, event_id, received_at, max_future=self.max_future)
        self.window.check(record.timestamp, received_at)
        if event.has_context:
            derived = self.enricher.derive(
                user_agent=event.user_agent,
                client_address=event.client_address,
                url=event.url,
                referrer=event.referrer,
                country_header=None,
            )
            record = with_context(record, derived)
        return record

    def forwarded_fields_allowed(self, event: IncomingEvent) -> None:
        """Raises InvalidEvent (code write_key_needed) when `event` forwards a browser's user
        agent or address and the request has no valid write key: with keys off, none has."""
        if self.keys.required:
            return  # the request's key is checked against the event's site before publishing
        for name in FORWARDED_FIELDS:
            if getattr(event, name) is not None:
                raise InvalidEvent(
                    f"`{name}` is honoured only with a valid write key (WRITE_KEYS); send "
                    "the event without it",
                    name,
                    code=WriteKeyNeeded.code,
                )

    def is_bot(self, user_agent: str | None) -> bool:
        """Whether a forwarded user agent is a bot's (counted by reason); None is no claim."""
        if user_agent is None:
            return False
        reason = bot_reason(user_agent)
        if reason is None:
            return False
        self.metrics.bot_dropped(reason)
        return True


def with_context(record: EventRecord, derived: Derived) -> EventRecord:
    """`record` with the derived context's fields."""
    fields: dict[str, Any] = msgspec.structs.asdict(derived)
    return msgspec.structs.replace(record, **fields)


class BatchAccepted(msgspec.Struct):
    message: str
    accepted: int
    rejected: int
    errors: list[ItemError]


def _records(
    ingest: Ingest, events: list[tuple[int, IncomingEvent]], received_at: datetime
) -> tuple[list[tuple[EventRecord, str | None]], list[ItemError]]:
    """Records for decoded events (ids assigned where the emitter sent none), each with the
    user agent its event forwarded (for the bot check, after the write key's)."""
    missing = sum(1 for _, event in events if event.event_id is None)
    fresh = iter(new_event_ids(missing))
    records: list[tuple[EventRecord, str | None]] = []
    errors: list[ItemError] = []
    for index, event in events:
        event_id: uuid.UUID = event.event_id or next(fresh)
        try:
            if event.has_context:
                ingest.forwarded_fields_allowed(event)
            records.append((ingest.record(event, event_id, received_at), event.user_agent))
        except InvalidEvent as exc:
            errors.append(ItemError(index, exc.code, exc.message, exc.field))
    return records, errors


async def request_body(ingest: Ingest, request: Request, max_bytes: int) -> bytes:
    # The two headers straight from the scope (ASGI names are lower-case): building
    # `request.headers` for them showed up in the profile of single-event ingest.
    length: bytes | None = None
    encoding: bytes | None = None
    for name, value in request.scope["headers"]:
        if name == b"content-length" and length is None:
            length = value
        elif name == b"content-encoding" and encoding is None:
            encoding = value
    return await ingest.deadlines.read(
        read_body(
            None if length is None else length.decode("latin-1"),
            None if encoding is None else encoding.decode("latin-1"),
            request.stream(),
            max_bytes=max_bytes,
        )
    )


def _required_key(ingest: Ingest, request: Request) -> str | None:
    """The request's write key; refuses at once (401) when keys are on and none is sent."""
    if not ingest.keys.required:
        return None
    key = presented_key(request.headers, request.query_params)
    ingest.keys.check(key, ())
    return key


async def publish_records(ingest: Ingest, records: list[EventRecord]) -> None:
    """Waits for Kafka's ack of every record; raises Overloaded or ServiceUnavailable (503)
    when the producer is saturated or the broker does not acknowledge in time."""
    retry_after = ingest.settings.retry_after_s
    try:
        await ingest.publisher.publish(records)
    except PublishSaturated as exc:
        ingest.metrics.rejected("overloaded", len(records))
        raise Overloaded(
            f"Events not accepted: {exc}; retry later", retry_after_s=retry_after
        ) from None
    except PublishUnavailable as exc:
        ingest.metrics.rejected("unavailable", len(records))
        raise ServiceUnavailable(
            f"Events not accepted: {exc}; retry later", retry_after_s=retry_after
        ) from None
    ingest.metrics.accepted(len(records))


async def post_event(request: Request) -> Response:
    """Validates one event and answers 202 once Kafka has acknowledged it."""
    ingest: Ingest = request.app.state.ingest
    key = _required_key(ingest, request)
    body = await request_body(ingest, request, ingest.settings.max_event_bytes)
    try:
        event = decode_event(body)
        if event.has_context:
            ingest.forwarded_fields_allowed(event)
        event_id = event.event_id or new_event_ids(1)[0]
        record = ingest.record(event, event_id, datetime.now(UTC))
    except InvalidEvent as exc:
        ingest.metrics.rejected(exc.code)
        raise _REFUSALS[exc.code](exc.message, field=exc.field) from None
    ingest.keys.check(key, (record.site_id,))
    if event.user_agent is not None and ingest.is_bot(event.user_agent):
        return _ACCEPTED  # a bot is not told
    await publish_records(ingest, [record])
    return _ACCEPTED


async def post_events(request: Request) -> Response:
    """Validates a batch; answers 202 with counts and per-item errors once Kafka has
    acknowledged every valid item, or 400 (with the per-item errors) if none is valid."""
    ingest: Ingest = request.app.state.ingest
    settings = ingest.settings
    key = _required_key(ingest, request)
    body = await request_body(ingest, request, settings.max_body_bytes)
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    items = split_batch(
        body, ndjson=media_type in NDJSON_MEDIA_TYPES, max_events=settings.max_batch_events
    )
    if not items:
        raise BadRequest("The batch holds no events", field="batch")
    received_at = datetime.now(UTC)
    check_nul = may_hold_nul(body)
    events: list[tuple[int, IncomingEvent]] = []
    errors: list[ItemError] = []
    for index, item in enumerate(items):
        if len(item) > settings.max_event_bytes:
            errors.append(
                ItemError(
                    index,
                    PayloadTooLarge.code,
                    f"The event is larger than {settings.max_event_bytes} bytes",
                )
            )
            continue
        try:
            events.append((index, decode_event(item, check_nul=check_nul)))
        except InvalidEvent as exc:
            errors.append(ItemError(index, exc.code, exc.message, exc.field))
    valid, record_errors = _records(ingest, events, received_at)
    if record_errors:
        errors = sorted(errors + record_errors, key=lambda e: e.index)
    for error in errors:
        ingest.metrics.rejected(error.code)
    if not valid:
        raise BadRequest("No event in the batch is valid", field="batch", errors=errors)
    ingest.keys.check(key, {record.site_id for record, _ in valid})
    # Bots count as accepted: the emitter is not told, the event is not published.
    records = [record for record, user_agent in valid if not ingest.is_bot(user_agent)]
    await publish_records(ingest, records)
    answer = BatchAccepted("Events accepted", len(valid), len(errors), errors)
    return Response(msgspec.json.encode(answer), 202, media_type=JSON_MEDIA_TYPE)
