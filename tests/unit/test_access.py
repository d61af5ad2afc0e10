"""Read keys and the token-bucket rate limit, with an injected clock."""

from __future__ import annotations

import pytest

from ingest.access import RateLimiter, ReadKeys, bearer_token
from ingest.config import ConfigError, env_site_keys
from ingest.errors import RateLimited, ReadKeyInvalid, ReadKeyRequired


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
    assert env_site_keys(env, "STATS_READ_KEYS") == {"site-a": ("k1", "k2"), "site-b": ("k3",)}
    assert env_site_keys({}, "STATS_READ_KEYS") == {}
    with pytest.raises(ConfigError):
        env_site_keys({"STATS_READ_KEYS": "site-a"}, "STATS_READ_KEYS")
