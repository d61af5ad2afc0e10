"""The wire contract: what emitters send, and what travels through Kafka.

`IncomingEvent` is the JSON body of `POST /event`. `EventRecord` is one accepted event as
stored in Kafka (msgpack, array-like: compact and fast to decode). New fields get defaults and
go at the end; fields are never retyped. The record's schema version travels in a header.
"""

from __future__ import annotations

import ipaddress
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated

import msgspec
from msgspec import Meta
from uuid_utils import uuid7 as _uuid7

# Text limits are in UTF-8 bytes, the unit of PostgreSQL's index entries (see
# MAX_FIELD_BYTES below). The character limits equal the byte limits: a string within its
# byte limit is within its character limit, and msgspec refuses a far too long one early.
MAX_SITE_ID_BYTES = 128
MAX_EVENT_TYPE_BYTES = 64
MAX_PATH_BYTES = 2048
MAX_USER_ID_BYTES = 256
# Context fields (nothing indexes them yet; the limits bound what a record can carry).
MAX_URL_BYTES = 2048  # `url` and `referrer` each
MAX_USER_AGENT_BYTES = 1024
MAX_CLIENT_ADDRESS_BYTES = 64  # longer than any IPv6 text form with a zone
# Custom properties: each becomes a row of the daily_props rollup, written in the batch's
# transaction, so they are what an event costs the consumer most (30 random keys with values
# of 256 bytes made it ~29x slower than plain events, docs/benchmarks.md). Ten keys cover
# what a custom event describes (a plan, a step, a variant); a value is a label to break
# down by, and 128 bytes hold any readable one. The rollup also caps keys and values per
# site and day (consumer/rollups/dimensions.sql); these bound what one event can cost.
MAX_PROPS = 10
MAX_PROP_KEY_BYTES = 64
MAX_PROP_VALUE_BYTES = 128

SiteId = Annotated[str, Meta(min_length=1, max_length=MAX_SITE_ID_BYTES)]
EventType = Annotated[str, Meta(min_length=1, max_length=MAX_EVENT_TYPE_BYTES)]
Path = Annotated[str, Meta(min_length=1, max_length=MAX_PATH_BYTES)]
UserId = Annotated[str, Meta(min_length=1, max_length=MAX_USER_ID_BYTES)]
AwareDatetime = Annotated[datetime, Meta(tz=True)]
Url = Annotated[str, Meta(max_length=MAX_URL_BYTES)]
UserAgent = Annotated[str, Meta(max_length=MAX_USER_AGENT_BYTES)]
ClientAddress = Annotated[str, Meta(min_length=1, max_length=MAX_CLIENT_ADDRESS_BYTES)]
# Keys and values are checked one by one (check_props), so that a refusal names the key.
Props = Annotated[dict[str, str], Meta(max_length=MAX_PROPS)]

# Kafka header naming the encoding of a message's value.
SCHEMA_HEADER = "schema"
SCHEMA_EVENT_V1 = b"event.v1"  # one msgpack EventRecord
SCHEMA_EVENT_BATCH_V1 = b"event-batch.v1"  # a msgpack array of EventRecords


class IncomingEvent(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=False):
    """One event as an emitter sends it. The original service's five fields stay required."""

    site_id: SiteId
    event_type: EventType
    path: Path
    user_id: UserId
    timestamp: AwareDatetime
    event_id: uuid.UUID | None = None  # the emitter's idempotency key, if it has one
    # When the emitter sent the request, by its own clock: corrects the clock's skew.
    sent_at: AwareDatetime | None = None
    # Context, all optional: the page, where the visitor came from, custom properties.
    url: Url | None = None
    referrer: Url | None = None
    props: Props | None = None
    # A browser's user agent and address, sent by a server tracking on its behalf; honoured
    # only with a valid write key (ingest/accept.py). Used to derive context, never stored.
    user_agent: UserAgent | None = None
    client_address: ClientAddress | None = None

    @property
    def has_context(self) -> bool:
        """Whether any context field is set (an original-contract event has none)."""
        return not (
            self.url is None
            and self.referrer is None
            and self.props is None
            and self.user_agent is None
            and self.client_address is None
        )


