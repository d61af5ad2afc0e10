"""Which time zone names are accepted: the stats API's `timezone` parameter and the
`consumer.zones` command check them the same way, and say why in their own terms."""

from __future__ import annotations

import functools
import zoneinfo


class UnknownTimeZone(ValueError):
    """A name that is not an IANA time zone known to this machine; the message quotes it."""


@functools.cache
def _known_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def check_timezone(name: str) -> str:
    """`name` if it is a known IANA time zone, else raises UnknownTimeZone."""
    if name not in _known_zones():
        raise UnknownTimeZone(f"not a known IANA time zone: {name!r} (e.g. Asia/Kolkata)")
    return name
