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

import ipaddress

from starlette.types import Scope

UNKNOWN = "unknown"
IPV6_LIMIT_PREFIX = 64


def client_address(scope: Scope, trusted_proxy_hops: int) -> str:
    """The client's address as text (or "unknown" when the server gives no peer)."""
    peer = scope.get("client")
    address = peer[0] if peer else UNKNOWN
    if trusted_proxy_hops <= 0:
        return address
    forwarded = [
        value.decode("latin-1") for name, value in scope["headers"] if name == b"x-forwarded-for"
    ]
    hops = [hop.strip() for hop in ",".join(forwarded).split(",") if hop.strip()]
    if len(hops) < trusted_proxy_hops:
        return address
    candidate = hops[-trusted_proxy_hops]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return address


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