class EventRecord(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """One accepted event, as produced to Kafka and read by the consumer."""

    event_id: uuid.UUID
    site_id: str
    event_type: str
    path: str
    user_id: str
    timestamp: datetime
    received_at: datetime
    # The emitter sent `event_id` (an idempotency key) rather than the API assigning one: a
    # retry may then carry another corrected time, even another day (see event_time), and the
    # consumer looks for the id on the neighbouring days too.
    emitter_id: bool = False
    # The hit's context, derived by the API from the request (ingest/context.py): never the
    # client address or the user agent string themselves. None: not known, or sent by an
    # earlier API.
    browser: str | None = None
    os: str | None = None
    device: str | None = None  # "desktop", "mobile" or "tablet"
    country: str | None = None  # ISO 3166-1 alpha-2
    referrer_host: str | None = None
    referrer_source: str | None = None
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None
    utm_content: str | None = None
    utm_term: str | None = None
    props: dict[str, str] | None = None  # custom properties, bounded at the edge


# The context fields of EventRecord, in its order: the consumer copies them to `events`.
CONTEXT_FIELDS = (
    "browser",
    "os",
    "device",
    "country",
    "referrer_host",
    "referrer_source",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_content",
    "utm_term",
    "props",
)


# Machine-readable codes of refused events (ingest/errors.py maps them to HTTP answers).
INVALID = "invalid_request"
MALFORMED = "malformed_json"
FIELD_TOO_LONG = "field_too_long"
TIMESTAMP_TOO_OLD = "timestamp_too_old"
TIMESTAMP_EXPIRED = "timestamp_expired"


class InvalidEvent(ValueError):
    """An event body that is not acceptable; `field` names the culprit when there is one,
    `code` says what is wrong with it (one of the codes above)."""

    def __init__(
        self, message: str, field: str | None, *, malformed: bool = False, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.malformed = malformed
        self.code = code or (MALFORMED if malformed else INVALID)


_json_event_decoder = msgspec.json.Decoder(IncomingEvent)
_record_encoder = msgspec.msgpack.Encoder(uuid_format="bytes")
_record_decoder = msgspec.msgpack.Decoder(EventRecord)
_record_batch_decoder = msgspec.msgpack.Decoder(list[EventRecord])

_TEXT_FIELDS = ("site_id", "event_type", "path", "user_id")

# Byte limits, chosen so that the widest key of every B-tree index in schema.sql stays well
# under PostgreSQL's largest index entry, 2,704 bytes with 8 kB pages (SQLSTATE 54000 past
# it; a value is compressed first only if it compresses, which random CJK text does not).
# An entry is an 8-byte header, then each column at its alignment: text as a 4-byte length
# (1 byte up to 126 bytes) and its bytes, date 4, bigint 8 (8-aligned). `timezone` is a
# known IANA name (the stats API checks it), 32 bytes at most today; 64 are counted. Worst:
#   daily_details (site_id, day, event_type, path):   8 + 132 + 4 + 68 + 2,052 = 2,264
#   daily_paths_top (site_id, day, page_views DESC, path): 8 + 132 + 4 + 8 + 2,052 = 2,204
#   local_daily_paths_top, sealed_monthly_paths_top
#     (site_id, timezone, day or month, page_views DESC, path):
#                                  8 + 132 + 68 + 4 + 4 pad + 8 + 2,052 = 2,276
#   the other local_* and sealed_* keys with a path drop `page_views`:            <= 2,264
#   daily_visitor_ids (site_id, day, user_id):          8 + 132 + 4 + 260 = 404
#   daily_event_types, sealed_monthly_event_types (site_id, day, event_type): 212
#   events (day, [site_id,] event_id):                                          < 170
# The largest leaves 428 bytes of margin. The raw rows index no other text column. Checked
# against PostgreSQL with random CJK at every limit and the longest zone name: that key first
# fails with a path of ~2,510 bytes.
MAX_FIELD_BYTES = (
    ("site_id", MAX_SITE_ID_BYTES),
    ("event_type", MAX_EVENT_TYPE_BYTES),
    ("path", MAX_PATH_BYTES),
    ("user_id", MAX_USER_ID_BYTES),
)
# The optional text fields' limits, checked only when they are set.
MAX_CONTEXT_BYTES = (
    ("url", MAX_URL_BYTES),
    ("referrer", MAX_URL_BYTES),
    ("user_agent", MAX_USER_AGENT_BYTES),
    ("client_address", MAX_CLIENT_ADDRESS_BYTES),
)


class ItemError(msgspec.Struct, frozen=True, omit_defaults=True):
    """Why one item of a batch was refused: its position, a code, and the field to blame."""

    index: int
    code: str
    message: str
    field: str | None = None


def decode_event(body: bytes | msgspec.Raw, *, check_nul: bool = True) -> IncomingEvent:
    """Parses and validates one JSON event, or raises InvalidEvent naming the field.

    `check_nul=False` skips the NUL check: for items of a body known to hold no `\\u0000`
    (a raw NUL is not valid JSON, so that escape is the only way to write one)."""
    try:
        event = _json_event_decoder.decode(body)
    except msgspec.ValidationError as exc:
        message, field, code = _describe_validation_error(str(exc))
        raise InvalidEvent(message, field, code=code) from None
    except msgspec.DecodeError as exc:
        raise InvalidEvent(f"Malformed JSON: {exc}", None, malformed=True) from None
    except RecursionError:
        # msgspec skips unknown fields' values recursively: `{"x": [[[[...` runs out of stack.
        raise InvalidEvent(_TOO_DEEP, None, malformed=True) from None
    # An ASCII string's length is its size in bytes, which msgspec has already checked
    # (`isascii` reads a flag of the string: the common case costs next to nothing).
    if not (
        event.path.isascii()
        and event.user_id.isascii()
        and event.site_id.isascii()
        and event.event_type.isascii()
    ):
        _check_utf8_sizes(event)
    if event.has_context:
        _check_context(event, check_nul=check_nul)
    if not check_nul:
        return event
    for name in _TEXT_FIELDS:
        # PostgreSQL text cannot hold NUL; refuse it here rather than poison the consumer.
        if "\x00" in getattr(event, name):
            raise InvalidEvent(f"`{name}` must not contain NUL characters", name)
    return event


def _check_context(event: IncomingEvent, *, check_nul: bool) -> None:
    for name, limit in MAX_CONTEXT_BYTES:
        value: str | None = getattr(event, name)
        if value is not None:
            check_text(name, value, limit, nul=check_nul)
    if event.props is not None:
        check_props(event.props)
    if event.client_address is not None:
        try:
            ipaddress.ip_address(event.client_address)
        except ValueError:
            raise InvalidEvent(
                "`client_address` must be an IPv4 or IPv6 address", "client_address"
            ) from None


def check_text(name: str, value: str, limit: int, *, nul: bool = True) -> None:
    """Refuses text longer than `limit` UTF-8 bytes (code field_too_long), or holding NUL
    (which PostgreSQL text cannot hold), naming `name`."""
    if not value.isascii():
        try:
            size = len(value.encode())
        except UnicodeEncodeError:
            raise InvalidEvent(
                f"`{name}` holds an unpaired UTF-16 surrogate", name, malformed=True
            ) from None
        if size > limit:
            raise InvalidEvent(_too_long(name, limit, size), name, code=FIELD_TOO_LONG)
    elif len(value) > limit:
        raise InvalidEvent(_too_long(name, limit, len(value)), name, code=FIELD_TOO_LONG)
    if nul and "\x00" in value:
        raise InvalidEvent(f"`{name}` must not contain NUL characters", name)


def check_props(props: dict[str, str], name: str = "props") -> None:
    """Refuses more than MAX_PROPS keys, an empty key, a key past MAX_PROP_KEY_BYTES or a value
    past MAX_PROP_VALUE_BYTES (UTF-8), or NUL in either; the field named is `props.<key>`."""
    if len(props) > MAX_PROPS:
        raise InvalidEvent(
            f"`{name}` holds {len(props)} keys; at most {MAX_PROPS} are accepted", name
        )
    for key, value in props.items():
        if not key:
            raise InvalidEvent(f"`{name}` holds an empty key", name)
        where = f"{name}.{key[:MAX_PROP_KEY_BYTES]}"
        check_text(where, key, MAX_PROP_KEY_BYTES)
        check_text(where, value, MAX_PROP_VALUE_BYTES)


_TOO_DEEP = "Malformed JSON: nested too deeply (an event is a flat object)"


def _check_utf8_sizes(event: IncomingEvent) -> None:
    """Refuses a text field larger than its limit in UTF-8 bytes, or one that cannot be
    encoded at all (a lone surrogate: msgspec refuses `\\ud800` today; this keeps it so)."""
    for name, limit in MAX_FIELD_BYTES:
        value: str = getattr(event, name)
        if not value.isascii():  # msgspec's character limit already bounds ASCII text
            check_text(name, value, limit, nul=False)


def _too_long(name: str, limit: int, size: int | None = None) -> str:
    actual = f" ({size} bytes)" if size is not None else ""
    return f"`{name}` is longer than {limit} bytes in UTF-8{actual}; shorten it"


def may_hold_nul(body: bytes) -> bool:
    """Whether a JSON body could hold a NUL character in a string (only as `\\u0000`)."""
    return b"\\u0000" in body


_uuid_list_decoder = msgspec.msgpack.Decoder(list[uuid.UUID])


def new_event_ids(count: int) -> list[uuid.UUID]:
    """`count` fresh UUIDv7s (time-ordered), built in one go: the per-id Python overhead of
    `uuid.UUID` construction dominates otherwise."""
    packed = b"".join([b"\xc4\x10" + _uuid7().bytes for _ in range(count)])
    return _uuid_list_decoder.decode(b"\xdd" + count.to_bytes(4, "big") + packed)


def _describe_validation_error(text: str) -> tuple[str, str | None, str]:
    """Turns msgspec's message into (message, field, code): "... - at `$.path`" or
    "missing ...`x`"."""
    if "missing required field `" in text:
        missing = text.split("`")[1]
        return f"`{missing}` is required", missing, INVALID
    field: str | None = None
    if " - at `$." in text:
        field = text.rsplit(" - at `$.", 1)[1].rstrip("`").split(".")[0].split("[")[0]
        text = text.rsplit(" - at `", 1)[0]
    if field == "props" and "`object` of length <=" in text:
        return f"`props` holds more than {MAX_PROPS} keys", field, INVALID
    if field == "timestamp" and "timezone" in text:
        return "`timestamp` must be an ISO 8601 date-time with a zone (Z or +hh:mm)", field, INVALID
    limits = dict(MAX_FIELD_BYTES + MAX_CONTEXT_BYTES)
    if field in limits and "of length <=" in text:
        return _too_long(field, limits[field]), field, FIELD_TOO_LONG
    if field is not None:
        return f"Invalid `{field}`: {text}", field, INVALID
    return text, None, INVALID


def event_time(event: IncomingEvent, received_at: datetime, max_future: timedelta) -> datetime:
    """When the event happened, by the server's clock, in UTC.

    With `sent_at`, the emitter's clock skew is removed: `timestamp + (received_at - sent_at)`.
    A time more than `max_future` after `received_at`, or one the correction pushes past
    year 9999, is clamped to `received_at`: a clock far ahead or a bogus value must not
    create rows in days that have not happened. One pushed before year 1 is dated at the
    range's start, so that the past-time window refuses it.
    """
    timestamp = event.timestamp
    try:
        if event.sent_at is not None:
            timestamp = timestamp + (received_at - event.sent_at)
        timestamp = timestamp.astimezone(UTC)
    except OverflowError:
        # Out of the representable range: far in the past (year 1 with a positive offset, or
        # a `sent_at` far ahead) is dated at the range's start, which the past-time window
        # refuses; far in the future is a clock ahead, clamped like any other.
        if _overflows_into_the_past(event, received_at):
            return datetime.min.replace(tzinfo=UTC)
        return received_at
    if timestamp - received_at > max_future:
        return received_at
    return timestamp


def _overflows_into_the_past(event: IncomingEvent, received_at: datetime) -> bool:
    if event.sent_at is not None and event.sent_at > received_at:
        return True  # the correction subtracts more than the range holds
    return event.timestamp.year < 5000


def to_record(
    event: IncomingEvent,
    event_id: uuid.UUID,
    received_at: datetime,
    *,
    max_future: timedelta = timedelta.max,
) -> EventRecord:
    """The Kafka record for an accepted event; its time corrected (see event_time), in UTC."""
    return EventRecord(
        event_id=event_id,
        site_id=event.site_id,
        event_type=event.event_type,
        path=event.path,
        user_id=event.user_id,
        timestamp=event_time(event, received_at, max_future),
        received_at=received_at,
        emitter_id=event.event_id is not None,
        props=event.props,
    )


def encode_record(record: EventRecord) -> bytes:
    return _record_encoder.encode(record)


def encode_records(records: list[EventRecord]) -> bytes:
    return _record_encoder.encode(records)


def decode_records(value: bytes, schema: bytes | None) -> list[EventRecord]:
    """Decodes a Kafka value of either schema; raises msgspec.DecodeError on garbage."""
    if schema == SCHEMA_EVENT_BATCH_V1:
        return _record_batch_decoder.decode(value)
    if schema in (SCHEMA_EVENT_V1, None):
        return [_record_decoder.decode(value)]
    raise msgspec.DecodeError(f"unknown schema {schema!r}")
