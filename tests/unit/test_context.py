"""A hit's derived context (ingest/context.py): real user agents, real addresses from the
registries' ranges, a CDN header, an operator's .mmdb file, UTM parameters, referrers, and
hostile inputs that must get an answer, never an exception."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from core.config import ConfigError
from ingest.context import KNOWN_BROWSERS, KNOWN_OSES, MAX_UTM_BYTES, OTHER, Derived, Enricher
from tests.unit.test_bots import BROWSERS


@pytest.fixture(scope="module")
def enricher() -> Enricher:
    return Enricher.from_settings({})


def derive(
    enricher: Enricher,
    *,
    user_agent: str | None = None,
    client_address: str | None = None,
    url: str | None = None,
    referrer: str | None = None,
    country_header: str | None = None,
) -> Derived:
    return enricher.derive(
        user_agent=user_agent,
        client_address=client_address,
        url=url,
        referrer=referrer,
        country_header=country_header,
    )


# label -> (browser, OS, device type)
DEVICES = {
    "chrome-windows": ("Chrome", "Windows", "desktop"),
    "chrome-mac": ("Chrome", "Mac OS X", "desktop"),
    "chrome-os": ("Chrome", "Chrome OS", "desktop"),
    "firefox-windows": ("Firefox", "Windows", "desktop"),
    "firefox-ubuntu": ("Firefox", "Ubuntu", "desktop"),
    "safari-mac": ("Safari", "Mac OS X", "desktop"),
    "edge-windows": ("Edge", "Windows", "desktop"),
    "opera-windows": ("Opera", "Windows", "desktop"),
    "yandex-windows": ("Yandex Browser", "Windows", "desktop"),
    "safari-iphone": ("Mobile Safari", "iOS", "mobile"),
    "chrome-iphone": ("Chrome Mobile iOS", "iOS", "mobile"),
    "safari-ipad": ("Mobile Safari", "iOS", "tablet"),
    "firefox-ipad": ("Firefox iOS", "iOS", "tablet"),
    "chrome-pixel": ("Chrome Mobile", "Android", "mobile"),
    "chrome-android-reduced": ("Chrome Mobile", "Android", "mobile"),
    "chrome-galaxy-tab": ("Chrome", "Android", "tablet"),
    "samsung-internet-phone": ("Samsung Internet", "Android", "mobile"),
    "samsung-internet-tab": ("Samsung Internet", "Android", "tablet"),
    "firefox-android": ("Firefox Mobile", "Android", "mobile"),
    "firefox-android-tablet": ("Firefox Mobile", "Android", "tablet"),
    "edge-android": ("Edge Mobile", "Android", "mobile"),
    "silk-kindle": ("Amazon Silk", "Android", "tablet"),
    "instagram-in-app": ("Instagram", "iOS", "mobile"),
    "facebook-in-app": ("Facebook", "iOS", "mobile"),
    "line-in-app": ("LINE", "iOS", "mobile"),
}


@pytest.mark.parametrize("label", sorted(DEVICES))
def test_browser_os_and_device_of_real_user_agents(enricher: Enricher, label: str) -> None:
    found = derive(enricher, user_agent=BROWSERS[label])
    assert (found.browser, found.os, found.device) == DEVICES[label]


def test_every_family_of_the_real_user_agents_is_a_known_one() -> None:
    browsers = {browser for browser, _, _ in DEVICES.values()}
    oses = {os_family for _, os_family, _ in DEVICES.values()}
    assert browsers <= KNOWN_BROWSERS and oses <= KNOWN_OSES


# ua-parser copies these tokens into the family: any text a client sends would be a name.
CRAFTED = {
    "app token before CFNetwork": (
        "VISIT-evil.test-0001/1.0 CFNetwork/1335.0.3 Darwin/21.6.0",
        (OTHER, "iOS", "mobile"),
    ),
    "HbbTV brand as the OS": ("HbbTV/1.5.1 (+DRM; Zzevilos ; model 2019 )", (OTHER, OTHER, None)),
    "unrecognized": ("not a user agent at all", (None, None, None)),
}


@pytest.mark.parametrize("label", sorted(CRAFTED))
def test_families_outside_the_known_ones_are_other(enricher: Enricher, label: str) -> None:
    user_agent, expected = CRAFTED[label]
    found = derive(enricher, user_agent=user_agent)
    assert (found.browser, found.os, found.device) == expected


def test_a_flood_of_crafted_families_gives_one_name(enricher: Enricher) -> None:
    names = set()
    for number in range(200):
        app = derive(enricher, user_agent=f"spam-{number:04d}/1.0 CFNetwork/1335.0.3 Darwin/21.6.0")
        tv = derive(enricher, user_agent=f"HbbTV/1.5.1 (+DRM; Spam{'x' * (number % 40)} ; m 2019 )")
        names |= {app.browser, tv.browser, tv.os}
    assert names == {OTHER}


def test_every_browser_of_the_bot_table_has_a_device_here() -> None:
    assert set(DEVICES) == set(BROWSERS)


@pytest.mark.parametrize(
    ("user_agent", "expected"),
    [
        (None, (None, None, None)),
        ("", (None, None, None)),
        # (a crawler's hit is dropped before Kafka; were it not, its name is no browser's)
        ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
         (OTHER, None, None)),
        ("something else entirely", (None, None, None)),
        ("Mozilla/5.0 (SMART-TV; Linux; Tizen 6.0) AppleWebKit/537.36 (KHTML, like Gecko) "
         "SamsungBrowser/4.0 Chrome/76.0.3809.146 TV Safari/537.36",
         ("Samsung Internet", "Tizen", None)),
    ],
)  # fmt: skip
def test_unknown_crawler_and_tv_user_agents_have_no_device_type(
    enricher: Enricher, user_agent: str | None, expected: tuple[str | None, ...]
) -> None:
    found = derive(enricher, user_agent=user_agent)
    assert (found.browser, found.os, found.device) == expected


# Addresses from the registries' own ranges and well-known resolvers.
COUNTRIES = {
    "8.8.8.8": "US",
    "9.9.9.9": "US",
    "193.0.6.139": "NL",
    "202.12.29.205": "AU",
    "77.88.8.8": "RU",
    "200.160.2.3": "BR",
    "2001:4860:4860::8888": "US",
    "2001:67c:2e8:22::c100:68b": "NL",
    "2a02:6b8::feed:0ff": "RU",
    # IPv4-mapped IPv6, as a dual-stack socket reports IPv4 clients
    "::ffff:193.0.6.139": "NL",
    "::ffff:808:808": "US",
    " 8.8.8.8 ": "US",
}
NO_COUNTRY = [
    None,
    "",
    "10.0.0.1",
    "192.168.1.20",
    "172.16.0.1",
    "127.0.0.1",
    "100.64.0.1",  # carrier-grade NAT
    "169.254.1.1",
    "::1",
    "fe80::1%eth0",
    "fd00::1",
    "::ffff:10.0.0.1",
    "::ffff:127.0.0.1",
    "0.0.0.0",
    "192.0.2.1",  # documentation
    "8.8.8.8:443",
    "not an address",
    "1" * 10_000,
    "8.8.8.8\x00",
]


@pytest.mark.parametrize("address", sorted(COUNTRIES))
def test_country_from_the_bundled_registry_data(enricher: Enricher, address: str) -> None:
    assert derive(enricher, client_address=address).country == COUNTRIES[address]


@pytest.mark.parametrize("address", NO_COUNTRY)
def test_private_loopback_and_invalid_addresses_have_no_country(
    enricher: Enricher, address: str | None
) -> None:
    assert derive(enricher, client_address=address).country is None


def test_the_cdn_header_wins_when_set_and_valid() -> None:
    enricher = Enricher.from_settings({"COUNTRY_HEADER": "CF-IPCountry"})
    assert enricher.country_header == "cf-ipcountry"
    assert derive(enricher, client_address="8.8.8.8", country_header="de").country == "DE"
    assert derive(enricher, client_address=None, country_header=" FR ").country == "FR"
    # The CDN says it does not know (or it is Tor): unknown, whatever the address says.
    for unknown in ("XX", "T1", "t1"):
        assert derive(enricher, client_address="8.8.8.8", country_header=unknown).country is None
    # Absent or malformed: the address decides.
    for bad in (None, "", "USA", "1A", "ü1", "D\x00"):
        assert derive(enricher, client_address="8.8.8.8", country_header=bad).country == "US"


def test_the_cdn_header_is_ignored_unless_configured(enricher: Enricher) -> None:
    assert enricher.country_header is None
    assert derive(enricher, client_address="8.8.8.8", country_header="DE").country == "US"


def test_a_country_header_setting_must_be_a_header_name() -> None:
    with pytest.raises(ConfigError, match="COUNTRY_HEADER must be a header name"):
        Enricher.from_settings({"COUNTRY_HEADER": "CF IPCountry:"})


def test_a_missing_geoip_database_stops_start_up_naming_the_setting(tmp_path: Path) -> None:
    missing = tmp_path / "GeoLite2-Country.mmdb"
    with pytest.raises(ConfigError, match=r"GEOIP_DATABASE: cannot open .*GeoLite2-Country"):
        Enricher.from_settings({"GEOIP_DATABASE": str(missing)})
    garbage = tmp_path / "garbage.mmdb"
    garbage.write_bytes(b"not a database" * 100)
    with pytest.raises(ConfigError, match=r"GEOIP_DATABASE: .* is not a MaxMind DB"):
        Enricher.from_settings({"GEOIP_DATABASE": str(garbage)})
    with pytest.raises(ConfigError, match="GEOIP_DATABASE"):
        Enricher.from_settings({"GEOIP_DATABASE": str(tmp_path)})


def test_an_operators_database_answers_instead_of_the_bundled_data(tmp_path: Path) -> None:
    # A one-network IPv4 database: 193.0.0.0/8 in "DE" (the registry data says NL).
    path = tmp_path / "country.mmdb"
    path.write_bytes(_one_network_mmdb(prefix=193, prefix_bits=8, iso_code="DE"))
    enricher = Enricher.from_settings({"GEOIP_DATABASE": str(path)})
    assert derive(enricher, client_address="193.0.6.139").country == "DE"
    assert derive(enricher, client_address="::ffff:193.0.6.139").country == "DE"
    assert derive(enricher, client_address="8.8.8.8").country is None  # not in the file
    # An IPv6 address cannot be looked up in an IPv4-only file: unknown, not an error.
    assert derive(enricher, client_address="2001:4860:4860::8888").country is None
    assert derive(enricher, client_address="10.0.0.1").country is None


def _one_network_mmdb(*, prefix: int, prefix_bits: int, iso_code: str) -> bytes:
    """A MaxMind DB file (format 2.0, IPv4 tree, 24-bit records) holding one network whose
    record is {"country": {"iso_code": iso_code}}: a search tree of one node per prefix bit,
    the 16-byte separator, the data section, then the metadata after its marker."""
    node_count = prefix_bits
    tree = b""
    for depth in range(prefix_bits):
        bit = (prefix >> (prefix_bits - 1 - depth)) & 1
        # The prefix's branch leads to the next node, or to the record (data offset 0) at
        # the last bit; the other branch to "no data" (node_count).
        onward = depth + 1 if depth + 1 < prefix_bits else node_count + 16
        left, right = (onward, node_count) if bit == 0 else (node_count, onward)
        tree += left.to_bytes(3, "big") + right.to_bytes(3, "big")
    data = _map({"country": _map({"iso_code": _text(iso_code)})})
    metadata = _map(
        {
            "binary_format_major_version": _unsigned(5, 2),
            "binary_format_minor_version": _unsigned(5, 0),
            "build_epoch": _uint64(1_700_000_000),
            "database_type": _text("Test-Country"),
            "description": _map({"en": _text("one network")}),
            "ip_version": _unsigned(5, 4),
            "languages": bytes([1, 4]) + _text("en"),  # an array (extended type 11) of one
            "node_count": _unsigned(6, node_count),
            "record_size": _unsigned(5, 24),
        }
    )
    return tree + bytes(16) + data + b"\xab\xcd\xefMaxMind.com" + metadata


def _text(value: str) -> bytes:
    encoded = value.encode()
    assert len(encoded) < 29
    return bytes([2 << 5 | len(encoded)]) + encoded


def _map(entries: dict[str, bytes]) -> bytes:
    assert len(entries) < 29
    return bytes([7 << 5 | len(entries)]) + b"".join(
        _text(key) + value for key, value in entries.items()
    )


def _unsigned(kind: int, value: int) -> bytes:
    payload = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return bytes([kind << 5 | len(payload)]) + payload


def _uint64(value: int) -> bytes:
    payload = struct.pack(">Q", value).lstrip(b"\x00")
    return bytes([len(payload), 9 - 7]) + payload  # extended type 9


# (page URL, expected UTM values in order source, medium, campaign, content, term)
UTM_CASES = [
    ("https://example.com/?utm_source=newsletter&utm_medium=email&utm_campaign=spring"
     "&utm_content=banner&utm_term=running+shoes",
     ("newsletter", "email", "spring", "banner", "running shoes")),
    ("https://example.com/p?utm_source=%20News%20Letter%20&utm_medium=",
     ("News Letter",) + (None,) * 4),
    ("https://example.com/p?utm_source=a&utm_source=b", ("a",) + (None,) * 4),
    ("https://example.com/p?utm_source=&utm_source=b", ("b",) + (None,) * 4),
    ("https://example.com/p?utm_source=caf%C3%A9&utm_term=%E2%9C%93",
     ("café", None, None, None, "✓")),
    ("https://example.com/p?utm_source=%00%01x%7F", ("x",) + (None,) * 4),
    ("https://example.com/p?utm_source=%ZZbad%", ("%ZZbad%",) + (None,) * 4),
    ("https://example.com/p?UTM_SOURCE=x&utm_sourcex=y", (None,) * 5),
    ("https://example.com/p#utm_source=fragment", (None,) * 5),
    ("https://example.com/p", (None,) * 5),
    ("not a url?utm_source=x", (None,) * 5),
    ("ftp://example.com/?utm_source=x", (None,) * 5),
    (None, (None,) * 5),
]  # fmt: skip


@pytest.mark.parametrize(("url", "expected"), UTM_CASES)
def test_utm_parameters_from_the_page_url(
    enricher: Enricher, url: str | None, expected: tuple[str | None, ...]
) -> None:
    found = derive(enricher, url=url)
    assert (
        found.utm_source,
        found.utm_medium,
        found.utm_campaign,
        found.utm_content,
        found.utm_term,
    ) == expected


def test_utm_values_are_cut_to_their_byte_limit_on_a_character_boundary(
    enricher: Enricher,
) -> None:
    ascii_value = derive(enricher, url="https://e.com/?utm_campaign=" + "a" * 1000).utm_campaign
    assert ascii_value == "a" * MAX_UTM_BYTES
    multi = derive(enricher, url="https://e.com/?utm_campaign=" + "%E2%82%AC" * 200).utm_campaign
    assert multi is not None
    assert multi == "€" * (MAX_UTM_BYTES // 3)  # 3 bytes each, none split
    assert len(multi.encode()) <= MAX_UTM_BYTES


# (referrer, page URL, referrer host, source)
REFERRERS = [
    ("https://www.google.com/search?q=shoes", "https://shop.example/", "google.com", "Google"),
    ("https://www.google.co.uk/", "https://shop.example/", "google.co.uk", "Google"),
    ("https://www.bing.com/images/search?q=x", "https://shop.example/", "bing.com", "Bing Images"),
    ("https://duckduckgo.com/", None, "duckduckgo.com", "DuckDuckGo"),
    ("https://old.reddit.com/r/python/", None, "old.reddit.com", "Reddit"),
    ("https://t.co/abc", None, "t.co", "Twitter"),
    ("https://l.facebook.com/l.php?u=x", None, "l.facebook.com", "Facebook"),
    ("https://news.ycombinator.com/item?id=1", None, "news.ycombinator.com", "Hacker News"),
    ("https://chatgpt.com/", None, "chatgpt.com", "ChatGPT"),
    ("https://www.perplexity.ai/search/x", None, "perplexity.ai", "Perplexity"),
    ("https://gemini.google.com/app", None, "gemini.google.com", "Gemini"),
    ("https://claude.ai/chat/1", None, "claude.ai", "Claude"),
    ("HTTPS://Blog.Example.ORG.:8443/post", None, "blog.example.org", "blog.example.org"),
    ("https://other.example/", "https://www.shop.example/", "other.example", "other.example"),
    # the page's own host: an internal navigation, no referrer
    ("https://www.shop.example/cart", "https://shop.example/checkout", None, None),
    ("https://shop.example/", "https://shop.example/?utm_source=x", None, None),
    # not an http(s) URL, or not a URL
    ("android-app://com.google.android.gm/", None, None, None),
    ("http://[::1", None, None, None),
    ("https://example.com:99999/", None, "example.com", "example.com"),  # the host is sound
    ("not a url", None, None, None),
    ("", None, None, None),
    (None, None, None, None),
]


@pytest.mark.parametrize(("referrer", "url", "host", "source"), REFERRERS)
def test_referrer_host_and_source(
    enricher: Enricher, referrer: str | None, url: str | None, host: str | None, source: str | None
) -> None:
    found = derive(enricher, referrer=referrer, url=url)
    assert (found.referrer_host, found.referrer_source) == (host, source)


def test_what_is_derived_holds_no_address_and_no_user_agent(enricher: Enricher) -> None:
    found = derive(
        enricher,
        user_agent=BROWSERS["chrome-pixel"],
        client_address="193.0.6.139",
        url="https://shop.example/?utm_source=news",
        referrer="https://www.google.com/",
    )
    assert found == Derived(
        browser="Chrome Mobile",
        os="Android",
        device="mobile",
        country="NL",
        referrer_host="google.com",
        referrer_source="Google",
        utm_source="news",
    )


HOSTILE = [
    "x" * 1_000_000,
    "https://e.com/?" + "&".join(f"utm_source{i}=v" for i in range(10_000)),
    "https://e.com/?" + "&".join("utm_term=" for _ in range(10_000)) + "&utm_term=last",
    "https://e.com/?" + "utm_campaign=" + "%" * 100_000,
    "https://" + "a." * 5_000 + "com/",
    "https://" + "é" * 300 + ".com/",
    "https://e\x00.com/",
    "https://\u202e\u200b.com/?utm_source=\u202etxt",
    "https://[fe80::1%25eth0]/",
    "https://user:pass@e.com:0/",
    "http://" + "[" * 1000,
    "\\\\server\\share",
    "https:" + "/" * 10_000,
    "https://e.com/" + "\U0001f600" * 10_000,
]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_inputs_get_an_answer_never_an_exception(enricher: Enricher, value: str) -> None:
    found = derive(
        enricher,
        user_agent=value,
        client_address=value,
        url=value,
        referrer=value,
        country_header=value,
    )
    for field in found.__struct_fields__:
        text = getattr(found, field)
        assert text is None or (text.isprintable() and len(text.encode()) <= 256), field


def test_a_flood_of_distinct_user_agents_keeps_the_cache_bounded(enricher: Enricher) -> None:
    for number in range(5000):
        derive(enricher, user_agent=f"{BROWSERS['chrome-windows']} {number}")
    assert enricher._describe.cache_info().currsize <= enricher._describe.cache_info().maxsize
