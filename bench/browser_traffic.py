"""Browser hits for `bench ingest`: what the tracker script sends to `POST /api/event`.

A few hundred distinct real-world user agents (desktop and mobile browsers across versions,
a few popular and a long tail, as in real traffic, so the enrichment caches hit and miss as
they would), public client addresses in `X-Forwarded-For` (the API trusts one proxy hop in the
bench), page URLs with UTM parameters on some hits, referrers on half, and a custom event with
properties on a tenth. Deterministic for a seed. No crawler: every hit is published.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import random
from typing import Any

SITES = 16
REFERRERS = (
    "https://www.google.com/",
    "https://www.google.com/search?q=pricing",
    "https://www.bing.com/search?q=shop",
    "https://duckduckgo.com/",
    "https://news.ycombinator.com/item?id=42",
    "https://t.co/abc123",
    "https://www.facebook.com/",
    "https://www.reddit.com/r/programming/",
    "https://chatgpt.com/",
    "https://blog.example.org/post/1",
)
CAMPAIGNS = (
    "utm_source=newsletter&utm_medium=email&utm_campaign=spring",
    "utm_source=google&utm_medium=cpc&utm_campaign=brand&utm_term=shop",
    "utm_source=twitter&utm_medium=social&utm_campaign=launch&utm_content=video",
)
PATHS = ("/", "/pricing", "/docs", "/docs/install", "/blog", "/blog/post-7", "/signup", "/about")

_WINDOWS = "Windows NT 10.0; Win64; x64"
_MAC = "Macintosh; Intel Mac OS X 10_15_7"
_LINUX = "X11; Linux x86_64"
_WEBKIT = "AppleWebKit/537.36 (KHTML, like Gecko)"
_SAFARI_WEBKIT = "AppleWebKit/605.1.15 (KHTML, like Gecko)"
_ANDROID_PHONES = ("K", "Pixel 7", "Pixel 8", "SM-S918B", "SM-A546B", "moto g power (2022)")
_ANDROID_TABLETS = ("SM-X710", "SM-X200", "Lenovo TB-X606F")


def user_agents() -> list[str]:
    """About 300 distinct user agents of real browsers, in the shapes their vendors send."""
    agents: list[str] = []
    chrome = range(100, 132)
    for v in chrome:
        agents.append(f"Mozilla/5.0 ({_WINDOWS}) {_WEBKIT} Chrome/{v}.0.0.0 Safari/537.36")
        agents.append(f"Mozilla/5.0 ({_MAC}) {_WEBKIT} Chrome/{v}.0.0.0 Safari/537.36")
        agents.append(
            f"Mozilla/5.0 ({_WINDOWS}) {_WEBKIT} Chrome/{v}.0.0.0 Safari/537.36 Edg/{v}.0.0.0"
        )
    for v in range(115, 134):
        for platform in (_WINDOWS, "Macintosh; Intel Mac OS X 10.15", _LINUX):
            agents.append(f"Mozilla/5.0 ({platform}; rv:{v}.0) Gecko/20100101 Firefox/{v}.0")
    safari = [(16, m) for m in range(7)] + [(17, m) for m in range(7)] + [(18, m) for m in range(3)]
    for major, minor in safari:
        version = f"{major}.{minor}"
        ios = f"{major}_{minor}"
        agents.append(f"Mozilla/5.0 ({_MAC}) {_SAFARI_WEBKIT} Version/{version} Safari/605.1.15")
        agents.append(
            f"Mozilla/5.0 (iPhone; CPU iPhone OS {ios} like Mac OS X) {_SAFARI_WEBKIT} "
            f"Version/{version} Mobile/15E148 Safari/604.1"
        )
        agents.append(
            f"Mozilla/5.0 (iPad; CPU OS {ios} like Mac OS X) {_SAFARI_WEBKIT} "
            f"Version/{version} Mobile/15E148 Safari/604.1"
        )
    for model, v in itertools.product(_ANDROID_PHONES, range(120, 132)):
        agents.append(
            f"Mozilla/5.0 (Linux; Android 14; {model}) {_WEBKIT} Chrome/{v}.0.0.0 "
            "Mobile Safari/537.36"
        )
    for model, v in itertools.product(_ANDROID_TABLETS, range(124, 132)):
        agents.append(
            f"Mozilla/5.0 (Linux; Android 13; {model}) {_WEBKIT} Chrome/{v}.0.0.0 Safari/537.36"
        )
    for v in range(20, 27):
        agents.append(
            f"Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S918B) {_WEBKIT} SamsungBrowser/{v}.0 "
            "Chrome/122.0.0.0 Mobile Safari/537.36"
        )
    return agents


def _public_address(rng: random.Random) -> str:
    while True:
        if rng.random() < 0.8:
            address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv4Address(
                rng.getrandbits(32)
            )
        else:  # in 2000::/3, the global unicast block
            address = ipaddress.IPv6Address((0x2 << 125) | rng.getrandbits(125))
        if address.is_global:
            return str(address)


def hits(count: int, seed: int = 13) -> tuple[list[str], list[dict[str, str]]]:
    """`count` hit bodies and, for each, its user agent and forwarded address; user agents
    and addresses Zipf-like (a few frequent, a long tail)."""
    rng = random.Random(seed)
    agents = user_agents()
    rng.shuffle(agents)
    agent_weights = list(itertools.accumulate(1 / (k + 1) for k in range(len(agents))))
    addresses = [_public_address(rng) for _ in range(max(1, count // 2))]
    address_weights = list(itertools.accumulate(1 / (k + 1) for k in range(len(addresses))))
    bodies: list[str] = []
    headers: list[dict[str, str]] = []
    for i in range(count):
        site = f"site-{i % SITES}"
        url = f"https://{site}.example{rng.choice(PATHS)}"
        if rng.random() < 0.3:
            url += "?" + rng.choice(CAMPAIGNS)
        body: dict[str, Any] = {
            "n": "pageview",
            "u": url,
            "d": site,
            "r": rng.choice(REFERRERS) if rng.random() < 0.5 else None,
        }
        if rng.random() < 0.1:
            body["n"] = "signup"
            body["p"] = {"plan": rng.choice(("free", "pro", "team")), "step": str(i % 5)}
        bodies.append(json.dumps(body))
        headers.append(
            {
                "user-agent": rng.choices(agents, cum_weights=agent_weights)[0],
                "x-forwarded-for": rng.choices(addresses, cum_weights=address_weights)[0],
            }
        )
    return bodies, headers
