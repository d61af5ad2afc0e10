"""`python -m bench enrich [--calls=N] [--rounds=R]`: the per-hit cost of enrichment.

Times, in this process, `Enricher.derive` (ingest/context.py) and `bot_reason`
(ingest/bots.py) on real browser user agents, page URLs with UTM parameters, referrers and
public addresses: with the user agent in the cache (real traffic repeats a few thousand
strings) and with every user agent new (a flood of distinct ones, the worst case). The
baseline, measured in the same run, is decoding the browser route's JSON body with msgspec,
which every hit pays anyway; each row prints its ratio to it. Median of R rounds of N calls.
No services are needed.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence

import msgspec

from bench.table import print_table
from ingest import bots
from ingest.context import Enricher

USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.6778.81 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
    "SamsungBrowser/26.0 Chrome/122.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (iPad; CPU OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.6 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
)
CRAWLER = "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)"
ADDRESSES = ("8.8.8.8", "193.0.6.139", "2a02:6b8::feed:0ff", "::ffff:200.160.2.3", "10.0.0.1")
URL = "https://shop.example/pricing?utm_source=newsletter&utm_medium=email&utm_campaign=spring"
REFERRERS = ("https://www.google.com/search?q=x", "https://news.ycombinator.com/", None)
BODY = msgspec.json.encode(
    {"n": "pageview", "u": URL, "d": "shop.example", "r": REFERRERS[0], "p": {"plan": "pro"}}
)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench enrich")
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args, _ = parser.parse_known_args(argv)  # options of other sections pass through
    started = time.perf_counter()
    enricher = Enricher.from_settings({})
    engine = bots.prepare()
    setup_s = time.perf_counter() - started
    calls, rounds = args.calls, args.rounds

    def derive(user_agent: str, number: int) -> object:
        return enricher.derive(
            user_agent=user_agent,
            client_address=ADDRESSES[number % len(ADDRESSES)],
            url=URL,
            referrer=REFERRERS[number % len(REFERRERS)],
            country_header=None,
        )

    def repeated(number: int) -> str:
        return USER_AGENTS[number % len(USER_AGENTS)]

    serial = iter(range(10**12))

    def fresh(number: int) -> str:
        # A string no cache has seen: the number of calls made so far in this process.
        return f"{USER_AGENTS[number % len(USER_AGENTS)]} u{next(serial)}"

    cases: list[tuple[str, Callable[[int], object]]] = [
        ("baseline: msgspec decode of the route's body", lambda n: msgspec.json.decode(BODY)),
        ("derive(), user agent cached", lambda n: derive(repeated(n), n)),
        ("derive(), every user agent new", lambda n: derive(fresh(n), n)),
        (
            "derive(), country, UTM, referrer only",
            lambda n: enricher.derive(
                user_agent=None,
                client_address=ADDRESSES[n % len(ADDRESSES)],
                url=URL,
                referrer=REFERRERS[n % len(REFERRERS)],
                country_header=None,
            ),
        ),
        ("bot_reason(), browser cached", lambda n: bots.bot_reason(repeated(n))),
        ("bot_reason(), every browser new", lambda n: bots.bot_reason(fresh(n))),
        ("bot_reason(), every crawler new", lambda n: bots.bot_reason(f"{CRAWLER} {n}")),
    ]
    for _, case in cases:  # warm caches and lazily built state
        for number in range(len(USER_AGENTS) * 3):
            case(number)
    per_call = {name: _median_us(case, calls, rounds) for name, case in cases}
    baseline = per_call[cases[0][0]]
    rows: Sequence[Sequence[object]] = [
        (name, f"{micros:.2f}", f"{micros / baseline:.1f}") for name, micros in per_call.items()
    ]
    print_table(
        f"Enrichment, per call (median of {rounds} rounds of {calls:,} calls; crawler list on "
        f"{engine}; rules and data loaded in {setup_s:.2f} s)",
        ["case", "µs/call", "ratio to baseline"],
        rows,
    )


def _median_us(case: Callable[[int], object], calls: int, rounds: int) -> float:
    timings = []
    for _ in range(rounds):
        started = time.perf_counter()
        for number in range(calls):
            case(number)
        timings.append((time.perf_counter() - started) / calls * 1e6)
    return statistics.median(timings)
