"""The dead-letter message format (the reconcile command reads exactly this), and the
tool's naming of entries."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from consumer.batch import REJECTED, Message, Poison
from consumer.deadletter import (
    DLQ_MAX_REQUEST_BYTES,
    MAX_KEY_BYTES,
    MAX_REASON_BYTES,
    MAX_VALUE_BYTES,
    Entry,
    ToolError,
    cut_utf8,
    dead_letter,
    format_line,
    headers_only,
    parse_entry_names,
)
from consumer.reconcile import Unaccounted, missing_line
from consumer.terminal import escaped
from core.events import SCHEMA_EVENT_BATCH_V1, decode_records
from ingest.coalesce import MAX_MESSAGE_BYTES
from tests.support import make_record

NOW = dt.datetime(2025, 11, 12, 19, 30, 1, 250000, tzinfo=dt.UTC)


def test_a_rejected_event_goes_alone_as_event_v1() -> None:
    event_id = uuid.UUID("01234567-89ab-cdef-0123-456789abcdef")
    culprit = make_record(site_id="site-é", event_id=event_id, path="/x")
    source = Message(3, 41, b"a batch of many events", SCHEMA_EVENT_BATCH_V1, b"site-\xc3\xa9")
    item = Poison(source, "rejected by the database: too large", REJECTED, culprit, "54000")
    key, value, headers = dead_letter(item, "events", NOW)
    assert key == "site-é".encode()
    assert decode_records(value, b"event.v1") == [culprit]
    assert headers == [
        ("reason", b"rejected by the database: too large"),
        ("error", b"rejected"),
        ("sqlstate", b"54000"),
        ("schema", b"event.v1"),
        ("site_id", "site-é".encode()),
        ("event_id", b"01234567-89ab-cdef-0123-456789abcdef"),
        ("source_topic", b"events"),
        ("source_partition", b"3"),
        ("source_offset", b"41"),
        ("dead_lettered_at", b"2025-11-12T19:30:01.250000+00:00"),
    ]


def test_an_undecodable_message_goes_whole_as_received() -> None:
    source = Message(0, 7, b"\xc1 garbage", b"event.v9", b"site-a")
    key, value, headers = dead_letter(Poison(source, "cannot decode the message: x"), "ev", NOW)
    assert (key, value) == (b"site-a", b"\xc1 garbage")
    names = dict(headers)
    assert names["error"] == b"undecodable"
    assert names["schema"] == b"event.v9"
    assert names["site_id"] == b"site-a"
    assert "sqlstate" not in names and "event_id" not in names


def test_an_undecodable_message_without_schema_or_readable_key() -> None:
    source = Message(0, 7, b"\xc1", None, b"\xff\xfe")
    key, _, headers = dead_letter(Poison(source, "cannot decode"), "ev", NOW)
    assert key == b"\xff\xfe"
    assert {"schema", "site_id"}.isdisjoint(dict(headers))


def test_the_reason_is_cut_on_a_character_boundary() -> None:
    long_reason = "é" * 2000  # two bytes each
    cut = cut_utf8(long_reason, MAX_REASON_BYTES)
    assert len(cut) == 1000 and cut.decode() == "é" * 500
    assert cut_utf8("a" + "€" * 400, 1000).decode() == "a" + "€" * 333  # 1 + 999 bytes
    assert cut_utf8("short", 1000) == b"short"
    source = Message(0, 0, b"", None)
    _, _, headers = dead_letter(Poison(source, "€" * 1000), "ev", NOW)
    assert len(dict(headers)["reason"]) <= MAX_REASON_BYTES


def test_entries_are_named_partition_colon_offset() -> None:
    assert parse_entry_names(["0:5", "3:12"], 4) == {(0, 5), (3, 12)}
    assert parse_entry_names(["5", "0:6"], 1) == {(0, 5), (0, 6)}
    with pytest.raises(ToolError, match="has 4 partitions"):
        parse_entry_names(["5"], 4)
    with pytest.raises(ToolError, match="PARTITION:OFFSET"):
        parse_entry_names(["x:y"], 4)


def test_a_value_over_the_cap_is_cut_and_says_its_size() -> None:
    value = b"\xc1" * 3_000_000
    source = Message(2, 9, value, b"event.v1" * 100, b"k" * 5000)
    key, sent, headers = dead_letter(Poison(source, "cannot decode"), "ev", NOW)
    assert sent == value[:MAX_VALUE_BYTES]
    assert key == b"k" * MAX_KEY_BYTES
    names = dict(headers)
    assert names["cut_from_bytes"] == b"3000000"
    assert len(names["schema"]) <= 64
    assert "site_id" not in names  # a key that long is no site id
    # Everything together stays under what the producer and a default broker take.
    size = len(key) + len(sent) + sum(len(n) + len(v) for n, v in headers)
    assert size + 1024 < DLQ_MAX_REQUEST_BYTES


def test_what_the_api_produces_goes_whole() -> None:
    assert MAX_VALUE_BYTES > MAX_MESSAGE_BYTES
    source = Message(0, 1, b"x" * MAX_MESSAGE_BYTES, b"event.v9", b"site-a")
    _, sent, headers = dead_letter(Poison(source, "cannot decode"), "ev", NOW)
    assert len(sent) == MAX_MESSAGE_BYTES and "cut_from_bytes" not in dict(headers)


def test_a_refused_letter_goes_again_as_its_headers() -> None:
    source = Message(0, 1, b"x" * 1000, None, b"site-a")
    letter = dead_letter(Poison(source, "cannot decode"), "ev", NOW)
    key, value, headers = headers_only(letter)
    assert (key, value) == (b"site-a", b"")
    assert dict(headers)["cut_from_bytes"] == b"1000"
    assert dict(headers)["source_offset"] == b"1"
    once_cut = dead_letter(Poison(Message(0, 1, b"x" * 2_000_000, None), "r"), "ev", NOW)
    assert [n for n, _ in headers_only(once_cut)[2]].count("cut_from_bytes") == 1


def test_control_characters_are_escaped_for_the_terminal() -> None:
    assert escaped("site-é 日本") == "site-é 日本"
    assert escaped("\x1b[2J\x07\r") == "\\x1b[2J\\x07\\r"
    assert escaped("a\u202eb\x9b") == "a\\u202eb\\x9b"
    assert escaped("\U000e0001") == "\\U000e0001"
    assert escaped("back\\slash") == "back\\\\slash"  # an escape cannot be forged


def test_the_listing_and_reconcile_print_escaped_site_ids_and_reasons() -> None:
    hostile = "evil\x1b]0;owned\x07\x1b[2J"
    entry = Entry(
        0,
        4,
        0,
        hostile.encode(),
        b"",
        {
            "site_id": hostile.encode(),
            "reason": f"rejected: {hostile}\nsecond line".encode(),
            "dead_lettered_at": b"2025-11-12T19:30:01+00:00",
            "cut_from_bytes": b"3000000",
        },
    )
    line = format_line(entry, 1)
    assert line.isprintable()
    assert "evil\\x1b]0;owned\\x07\\x1b[2J" in line
    assert "\\nsecond line" in line
    assert "cut from 3000000 bytes" in line
    missing = missing_line(Unaccounted(0, 4, hostile, None, None))
    assert missing.isprintable() and "site 'evil\\x1b]0;owned" in missing
