"""Who may read stats: optional per-site read keys (Bearer) and a per-caller rate limit.

A site with keys configured answers only requests carrying one of its keys; a site without
keys is public. Keys are compared in constant time. The rate limit is a token bucket per
caller (the presented key, else the client address), refilled continuously.
"""

from __future__ import annotations

import hmac
import math
import time
from collections.abc import Callable, Mapping

from ingest.errors import RateLimited, ReadKeyInvalid, ReadKeyRequired


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

    def check(self, site_id: str, token: str | None) -> None:
        """Returns if the site is public or `token` is one of its keys; raises otherwise."""
        keys = self._keys.get(site_id)
        if keys is None:
            return
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


class RateLimiter:
    """Token buckets: `rate_per_s` requests a second per caller, bursts up to `burst`.

    A rate of 0 disables the limit. At most `max_callers` buckets are kept; when full, the
    buckets that have refilled completely (idle callers) are dropped.
    """

    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_callers: int = 10_000,
    ) -> None:
        self._rate = rate_per_s
        self._burst = float(max(burst, 1))
        self._clock = clock
        self._max_callers = max_callers
        self._buckets: dict[str, tuple[float, float]] = {}  # caller -> (tokens, at)

    def take(self, caller: str) -> None:
        """Spends one token of `caller`'s bucket, or raises RateLimited."""
        if self._rate <= 0:
            return
        now = self._clock()
        tokens, at = self._buckets.get(caller, (self._burst, now))
        tokens = min(self._burst, tokens + (now - at) * self._rate)
        if tokens < 1:
            self._buckets[caller] = (tokens, now)
            retry_after_s = max(1, math.ceil((1 - tokens) / self._rate))
            raise RateLimited(
                f"rate limit of {self._rate:g} stats requests/s exceeded; retry later",
                retry_after_s=retry_after_s,
            )
        if caller not in self._buckets and len(self._buckets) >= self._max_callers:
            self._evict_idle(now)
        self._buckets[caller] = (tokens - 1, now)

    def _evict_idle(self, now: float) -> None:
        full_after_s = self._burst / self._rate
        idle = [c for c, (_, at) in self._buckets.items() if now - at >= full_after_s]
        for caller in idle or list(self._buckets)[: len(self._buckets) // 2]:
            del self._buckets[caller]
