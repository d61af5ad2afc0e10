"""The wire contract: what is accepted, what is refused (and the field named), encodings."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest

from core.events import (
    SCHEMA_EVENT_BATCH_V1,
    SCHEMA_EVENT_V1,
    EventRecord,
    InvalidEvent,
    decode_event,
    decode_records,
    encode_record,
    encode_records,
    to_record,
)

VALID = {
    "site_id": "site-abc-123",
    "event_type": "page_view",
    "path": "/pricing",
    "user_id": "user-xyz-789",
    "timestamp": "2025-11-12T19:30:01Z",
}


def body(**changes: object) -> bytes:
    event = {**VALID, **changes}
    return json.dumps({k: v for k, v in event.items() if v is not ...}).encode()


def refusal(raw: bytes) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as caught:
        decode_event(raw)
    return caught.value


def test_the_original_example_is_accepted() -> None:
    event = decode_event(body())
    assert event.site_id == "site-abc-123"
    assert event.timestamp == datetime(2025, 11, 12, 19, 30, 1, tzinfo=UTC)
    assert event.event_id is None


@pytest.mark.parametrize("field", ["site_id", "event_type", "path", "user_id", "timestamp"])
def test_each_original_field_is_required(field: str) -> None:
    error = refusal(body(**{field: ...}))
    assert error.field == field
    assert f"`{field}` is required" == error.message


@pytest.mark.parametrize(
    ("field", "value"),
    [("site_id", 42), ("event_type", None), ("path", ["/"]), ("user_id", {}), ("timestamp", 1)],
)
def test_ill_typed_fields_are_named(field: str, value: object) -> None:
    error = refusal(body(**{field: value}))
    assert error.field == field
    assert field in error.message


def test_timestamp_without_zone_is_refused() -> None:
    error = refusal(body(timestamp="2025-11-12T19:30:01"))
    assert error.field == "timestamp"
    assert "zone" in error.message


def test_impossible_timestamp_is_refused() -> None:
    assert refusal(body(timestamp="2025-02-30T10:00:00Z")).field == "timestamp"


@pytest.mark.parametrize("raw", [b"", b"{", b"not json", b'{"site_id": "a",}'])
def test_malformed_json_is_flagged(raw: bytes) -> None:
    error = refusal(raw)
    assert error.malformed
    assert error.field is None


def test_a_non_object_body_is_refused() -> None:
    error = refusal(b"[1, 2]")
    assert not error.malformed
    assert "object" in error.message


@pytest.mark.parametrize("field", ["site_id", "event_type", "path", "user_id"])
def test_empty_strings_are_refused(field: str) -> None:
    assert refusal(body(**{field: ""})).field == field


def test_overlong_site_id_is_refused() -> None:
    assert refusal(body(site_id="s" * 129)).field == "site_id"


def test_nul_characters_are_refused_before_they_reach_postgres() -> None:
    error = refusal(body(path="/a\u0000b"))
    assert error.field == "path"
    assert "NUL" in error.message


def test_client_event_id_is_kept_and_must_be_a_uuid() -> None:
    event_id = uuid.uuid4()
    assert decode_event(body(event_id=str(event_id))).event_id == event_id
    assert refusal(body(event_id="not-a-uuid")).field == "event_id"


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    assert decode_event(body(referrer="https://example.com")).path == "/pricing"


def test_record_normalizes_the_timestamp_to_utc() -> None:
    event = decode_event(body(timestamp="2025-11-12T23:30:00-05:00"))
    received = datetime(2025, 11, 13, 4, 31, tzinfo=UTC)
    record = to_record(event, uuid.uuid4(), received)
    assert record.timestamp == datetime(2025, 11, 13, 4, 30, tzinfo=UTC)
    assert record.timestamp.utcoffset() == timedelta(0)


def make_record(**changes: object) -> EventRecord:
    fields: dict[str, object] = {
        "event_id": uuid.uuid4(),
        "site_id": "s",
        "event_type": "page_view",
        "path": "/",
        "user_id": "u",
        "timestamp": datetime(2025, 1, 1, tzinfo=UTC),
        "received_at": datetime(2025, 1, 1, 0, 0, 1, tzinfo=UTC),
    }
    fields.update(changes)
    return EventRecord(**fields)  # type: ignore[arg-type]


def test_record_round_trips_through_its_kafka_encoding() -> None:
    record = make_record(timestamp=datetime(2025, 3, 4, 5, 6, 7, 890123, tzinfo=UTC))
    assert decode_records(encode_record(record), SCHEMA_EVENT_V1) == [record]
    assert decode_records(encode_record(record), None) == [record]  # header-less producers


def test_batch_encoding_round_trips() -> None:
    records = [make_record(path=f"/{i}") for i in range(3)]
    assert decode_records(encode_records(records), SCHEMA_EVENT_BATCH_V1) == records


def test_record_encoding_is_compact() -> None:
    assert len(encode_record(make_record())) < 80


def test_garbage_and_unknown_schemas_raise_decode_errors() -> None:
    with pytest.raises(msgspec.DecodeError):
        decode_records(b"\xc1garbage", SCHEMA_EVENT_V1)
    with pytest.raises(msgspec.DecodeError):
        decode_records(encode_record(make_record()), b"event.v99")


def test_non_utc_aware_timestamps_survive_encoding_as_the_same_instant() -> None:
    tz = timezone(timedelta(hours=5, minutes=30))
    record = make_record(timestamp=datetime(2025, 1, 1, 5, 30, tzinfo=tz))
    (decoded,) = decode_records(encode_record(record), SCHEMA_EVENT_V1)
    assert decoded.timestamp == datetime(2025, 1, 1, tzinfo=UTC)


# --- limits in UTF-8 bytes, the unit of PostgreSQL's index entries ---

BYTE_LIMITS = [("site_id", 128), ("event_type", 64), ("path", 2048), ("user_id", 256)]


@pytest.mark.parametrize(("field", "limit"), BYTE_LIMITS)
def test_text_at_its_byte_limit_is_accepted_in_any_script(field: str, limit: int) -> None:
    ascii_value = "/" + "a" * (limit - 1)
    two_byte = "/" + "é" * ((limit - 1) // 2) + "a" * ((limit - 1) % 2)
    three_byte = "/" + "路" * ((limit - 1) // 3) + "a" * ((limit - 1) % 3)
    for value in (ascii_value, two_byte, three_byte):
        assert len(value.encode()) == limit
        assert getattr(decode_event(body(**{field: value})), field) == value


@pytest.mark.parametrize(("field", "limit"), BYTE_LIMITS)
def test_text_one_byte_past_its_limit_is_refused_by_name(field: str, limit: int) -> None:
    for value in ("/" + "a" * limit, "/" + "é" * (limit // 2), "😀" * (limit // 4 + 1)):
        assert len(value.encode()) > limit
        error = refusal(body(**{field: value}))
        assert (error.code, error.field) == ("field_too_long", field)
        assert f"{limit} bytes" in error.message


def test_cjk_within_the_character_limit_but_past_the_byte_limit_is_refused() -> None:
    # The reproduction: 2,048 characters, ~6 kB of UTF-8.
    error = refusal(body(path="/" + "路" * 2047))
    assert (error.code, error.field) == ("field_too_long", "path")
    assert "6142 bytes" in error.message


def test_lone_utf16_surrogates_are_refused_as_malformed_json() -> None:
    for escape in ("\\ud800", "\\udfff", "\\ud800x", "\\udc00\\ud800"):
        raw = body(path="/PLACEHOLDER").replace(b"PLACEHOLDER", escape.encode())
        assert refusal(raw).code == "malformed_json"
    # A pair is one character (U+1F600), four bytes: accepted.
    paired = body(path="/PLACEHOLDER").replace(b"PLACEHOLDER", b"\\ud83d\\ude00")
    assert decode_event(paired).path == "/😀"


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 20_000,
        b'{"x": ' + b"[" * 20_000,
        b'{"x": ' + b'{"a": ' * 20_000,
        b'{"site_id": ' + b"[" * 20_000,
    ],
)
def test_deeply_nested_json_is_refused_not_an_internal_error(raw: bytes) -> None:
    error = refusal(raw)
    assert error.code in ("malformed_json", "invalid_request")


def test_refusal_codes_default_from_their_kind() -> None:
    assert refusal(b"{").code == "malformed_json"
    assert refusal(body(site_id="")).code == "invalid_request"


def test_an_ancient_time_with_a_positive_offset_is_refused_not_re_dated() -> None:
    """`0001-01-01T00:00:00+14:00` is before year 1 in UTC: it must meet the past-time
    window like the same instant written with Z, not be clamped to the receipt."""
    from ingest.time_window import TimeWindow

    received = datetime(2026, 12, 6, 9, tzinfo=UTC)
    for body in (
        b'{"site_id":"s","event_type":"page_view","path":"/","user_id":"u",'
        b'"timestamp":"0001-01-01T00:00:00+14:00"}',
        b'{"site_id":"s","event_type":"page_view","path":"/","user_id":"u",'
        b'"timestamp":"2026-12-06T08:00:00Z","sent_at":"9999-12-31T00:00:00Z"}',
    ):
        record = to_record(decode_event(body), uuid.uuid4(), received)
        with pytest.raises(InvalidEvent) as refused:
            TimeWindow(31).check(record.timestamp, received)
        assert refused.value.field == "timestamp"


def test_a_time_past_year_9999_is_still_clamped_to_the_receipt() -> None:
    received = datetime(2026, 12, 6, 9, tzinfo=UTC)
    body = (
        b'{"site_id":"s","event_type":"page_view","path":"/","user_id":"u",'
        b'"timestamp":"9999-12-31T23:00:00-14:00"}'
    )
    assert to_record(decode_event(body), uuid.uuid4(), received).timestamp == received
