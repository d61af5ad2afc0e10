"""Optional per-site write keys: who may send events for which site.

Off by default (no keys configured: the original contract, no credentials). When
`WRITE_KEYS` (a JSON object `{"site_id": ["key", ...]}`) or `WRITE_KEYS_FILE` (a file holding
the same) is set, every ingest request must carry a key valid for each site it sends, in
`X-Write-Key`, `Authorization: Basic base64(key:)` (Segment's style), `Authorization: Bearer`,
or the `write_key` query parameter (for `navigator.sendBeacon`, which cannot set headers).
The registry is read once at start-up; keys are compared in constant time and never logged.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Iterable, Mapping
from pathlib import Path

import msgspec

from core.config import ConfigError
from ingest.errors import WriteKeyInvalid, WriteKeyRequired

_registry_decoder = msgspec.json.Decoder(dict[str, list[str]])


def load_write_keys(env: Mapping[str, str]) -> dict[str, list[str]]:
    """Reads WRITE_KEYS or WRITE_KEYS_FILE; an empty mapping means keys are not required."""
    inline = env.get("WRITE_KEYS", "").strip()
    path = env.get("WRITE_KEYS_FILE", "").strip()
    if inline and path:
        raise ConfigError("set WRITE_KEYS or WRITE_KEYS_FILE, not both")
    name, raw = "WRITE_KEYS", inline.encode()
    if path:
        name = "WRITE_KEYS_FILE"
        try:
            raw = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError(f"WRITE_KEYS_FILE {path!r} cannot be read: {exc}") from None
    if not raw:
        return {}
    try:
        keys = _registry_decoder.decode(raw)
    except msgspec.DecodeError as exc:
        # The message says where the document is wrong, never what it holds.
        raise ConfigError(
            f'{name} must be a JSON object {{"site_id": ["key", ...]}} ({exc})'
        ) from None
    if any(not key for site_keys in keys.values() for key in site_keys):
        raise ConfigError(f"{name} holds an empty key")
    return keys


def presented_key(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    """The write key a request carries, if any (header, Basic/Bearer auth, or query)."""
    key = headers.get("x-write-key")
    if key:
        return key
    auth = headers.get("authorization", "")
    scheme, _, credentials = auth.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    if scheme.lower() == "basic" and credentials.strip():
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, _, password = decoded.partition(":")
        return user or password or None
    return query.get("write_key") or None


class WriteKeys:
    """The cached registry; `check` raises WriteKeyRequired (401) or WriteKeyInvalid (403)."""

    def __init__(self, keys: Mapping[str, list[str]]) -> None:
        self._keys = {site: [k.encode() for k in site_keys] for site, site_keys in keys.items()}

    @property
    def required(self) -> bool:
        return bool(self._keys)

    def check(self, key: str | None, sites: Iterable[str]) -> None:
        """Passes if keys are off, or `key` is valid for every one of `sites`."""
        if not self._keys:
            return
        if key is None:
            raise WriteKeyRequired(
                "A write key is required (X-Write-Key header, Basic or Bearer auth, "
                "or the write_key query parameter)",
                field="write_key",
            )
        presented = key.encode()
        for site in set(sites):
            # Every configured key is compared, in constant time, so timing says nothing.
            matches = [hmac.compare_digest(k, presented) for k in self._keys.get(site, ())]
            if not any(matches):
                raise WriteKeyInvalid(
                    "The write key is not valid for one or more sites", field="site_id"
                )
