"""Who the client is: the address rate limits are kept by (the stats API now; ingest may
reuse it).

The client is the connection's peer, unless the API runs behind proxies that append to
`X-Forwarded-For`: `TRUSTED_PROXY_HOPS=N` says how many. The client is then the N-th address
from the right of the header, the one the outermost trusted proxy saw connect; entries left
of it were written by whoever sent the request and are never believed. When the header holds
fewer entries, or that entry is not an IP address, the peer is the client (the request did
not come through every proxy, so nothing in the header can be trusted).

Rate limits count IPv6 clients per /64 network (limit_key): a subscriber is usually given a
whole /64, so a limit per address would give one host billions of fresh buckets.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence
from typing import Final

from starlette.types import Scope

UNKNOWN = "unknown"
IPV6_LIMIT_PREFIX = 64
# Forwarded addresses normalized, remembered in a bounded LRU: a visitor sends several hits
# from one address, and parsing it was a visible share of the browser route's CPU. A flood
# of distinct addresses evicts entries; it cannot grow memory.
CACHED_ADDRESSES: Final = 8192


def client_address(scope: Scope, trusted_proxy_hops: int) -> str:
    """The client's address as text (or "unknown" when the server gives no peer)."""
    if trusted_proxy_hops <= 0:
        peer = scope.get("client")
        return peer[0] if peer else UNKNOWN
    forwarded = [value for name, value in scope["headers"] if name == b"x-forwarded-for"]
    return client_of(scope, forwarded, trusted_proxy_hops)


def client_of(scope: Scope, forwarded: Sequence[bytes], trusted_proxy_hops: int) -> str:
    """`client_address` given the request's `X-Forwarded-For` values, in order, for a
    caller that has already read the headers."""
    if trusted_proxy_hops > 0 and forwarded:
        text = forwarded[0] if len(forwarded) == 1 else b",".join(forwarded)
        hops = [hop.strip() for hop in text.decode("latin-1").split(",") if hop.strip()]
        if len(hops) >= trusted_proxy_hops:
            address = _normalized(hops[-trusted_proxy_hops])
            if address is not None:
                return address
    peer = scope.get("client")
    return peer[0] if peer else UNKNOWN


@functools.lru_cache(maxsize=CACHED_ADDRESSES)
def _normalized(candidate: str) -> str | None:
    """The address in its canonical text form, or None when it is not an IP address."""
    if len(candidate) > 64:  # longer than any address's text (a scope id included)
        return None
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return None


def limit_key(address: str) -> str:
    """The rate-limit bucket of `address`: itself for IPv4, its /64 for IPv6 (an IPv4 address
    mapped into IPv6 counts as the IPv4 one)."""
    if ":" not in address:
        return address
    try:
        ip = ipaddress.IPv6Address(address.split("%", 1)[0])
    except ValueError:
        return address
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    network = ipaddress.IPv6Network((ip, IPV6_LIMIT_PREFIX), strict=False)
    return str(network)
