"""Read keys, client addresses and the token-bucket rate limits, with an injected clock."""

from __future__ import annotations

import msgspec
import pytest

from core.config import ConfigError, parse_site_keys
from ingest.access import RateLimiter, ReadKeys, StatsAccess, bearer_token
from ingest.client_address import client_address, limit_key
from ingest.errors import RateLimited, ReadKeyInvalid, ReadKeyRequired
from ingest.settings import Settings


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bearer_token() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer  abc ") == "abc"
    assert bearer_token("Basic abc") is None
    assert bearer_token("Bearer ") is None
    assert bearer_token(None) is None


def test_sites_with_keys_require_one_of_them() -> None:
    keys = ReadKeys({"a": ("k1", "k2"), "empty": ()})
    keys.check("public", None)
    keys.check("empty", None)
    keys.check("a", "k2")
    with pytest.raises(ReadKeyRequired) as missing:
        keys.check("a", None)
    assert missing.value.headers["WWW-Authenticate"].startswith("Bearer")
    with pytest.raises(ReadKeyInvalid):
        keys.check("a", "k3")


def test_token_bucket_allows_bursts_then_refills() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2.0, 3, clock=clock)
    for _ in range(3):
        limiter.take("c")
    with pytest.raises(RateLimited) as caught:
        limiter.take("c")
    assert caught.value.headers["Retry-After"] == "1"
    limiter.take("other")  # buckets are per caller
    clock.now += 0.5  # one token back at 2/s
    limiter.take("c")
    with pytest.raises(RateLimited):
        limiter.take("c")


def test_retry_after_rounds_up_to_whole_seconds() -> None:
    clock = FakeClock()
    limiter = RateLimiter(0.1, 1, clock=clock)
    limiter.take("c")
    with pytest.raises(RateLimited) as caught:
        limiter.take("c")
    assert caught.value.headers["Retry-After"] == "10"


def test_zero_rate_turns_the_limit_off() -> None:
    limiter = RateLimiter(0, 1)
    for _ in range(100):
        limiter.take("c")


def test_idle_callers_are_forgotten_when_full() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10.0, 1, clock=clock, max_callers=2)
    limiter.take("a")
    limiter.take("b")
    clock.now += 1
    limiter.take("c")
    assert len(limiter._buckets) == 1


def test_read_keys_from_the_environment() -> None:
    env = {"STATS_READ_KEYS": "site-a=k1, site-a=k2,site-b=k3"}
    assert Settings.from_env(env).stats_read_keys == {"site-a": ("k1", "k2"), "site-b": ("k3",)}
    assert Settings.from_env({}).stats_read_keys == {}
    assert parse_site_keys(" , ", "STATS_READ_KEYS") == {}
    with pytest.raises(ConfigError, match="STATS_READ_KEYS"):
        Settings.from_env({"STATS_READ_KEYS": "site-a"})


def scope(peer: str | None, *forwarded: str) -> dict[str, object]:
    return {
        "type": "http",
        "client": (peer, 5000) if peer else None,
        "headers": [(b"x-forwarded-for", value.encode()) for value in forwarded],
    }


def test_the_peer_is_the_client_unless_proxies_are_trusted() -> None:
    assert client_address(scope("10.0.0.9", "1.2.3.4"), 0) == "10.0.0.9"
    assert client_address(scope(None), 0) == "unknown"
    # One proxy: it appended the address it saw; whatever the client wrote is further left.
    assert client_address(scope("10.0.0.9", "6.6.6.6, 1.2.3.4"), 1) == "1.2.3.4"
    # Two proxies, the header split over two lines.
    assert client_address(scope("10.0.0.9", "6.6.6.6, 1.2.3.4", "10.0.0.1"), 2) == "1.2.3.4"
    assert client_address(scope("10.0.0.9", "2001:DB8::1"), 1) == "2001:db8::1"
    # Fewer hops than proxies, or not an address: nothing in the header is believed.
    assert client_address(scope("10.0.0.9", "1.2.3.4"), 2) == "10.0.0.9"
    assert client_address(scope("10.0.0.9"), 1) == "10.0.0.9"
    assert client_address(scope("10.0.0.9", "evil, not-an-ip"), 1) == "10.0.0.9"


def test_ipv6_clients_share_a_bucket_per_64() -> None:
    assert limit_key("1.2.3.4") == "1.2.3.4"
    assert (
        limit_key("2001:db8:1:2:aaaa::1")
        == limit_key("2001:db8:1:2:ffff::9")
        == ("2001:db8:1:2::/64")
    )
    assert limit_key("2001:db8:1:3::1") != limit_key("2001:db8:1:2::1")
    assert limit_key("::ffff:1.2.3.4") == "1.2.3.4"
    assert limit_key("fe80::1%eth0") == "fe80::/64"
    assert limit_key("unknown") == "unknown"


