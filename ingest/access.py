"""Who may read stats: optional per-site read keys (Bearer) and rate limits.

A site with keys configured answers only requests carrying one of its keys; a site without
keys is public. Keys are compared in constant time.

Rate limits are token buckets, refilled continuously, applied in this order (StatsAccess):
1. per client address (ingest/client_address.py), before anything else is looked at;
2. failed key attempts per client address: once they are used up, requests for sites with
   keys get 429 before the key is even compared, so keys cannot be guessed faster;
3. per read key, once the key is checked: only real keys get a bucket, so presented tokens
   can neither mint buckets nor push real callers' buckets out.
"""

from __future__ import annotations

import hmac
import math
import time
from collections.abc import Callable, Mapping

from starlette.types import Scope

from ingest.client_address import client_address, limit_key
from ingest.errors import RateLimited, ReadKeyInvalid, ReadKeyRequired
from ingest.settings import Settings


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class ReadKeys:
    """The read keys of each site that has any (site_id -> keys)."""

    def __init__(self, keys: Mapping[str, tuple[str, ...]]) -> None:
        self._keys = {site: tuple(k.encode() for k in ks) for site, ks in keys.items() if ks}

    def requires_key(self, site_id: str) -> bool:
        return site_id in self._keys

    def check(self, site_id: str, token: str | None) -> bool:
        """True if `token` is one of the site's keys, False if the site is public; raises
        ReadKeyRequired or ReadKeyInvalid otherwise."""
        keys = self._keys.get(site_id)
        if keys is None:
            return False
        if token is None:
            raise ReadKeyRequired(
                f"site {site_id!r} requires a read key: send `Authorization: Bearer <key>`"
            )
        presented = token.encode()
        # Compare with every key (no early exit), so timing does not tell which one matched.
        matched = False
        for key in keys:
            matched |= hmac.compare_digest(presented, key)
        if not matched:
            raise ReadKeyInvalid(f"this read key is not valid for site {site_id!r}")
        return True


class RateLimiter:
    """Token buckets: `rate_per_s` requests a second per caller, bursts up to `burst`.

    A rate of 0 disables the limit. At most `max_callers` buckets are kept; when full, the
    buckets that have refilled completely (idle callers) are dropped, else the older half.
    A dropped bucket starts full again: churn through more callers than that loosens the
    limit for the callers dropped, it never refuses anyone more.
    """

    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_callers: int = 10_000,
        limit_text: str = "",
    ) -> None:
        self._rate = rate_per_s
        self._burst = float(max(burst, 1))
        self._clock = clock
        self._max_callers = max_callers
        self._limit_text = limit_text or f"{rate_per_s:g} stats requests/s"
        self._buckets: dict[str, tuple[float, float]] = {}  # caller -> (tokens, at)

    def take(self, caller: str) -> None:
        """Spends one token of `caller`'s bucket, or raises RateLimited."""
        self.require(caller)
        self.spend(caller)

    def require(self, caller: str) -> None:
        """Raises RateLimited if `caller`'s bucket has no whole token; spends nothing."""
        if self._rate <= 0:
            return
        tokens = self._tokens(caller, self._clock())
        if tokens < 1:
            retry_after_s = max(1, math.ceil((1 - tokens) / self._rate))
            raise RateLimited(
                f"rate limit of {self._limit_text} exceeded; retry later",
                retry_after_s=retry_after_s,
            )

    def spend(self, caller: str) -> None:
        """Spends one token of `caller`'s bucket (never below zero), without refusing."""
        if self._rate <= 0:
            return
        now = self._clock()
        tokens = self._tokens(caller, now)
        if caller not in self._buckets and len(self._buckets) >= self._max_callers:
            self._evict_idle(now)
        self._buckets[caller] = (max(0.0, tokens - 1), now)

    def _tokens(self, caller: str, now: float) -> float:
        tokens, at = self._buckets.get(caller, (self._burst, now))
        return min(self._burst, tokens + (now - at) * self._rate)

    def _evict_idle(self, now: float) -> None:
        full_after_s = self._burst / self._rate
        idle = [c for c, (_, at) in self._buckets.items() if now - at >= full_after_s]
        for caller in idle or list(self._buckets)[: len(self._buckets) // 2]:
            del self._buckets[caller]


class StatsAccess:
    """The stats routes' admission: rate limits and read keys, in the order of the module's
    docstring."""

    def __init__(self, settings: Settings) -> None:
        self._keys = ReadKeys(settings.stats_read_keys)
        self._hops = settings.trusted_proxy_hops
        self._per_client = RateLimiter(
            settings.stats_client_rate_limit_per_s,
            settings.stats_client_rate_burst,
            limit_text=f"{settings.stats_client_rate_limit_per_s:g} stats requests/s per client",
        )
        self._failures = RateLimiter(
            settings.stats_key_failures_per_min / 60,
            settings.stats_key_failure_burst,
            limit_text=f"{settings.stats_key_failures_per_min:g} failed read-key attempts a "
            "minute per client",
        )
        # One bucket per configured key at most: only checked keys reach it.
        self._per_key = RateLimiter(
            settings.stats_rate_limit_per_s,
            settings.stats_rate_burst,
            limit_text=f"{settings.stats_rate_limit_per_s:g} stats requests/s per read key",
        )

    def limit_client(self, scope: Scope) -> str:
        """Spends a token of the client's bucket (raising RateLimited when there is none);
        returns the client's bucket name, for check_key."""
        client = limit_key(client_address(scope, self._hops))
        self._per_client.take(client)
        return client

    def check_key(self, client: str, site_id: str, token: str | None) -> None:
        """Admits the request for `site_id`, or raises: RateLimited (the client's failed
        attempts, or the key's requests, are used up), ReadKeyRequired or ReadKeyInvalid
        (counted as a failed attempt of the client)."""
        if not self._keys.requires_key(site_id):
            return
        self._failures.require(client)
        try:
            self._keys.check(site_id, token)
        except (ReadKeyRequired, ReadKeyInvalid):
            self._failures.spend(client)
            raise
        assert token is not None  # checked
        self._per_key.take(token)
