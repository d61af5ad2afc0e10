"""The cookieless visitor id of the browser route.

A visitor is a keyed BLAKE2b hash (16 bytes, in hex) of the site, the client's address and
its user agent, keyed by the salt of the UTC day the hit was received on (ingest/salts.py).
The same browser on the same network is then one visitor per site and per day; the next day,
or on another site, it is another one, and once the day's salt is deleted nobody, the operator
included, can tell which address and browser an id stood for.
"""

from __future__ import annotations

import hashlib

VISITOR_ID_BYTES = 16


def visitor_id(salt: bytes, site_id: str, client_address: str, user_agent: str) -> str:
    """The visitor's id under `salt` (32 hex digits)."""
    # Each part with its length first, so that no two different triples hash the same bytes;
    # hashed in one update (the digest of the concatenation is that of the parts in turn).
    parts: list[bytes] = []
    for part in (site_id, client_address, user_agent):
        data = part.encode("utf-8", "surrogatepass")
        parts.append(len(data).to_bytes(4, "big"))
        parts.append(data)
    return hashlib.blake2b(b"".join(parts), key=salt, digest_size=VISITOR_ID_BYTES).hexdigest()
