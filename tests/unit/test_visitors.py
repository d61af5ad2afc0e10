"""Cookieless visitors: the visitor id under a day's salt, and the sealing of salts."""

from __future__ import annotations

import base64
import os
from datetime import date

import pytest

from core.config import ConfigError
from core.settings import parse_visitor_key
from ingest.salts import (
    SALT_BYTES,
    VisitorKeyMismatch,
    decode_key,
    key_fingerprint,
    seal,
    unseal,
)
from ingest.visitor_id import visitor_id

UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
MONDAY, TUESDAY = date(2025, 11, 10), date(2025, 11, 11)


def test_the_same_browser_is_one_visitor_within_a_day_and_another_the_next() -> None:
    monday, tuesday = os.urandom(SALT_BYTES), os.urandom(SALT_BYTES)
    first = visitor_id(monday, "site-a", "203.0.113.7", UA)
    assert first == visitor_id(monday, "site-a", "203.0.113.7", UA)
    assert len(first) == 32 and int(first, 16) >= 0
    assert visitor_id(tuesday, "site-a", "203.0.113.7", UA) != first


def test_the_visitor_differs_per_site_address_and_user_agent() -> None:
    salt = os.urandom(SALT_BYTES)
    ids = {
        visitor_id(salt, "site-a", "203.0.113.7", UA),
        visitor_id(salt, "site-b", "203.0.113.7", UA),
        visitor_id(salt, "site-a", "203.0.113.8", UA),
        visitor_id(salt, "site-a", "203.0.113.7", UA + " extra"),
        # The parts are length-prefixed: moving bytes from one part to the next changes the id.
        visitor_id(salt, "site-a2", "03.0.113.7", UA),
    }
    assert len(ids) == 5


def test_a_sealed_salt_opens_with_its_key_and_day() -> None:
    key, salt = os.urandom(32), os.urandom(SALT_BYTES)
    sealed = seal(key, MONDAY, salt)
    assert salt not in sealed
    assert unseal(key, MONDAY, sealed) == salt
    assert seal(key, MONDAY, salt) != sealed  # a fresh nonce each time


def test_a_wrong_key_is_detected_and_named() -> None:
    sealed = seal(os.urandom(32), MONDAY, os.urandom(SALT_BYTES))
    with pytest.raises(VisitorKeyMismatch, match="VISITOR_KEY"):
        unseal(os.urandom(32), MONDAY, sealed)


def test_a_salt_moved_to_another_day_or_altered_does_not_open() -> None:
    key = os.urandom(32)
    sealed = seal(key, MONDAY, os.urandom(SALT_BYTES))
    with pytest.raises(VisitorKeyMismatch):
        unseal(key, TUESDAY, sealed)
    altered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(VisitorKeyMismatch):
        unseal(key, MONDAY, altered)


def test_visitor_key_must_be_32_bytes_of_base64_and_is_never_echoed() -> None:
    good = base64.b64encode(os.urandom(32)).decode()
    assert decode_key(parse_visitor_key(good)) == base64.b64decode(good)
    for bad in ("not base64!", base64.b64encode(os.urandom(16)).decode(), "c2VjcmV0"):
        with pytest.raises(ConfigError, match="VISITOR_KEY") as caught:
            parse_visitor_key(bad)
        assert bad not in str(caught.value)


def test_the_key_fingerprint_tells_keys_apart_and_nothing_of_them() -> None:
    key = os.urandom(32)
    assert key_fingerprint(key) == key_fingerprint(key)
    assert key_fingerprint(key) != key_fingerprint(os.urandom(32))
    assert len(key_fingerprint(key)) == 32 and key not in key_fingerprint(key)
