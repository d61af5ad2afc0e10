"""The optional context fields of events and the browser route's hits: limits in UTF-8 bytes,
each refusal naming its field, and records that older decoders still read."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from core.events import (
    FIELD_TOO_LONG,
    EventRecord,
    InvalidEvent,
    decode_event,
    decode_records,
    encode_record,
    to_record,
)
from ingest.browser import decode_hit, event_type, page_path

CJK = "".join(chr(c) for c in range(0x4E00, 0x4E00 + 2000))  # three UTF-8 bytes each


def body(**changes: Any) -> bytes:
    fields = {
        "site_id": "site-a",
        "event_type": "page_view",
        "path": "/",
        "user_id": "u1",
        "timestamp": "2025-11-12T19:30:01Z",
        **changes,
    }
    return json.dumps(fields).encode()


def refusal(raw: bytes) -> tuple[str, str | None]:
    with pytest.raises(InvalidEvent) as caught:
        decode_event(raw)
    return caught.value.code, caught.value.field


def test_context_fields_at_their_limits_are_accepted() -> None:
    props = {f"k{i:02d}" + "a" * 61: CJK[:42] + "aa" for i in range(10)}  # 64 and 128 bytes
    assert all(len(k.encode()) == 64 and len(v.encode()) == 128 for k, v in props.items())
    url = "https://example.com/" + "é" * 1014  # 20 + 2,028 = 2,048 bytes
    event = decode_event(
        body(url=url, referrer=url, props=props, user_agent="x" * 1024, client_address="::1")
    )
    assert event.props == props and event.url == url


@pytest.mark.parametrize(
    ("changes", "code", "field"),
    [
        ({"url": "https://example.com/" + "é" * 1015}, FIELD_TOO_LONG, "url"),
        ({"referrer": "a" * 2049}, FIELD_TOO_LONG, "referrer"),
        ({"referrer": "https://a/\u0000"}, "invalid_request", "referrer"),
        ({"props": {f"k{i}": "v" for i in range(11)}}, "invalid_request", "props"),
        ({"props": {"plan": "a" * 129}}, FIELD_TOO_LONG, "props.plan"),
        ({"props": {"plan": CJK[:43]}}, FIELD_TOO_LONG, "props.plan"),
        ({"props": {"k" * 65: "v"}}, FIELD_TOO_LONG, "props." + "k" * 64),
        ({"props": {"": "v"}}, "invalid_request", "props"),
        ({"props": {"plan": 3}}, "invalid_request", "props"),
        ({"props": {"plan": "a\u0000"}}, "invalid_request", "props.plan"),
        ({"props": ["plan"]}, "invalid_request", "props"),
        ({"user_agent": "x" * 1025}, FIELD_TOO_LONG, "user_agent"),
        ({"client_address": "not an address"}, "invalid_request", "client_address"),
        ({"client_address": ""}, "invalid_request", "client_address"),
    ],
)
def test_each_refusal_names_its_field(changes: dict[str, Any], code: str, field: str) -> None:
    assert refusal(body(**changes)) == (code, field)


def test_an_original_event_has_no_context_and_its_record_keeps_none() -> None:
    event = decode_event(body())
    assert not event.has_context
    record = to_record(event, uuid.uuid4(), datetime.now(UTC))
    assert (record.props, record.browser, record.country, record.utm_source) == (None,) * 4


class _OlderRecord(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """EventRecord as the previous release declared it."""

    event_id: uuid.UUID
    site_id: str
    event_type: str
    path: str
    user_id: str
    timestamp: datetime
    received_at: datetime
    emitter_id: bool = False


def test_records_with_context_are_read_by_older_and_newer_decoders() -> None:
    now = datetime.now(UTC)
    record = EventRecord(
        event_id=uuid.uuid4(),
        site_id="s",
        event_type="signup",
        path="/p",
        user_id="u",
        timestamp=now,
        received_at=now,
        props={"plan": "pro"},
        browser="Firefox",
        country="NL",
        utm_term="x",
    )
    value = encode_record(record)
    older = msgspec.msgpack.decode(value, type=_OlderRecord)
    assert (older.site_id, older.path) == ("s", "/p")
    assert decode_records(value, None) == [record]
    # An older release's record decodes with every context field None.
    old_value = msgspec.msgpack.Encoder(uuid_format="bytes").encode(
        _OlderRecord(
            event_id=record.event_id,
            site_id="s",
            event_type="e",
            path="/",
            user_id="u",
            timestamp=now,
            received_at=now,
        )
    )
    (new,) = decode_records(old_value, None)
    assert new.props is None and new.country is None


def hit(**changes: Any) -> bytes:
    fields = {"n": "pageview", "u": "https://example.com/pricing?x=1", "d": "site-a", **changes}
    return json.dumps(fields).encode()


def hit_refusal(raw: bytes) -> tuple[str, str | None]:
    with pytest.raises(InvalidEvent) as caught:
        decoded = decode_hit(raw)
        page_path(decoded.u)
    return caught.value.code, caught.value.field


def test_a_hit_becomes_a_page_view_of_its_path() -> None:
    decoded = decode_hit(hit(r=None, p={"plan": "pro"}))
    assert event_type(decoded.n) == "page_view"
    assert event_type("signup") == "signup"
    assert page_path(decoded.u) == "/pricing"
    assert page_path("https://example.com") == "/"
    assert page_path("HTTP://example.com/a/b#frag") == "/a/b"


@pytest.mark.parametrize(
    ("raw", "code", "field"),
    [
        (hit(n=""), "invalid_request", "n"),
        (hit(n=CJK[:22]), FIELD_TOO_LONG, "n"),
        (hit(n="a\u0000"), "invalid_request", "n"),
        (hit(u="/relative"), "invalid_request", "u"),
        (hit(u="javascript:alert(1)"), "invalid_request", "u"),
        (hit(u="ftp://example.com/"), "invalid_request", "u"),
        (hit(u="http://[::1/"), "invalid_request", "u"),
        (hit(u="https://example.com/" + "é" * 1015), FIELD_TOO_LONG, "u"),
        (hit(d=""), "invalid_request", "d"),
        (hit(d=CJK[:43]), FIELD_TOO_LONG, "d"),
        (hit(r="a" * 2049), FIELD_TOO_LONG, "r"),
        (hit(r=3), "invalid_request", "r"),
        (hit(p={"plan": "a" * 129}), FIELD_TOO_LONG, "p.plan"),
        (hit(p={str(i): "v" for i in range(11)}), "invalid_request", "p"),
        (json.dumps({"u": "https://e.com/", "d": "s"}).encode(), "invalid_request", "n"),
        (b"{", "malformed_json", None),
        (b"[" * 10_000, "invalid_request", None),
        (b'{"x": ' + b"[" * 10_000, "malformed_json", None),
    ],
)
def test_each_hit_refusal_names_its_field(raw: bytes, code: str, field: str | None) -> None:
    assert hit_refusal(raw) == (code, field)