def test_require_does_not_spend_and_spend_does_not_refuse() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1.0, 2, clock=clock)
    limiter.require("c")
    limiter.spend("c")
    limiter.spend("c")
    limiter.spend("c")  # never below zero: one second refills a token
    with pytest.raises(RateLimited):
        limiter.require("c")
    clock.now += 1
    limiter.require("c")


def access(**overrides: object) -> StatsAccess:
    base: dict[str, object] = {
        "stats_read_keys": {"keyed": ("good-key",)},
        "stats_rate_limit_per_s": 0.001,
        "stats_rate_burst": 2,
        "stats_client_rate_limit_per_s": 0.001,
        "stats_client_rate_burst": 1000,
        "stats_key_failures_per_min": 0.001,
        "stats_key_failure_burst": 3,
    }
    base.update(overrides)
    return StatsAccess(msgspec.convert(base, Settings))


def test_random_tokens_neither_mint_buckets_nor_escape_the_client_limit() -> None:
    gate = access(stats_client_rate_burst=5)
    for i in range(5):
        client = gate.limit_client(scope("1.2.3.4"))
        gate.check_key(client, "public-site", f"random-{i}")
    with pytest.raises(RateLimited):
        gate.limit_client(scope("1.2.3.4"))
    assert not gate._per_key._buckets  # no token reached the per-key buckets
    gate.limit_client(scope("5.6.7.8"))  # another client has its own bucket


def test_failed_key_attempts_are_limited_per_client() -> None:
    gate = access()
    client = gate.limit_client(scope("1.2.3.4"))
    with pytest.raises(ReadKeyRequired):
        gate.check_key(client, "keyed", None)
    for i in range(2):
        with pytest.raises(ReadKeyInvalid):
            gate.check_key(client, "keyed", f"guess-{i}")
    # Three failures used the allowance: even the right key waits, but only for this client.
    with pytest.raises(RateLimited) as caught:
        gate.check_key(client, "keyed", "good-key")
    assert "failed read-key attempts" in caught.value.message
    gate.check_key(gate.limit_client(scope("5.6.7.8")), "keyed", "good-key")
    gate.check_key(client, "public-site", None)  # public sites need no key


def test_checked_keys_have_their_own_limit() -> None:
    gate = access()
    for peer in ("1.1.1.1", "2.2.2.2"):
        gate.check_key(gate.limit_client(scope(peer)), "keyed", "good-key")
    with pytest.raises(RateLimited) as caught:
        gate.check_key(gate.limit_client(scope("3.3.3.3")), "keyed", "good-key")
    assert "per read key" in caught.value.message
    assert list(gate._per_key._buckets) == ["good-key"]


def test_stats_abuse_settings_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "STATS_CLIENT_RATE_LIMIT_PER_S": "5",
            "STATS_CLIENT_RATE_BURST": "7",
            "STATS_KEY_FAILURES_PER_MIN": "3",
            "STATS_KEY_FAILURE_BURST": "4",
            "TRUSTED_PROXY_HOPS": "1",
            "STATS_STATEMENT_TIMEOUT_MS": "250",
            "STATS_LOCK_TIMEOUT_MS": "0",
        }
    )
    assert (settings.stats_client_rate_limit_per_s, settings.stats_client_rate_burst) == (5, 7)
    assert (settings.stats_key_failures_per_min, settings.stats_key_failure_burst) == (3, 4)
    assert settings.trusted_proxy_hops == 1
    assert (settings.stats_statement_timeout_ms, settings.stats_lock_timeout_ms) == (250, 0)
    default = Settings.from_env({})
    assert (default.stats_statement_timeout_ms, default.stats_lock_timeout_ms) == (5000, 1000)
    assert default.trusted_proxy_hops == 0
    # Unset, the client limit follows the per-key one (an existing STATS_RATE_LIMIT_PER_S=0
    # still turns limits off).
    follows = Settings.from_env({"STATS_RATE_LIMIT_PER_S": "0", "STATS_RATE_BURST": "9"})
    assert (follows.stats_client_rate_limit_per_s, follows.stats_client_rate_burst) == (0, 9)
    with pytest.raises(ConfigError, match="TRUSTED_PROXY_HOPS"):
        Settings.from_env({"TRUSTED_PROXY_HOPS": "-1"})
