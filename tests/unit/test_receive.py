"""Body reading and batch splitting, and the event decoder fuzzed with hypothesis."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.events import IncomingEvent, InvalidEvent, decode_event, event_time, to_record
from ingest.errors import ApiError, MalformedJson, PayloadTooLarge
from ingest.receive import read_body, split_batch

FAST = settings(max_examples=200, deadline=None)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
field_values = st.one_of(
    json_values,
    st.text(max_size=30),
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.uuids().map(str),
)
event_like = st.fixed_dictionaries(
    {},
    optional={
        name: field_values
        for name in (
            "site_id",
            "event_type",
            "path",
            "user_id",
            "timestamp",
            "event_id",
            "sent_at",
        )
    },
)


def read(data: bytes, *, encoding: str | None = None, max_bytes: int = 1024) -> bytes:
    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 100):
            yield data[start : start + 100]

    return asyncio.run(read_body(None, encoding, chunks(), max_bytes=max_bytes))


@FAST
@given(st.binary(max_size=300))
def test_decoder_never_fails_other_than_invalid_event(raw: bytes) -> None:
    with contextlib.suppress(InvalidEvent):
        decode_event(raw)


@FAST
@given(event_like)
def test_event_shaped_objects_decode_or_name_a_field(fields: dict[str, object]) -> None:
    received_at = datetime.now(UTC)
    try:
        event = decode_event(json.dumps(fields).encode())
        record = to_record(event, event.event_id or uuid.uuid4(), received_at)
    except InvalidEvent as exc:
        assert exc.message
        return
    assert record.timestamp.tzinfo is not None


@FAST
@given(st.binary(max_size=300), st.booleans())
def test_batch_splitting_answers_items_or_a_client_error(raw: bytes, ndjson: bool) -> None:
    try:
        items = split_batch(raw, ndjson=ndjson, max_events=5)
    except ApiError as exc:
        assert exc.status in (400, 413)
        return
    assert len(items) <= 5


@FAST
@given(st.lists(event_like, max_size=6))
def test_batches_of_anything_split_into_their_items(items: list[dict[str, object]]) -> None:
    raw = json.dumps(items).encode()
    assert len(split_batch(raw, ndjson=False, max_events=10)) == len(items)
    envelope = json.dumps({"batch": items}).encode()
    assert len(split_batch(envelope, ndjson=False, max_events=10)) == len(items)
    lines = b"\n".join(json.dumps(item).encode() for item in items)
    assert len(split_batch(lines, ndjson=True, max_events=10)) == len(items)


@FAST
@given(st.binary(max_size=3000))
def test_gzip_round_trips_within_the_limit_and_is_refused_past_it(data: bytes) -> None:
    packed = gzip.compress(data)
    if len(data) <= 1024:
        assert read(packed, encoding="gzip") == data
    else:
        with pytest.raises(PayloadTooLarge):
            read(packed, encoding="gzip")


@FAST
@given(st.binary(max_size=200))
def test_garbage_declared_as_gzip_is_a_client_error(data: bytes) -> None:
    with contextlib.suppress(MalformedJson, PayloadTooLarge):
        read(data, encoding="gzip")


def test_a_gzip_bomb_is_refused_after_inflating_just_past_the_limit() -> None:
    bomb = gzip.compress(bytes(200 * 1024 * 1024))  # 200 MiB of zeros, ~200 KiB packed
    with pytest.raises(PayloadTooLarge):
        read(bomb, encoding="gzip", max_bytes=1024 * 1024)


def test_a_declared_length_past_the_limit_is_refused_unread() -> None:
    async def never() -> AsyncIterator[bytes]:
        raise AssertionError("the body should not be read")
        yield b""

    with pytest.raises(PayloadTooLarge) as caught:
        asyncio.run(read_body("5000", None, never(), max_bytes=1024))
    assert caught.value.message == (
        "The body is larger than 1024 bytes as received (Content-Length: 5000)"
    )
    assert caught.value.field == "Content-Length"


def test_a_compressed_body_declared_too_long_is_refused_as_received() -> None:
    """Its Content-Length is what is over the limit: nothing was decompressed."""

    async def never() -> AsyncIterator[bytes]:
        raise AssertionError("the body should not be read")
        yield b""

    with pytest.raises(PayloadTooLarge) as caught:
        asyncio.run(read_body("5000", "gzip", never(), max_bytes=1024))
    assert caught.value.message == (
        "The compressed body is larger than 1024 bytes as received (Content-Length: 5000)"
    )
    assert "decompression" not in caught.value.message
    assert caught.value.field == "Content-Length"


def test_each_refusal_says_which_size_was_over() -> None:
    with pytest.raises(PayloadTooLarge) as plain:
        read(b"x" * 2000, max_bytes=1024)
    assert plain.value.message == "The body is larger than 1024 bytes as received"
    with pytest.raises(PayloadTooLarge) as inflated:
        read(gzip.compress(b"x" * 2000), encoding="gzip", max_bytes=1024)
    assert inflated.value.message == "The body is larger than 1024 bytes after decompression"
    with pytest.raises(PayloadTooLarge) as packed:
        read(gzip.compress(b"") * 100, encoding="gzip", max_bytes=1024)
    assert packed.value.message == "The compressed body is larger than 1024 bytes as received"


@FAST
@given(
    st.datetimes(timezones=st.just(UTC)),
    st.one_of(st.none(), st.datetimes(timezones=st.just(UTC))),
)
def test_event_time_is_corrected_clamped_or_refused(
    timestamp: datetime, sent_at: datetime | None
) -> None:
    event = IncomingEvent(
        site_id="s", event_type="t", path="/", user_id="u", timestamp=timestamp, sent_at=sent_at
    )
    received_at = datetime(2026, 1, 1, tzinfo=UTC)
    max_future = timedelta(hours=1)
    corrected = event_time(event, received_at, max_future)
    assert corrected - received_at <= max_future
    if sent_at is None and timestamp - received_at <= max_future:
        assert corrected == timestamp


# --- bodies read whole or refused ---


def test_every_gzip_member_is_read() -> None:
    first, second = b'[{"a": 1},', b'{"b": 2}]'
    two = gzip.compress(first) + gzip.compress(second)
    assert read(two, encoding="gzip") == first + second
    many = b"".join(gzip.compress(bytes([65 + i])) for i in range(20))
    assert read(many, encoding="gzip") == bytes(range(65, 85))


def test_the_output_cap_covers_all_members_together() -> None:
    members = gzip.compress(b"x" * 600) * 2
    with pytest.raises(PayloadTooLarge):
        read(members, encoding="gzip", max_bytes=1000)


@pytest.mark.parametrize(
    "trailer", [b"x", b"\x00" * 8, b"garbage after the member", b"\x1f\x8b\x08", b"\n"]
)
def test_bytes_after_the_last_member_are_refused(trailer: bytes) -> None:
    with pytest.raises(MalformedJson) as caught:
        read(gzip.compress(b"[]") + trailer, encoding="gzip")
    assert caught.value.field == "Content-Encoding"
    assert "after its first member" in caught.value.message


def test_a_truncated_later_member_is_refused() -> None:
    with pytest.raises(MalformedJson):
        read(gzip.compress(b"[1]") + gzip.compress(b"[2]")[:-4], encoding="gzip")


def test_the_compressed_body_is_capped_too() -> None:
    # Empty members inflate to nothing: only the cap on what is received stops them.
    padding = gzip.compress(b"") * 100
    with pytest.raises(PayloadTooLarge) as caught:
        read(padding, encoding="gzip", max_bytes=1024)
    assert caught.value.field == "Content-Encoding"
    assert read(gzip.compress(b"") * 10, encoding="gzip", max_bytes=1024) == b""


@pytest.mark.parametrize(
    "raw",
    [b"[" * 20_000, b'{"batch": ' + b"[" * 20_000, b'{"x": ' + b"[" * 20_000, b"[" + b"[" * 20_000],
)
def test_deeply_nested_batches_are_refused_with_400(raw: bytes) -> None:
    with pytest.raises(MalformedJson) as caught:
        split_batch(raw, ndjson=False, max_events=1000)
    assert caught.value.status == 400
