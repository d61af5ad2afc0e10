"""The browser route's per-hit work: one pass over the headers, the record built once, the
visitor id and the client unchanged by the caches in front of them."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime

import msgspec

from core.events import EventRecord
from ingest.accept import with_context
from ingest.browser import _read_head, decode_hit, hit_record, page_path
from ingest.client_address import client_address, client_of
from ingest.context import Derived, Enricher
from ingest.visitor_id import visitor_id

UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


def _parts_hashed(salt: bytes, *parts: str) -> str:
    """The visitor id as first specified: each part's length and bytes, fed in turn."""
    digest = hashlib.blake2b(key=salt, digest_size=16)
    for part in parts:
        data = part.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(4, "big"))
        digest.update(data)
    return digest.hexdigest()


def test_the_visitor_id_is_the_one_replicas_of_earlier_releases_compute() -> None:
    salt = os.urandom(32)
    for parts in (("site-a", "203.0.113.7", UA), ("s", "2001:db8::1", "é \udc80"), ("", "", "")):
        assert visitor_id(salt, *parts) == _parts_hashed(salt, *parts)


def test_the_head_holds_the_first_of_each_header_and_every_forwarded_one() -> None:
    headers = [
        (b"content-type", b"Text/Plain; charset=UTF-8"),
        (b"x-forwarded-for", b"198.51.100.1, 203.0.113.9"),
        (b"user-agent", UA.encode()),
        (b"content-type", b"application/xml"),
        (b"user-agent", b"curl/8.0"),
        (b"x-forwarded-for", b"192.0.2.4"),
        (b"cf-ipcountry", b"DE"),
        (b"cf-ipcountry", b"FR"),
        (b"content-length", b"12"),
    ]
    head = _read_head(headers, b"cf-ipcountry")
    assert head.media_type == "text/plain"
    assert head.user_agent == UA
    assert head.forwarded == [b"198.51.100.1, 203.0.113.9", b"192.0.2.4"]
    assert head.country == "DE"
    assert head.content_length == "12" and head.content_encoding is None
    assert _read_head(headers, b" none").country is None
    assert _read_head([], b" none").media_type == ""


def test_the_client_from_read_headers_is_the_client_from_the_scope() -> None:
    cases = [
        [],
        [b"198.51.100.1, 203.0.113.9"],
        [b"198.51.100.1", b"2001:DB8:0:0::7"],
        [b"not-an-address"],
        [b"1" * 200],
        [b" , ,"],
    ]
    for forwarded in cases:
        scope = {"client": ("10.0.0.1", 5), "headers": [(b"x-forwarded-for", v) for v in forwarded]}
        for hops in (0, 1, 2, 3):
            assert client_of(scope, forwarded, hops) == client_address(scope, hops)
    scope = {"client": ("10.0.0.1", 5), "headers": []}
    assert client_of(scope, [b"198.51.100.1", b"2001:DB8:0:0::7"], 1) == "2001:db8::7"
    assert client_of(scope, [b"1" * 200], 1) == "10.0.0.1"


def test_the_record_carries_every_derived_field_as_with_context_adds_them() -> None:
    hit = decode_hit(b'{"n":"signup","u":"https://a.example/x?y=1","d":"site-a","p":{"k":"v"}}')
    fields = {name: f"v-{name}" for name in Derived.__struct_fields__}
    derived = Derived(**fields)
    now = datetime.now(UTC)
    record = hit_record(hit, page_path(hit.u), "visitor", derived, now)
    plain = msgspec.structs.replace(record, **dict.fromkeys(Derived.__struct_fields__, None))
    assert record == with_context(plain, derived)
    assert isinstance(record, EventRecord) and record.props == {"k": "v"}


def test_cached_countries_and_referrers_answer_as_uncached_ones() -> None:
    enricher = Enricher(country_of=lambda ip: "nl" if str(ip).startswith("8.") else None)
    for _ in range(2):  # the second round from the caches
        assert enricher._country("8.8.8.8", None) == "NL"
        assert enricher._country("::ffff:8.8.4.4", None) == "NL"
        assert enricher._country("10.0.0.1", None) is None  # not public
        assert enricher._country("9.9.9.9", None) is None
        assert enricher._country("8" * 600, None) is None  # too long to cache
        google = "https://www.google.com/search?q=x"
        assert enricher._referrer(google, "a.example") == ("google.com", "Google")
        # The same referrer on its own site is not a referral, cached or not.
        assert enricher._referrer(google, "google.com") == (None, None)
        assert enricher._referrer("https://blog.example.org/p", None) == (
            "blog.example.org",
            "blog.example.org",
        )
        long = "https://www.google.com/" + "q" * 600  # too long to cache
        assert enricher._referrer(long, "a.example") == ("google.com", "Google")
        assert enricher._referrer("", "a.example") == (None, None)
        assert enricher._referrer("not a url", "a.example") == (None, None)
