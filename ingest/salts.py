"""The daily visitor salts of the browser route: one random 32-byte salt per UTC day, the same
on every API replica, kept in PostgreSQL only sealed, and deleted 48 hours after its day began.

A salt is sealed with AES-256-GCM under VISITOR_KEY (a key only the API processes hold), with
the day as associated data: PostgreSQL holds nothing a reader of the database could hash
addresses with, a sealed salt moved to another day does not open, and a replica started with
another key finds out (the tag does not verify) instead of silently computing other ids.

The API keeps today's and tomorrow's salts in memory. A background task (SaltKeeper.run,
every VISITOR_SALT_REFRESH_S) inserts a fresh salt for each of the two days unless one is
there (`ON CONFLICT DO NOTHING`: replicas racing each other all read back the one that won),
loads them, and deletes the salts of the days before yesterday. Because tomorrow's salt is
loaded a day ahead, ingest keeps working through a PostgreSQL outage of up to a day. The
keeper has a connection of its own (ingest/database.py, make_salt_pool): stats questions
holding every pooled connection cannot keep it from refreshing.

Every row carries the key's fingerprint (an HMAC-SHA256 of a constant under VISITOR_KEY,
which tells nothing of the key). The insert only happens while no stored row has another
fingerprint, in the same statement, so a replica started with another key never decides a
day's salt; it finds the difference, logs it once (naming VISITOR_KEY), and holds
`mismatch`, which the browser route and /readyz answer 503 `visitor_key_mismatch` with.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import os
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from psycopg_pool import AsyncConnectionPool, PoolTimeout

log = logging.getLogger(__name__)

SALT_BYTES = 32
RETRY_WITHOUT_SALT_S = 5.0
NONCE_BYTES = 12  # AES-GCM's standard nonce; random, so a key can seal ~2^32 salts safely

# Nothing is inserted while a row sealed under another key is stored: the first key to seal
# a salt is the one every replica must hold (deleting the rows resets it).
INSERT = """
INSERT INTO visitor_salts (day, sealed, key_fingerprint)
SELECT fresh.day, fresh.sealed, %(fingerprint)s
FROM (VALUES (%(today)s::date, %(today_sealed)s::bytea),
             (%(tomorrow)s::date, %(tomorrow_sealed)s::bytea)) AS fresh (day, sealed)
WHERE NOT EXISTS (SELECT FROM visitor_salts WHERE key_fingerprint <> %(fingerprint)s)
ON CONFLICT (day) DO NOTHING
"""
# Every row (a few: older ones are deleted), so a row of another key is seen whatever its day.
SELECT = "SELECT day, sealed, key_fingerprint FROM visitor_salts"
# A day's salt goes once the day after it has ended too: 48 hours after its day began.
DELETE_OLD = "DELETE FROM visitor_salts WHERE day < %s"


class VisitorKeyMismatch(Exception):
    """A sealed salt does not open under this process's VISITOR_KEY."""


def decode_key(visitor_key: str) -> bytes:
    """The raw key of a VISITOR_KEY already checked by core.settings (base64 of 32 bytes)."""
    return base64.b64decode(visitor_key, validate=True)


# What the fingerprint is an HMAC of: any constant would do; this one names its purpose.
FINGERPRINT_MESSAGE = b"analytics visitor key fingerprint v1"


def key_fingerprint(key: bytes) -> bytes:
    """Tells keys apart without telling anything of them: HMAC-SHA256(key, a constant)."""
    return hmac.new(key, FINGERPRINT_MESSAGE, hashlib.sha256).digest()


def _another_key() -> VisitorKeyMismatch:
    return VisitorKeyMismatch(
        "the visitor salts stored in PostgreSQL were sealed with another VISITOR_KEY than "
        "this process's (their key fingerprints differ): give every API replica the same "
        "VISITOR_KEY (the one the others run with); this replica inserts no salt, refuses "
        "browser hits and fails /readyz until then. If the key was replaced on purpose, "
        "delete the rows of visitor_salts, and new salts are made within a minute (today's "
        "visitors are then counted again)"
    )


def seal(key: bytes, day: date, salt: bytes) -> bytes:
    """`salt` encrypted and authenticated under `key`, bound to `day`: nonce + ciphertext."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, salt, day.isoformat().encode())


def unseal(key: bytes, day: date, sealed: bytes) -> bytes:
    """The salt sealed for `day`; raises VisitorKeyMismatch if `key` did not seal it (or the
    bytes were altered, or were sealed for another day)."""
    nonce, ciphertext = sealed[:NONCE_BYTES], sealed[NONCE_BYTES:]
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, day.isoformat().encode())
    except InvalidTag:
        raise VisitorKeyMismatch(
            f"the visitor salt of {day.isoformat()} stored in PostgreSQL was not sealed with "
            "this process's VISITOR_KEY: give every API replica the same VISITOR_KEY (the one "
            "the others run with); if the key was replaced on purpose, delete the rows of "
            "visitor_salts, and new salts are made within a minute (today's visitors are then "
            "counted again)"
        ) from None


def utc_now() -> datetime:
    return datetime.now(UTC)


class SaltKeeper:
    """Today's and tomorrow's salts, in memory, kept fresh from PostgreSQL."""

    def __init__(
        self,
        key: bytes,
        *,
        clock: Callable[[], datetime] = utc_now,
        refresh_s: float = 60.0,
        timeout_s: float = 5.0,
    ) -> None:
        self._key = key
        self._fingerprint = key_fingerprint(key)
        self._clock = clock
        self._refresh_s = refresh_s
        self._timeout_s = timeout_s
        self._salts: dict[date, bytes] = {}
        self.mismatch: VisitorKeyMismatch | None = None  # the last refresh's, if any

    def salt_for(self, day: date) -> bytes | None:
        """The salt of `day`, if it is in memory (today's and tomorrow's are, once loaded)."""
        return self._salts.get(day)

    @property
    def days(self) -> list[date]:
        return sorted(self._salts)

    async def refresh(self, pool: AsyncConnectionPool[Any]) -> None:
        """Makes sure today's and tomorrow's salts exist (unless a row of another key is
        stored), loads them, and deletes older ones; waits for one pooled connection and
        three statements, at most `timeout_s` in all. Raises on failure (psycopg.Error,
        PoolTimeout, TimeoutError, VisitorKeyMismatch), keeping what is already in memory."""
        today = self._clock().astimezone(UTC).date()
        tomorrow = today + timedelta(days=1)
        fresh = {
            "fingerprint": self._fingerprint,
            "today": today,
            "today_sealed": seal(self._key, today, os.urandom(SALT_BYTES)),
            "tomorrow": tomorrow,
            "tomorrow_sealed": seal(self._key, tomorrow, os.urandom(SALT_BYTES)),
        }
        async with asyncio.timeout(self._timeout_s), pool.connection() as conn:
            await conn.execute(INSERT, fresh)
            cursor = await conn.execute(SELECT)
            rows = await cursor.fetchall()
            ours = all(bytes(fingerprint) == self._fingerprint for _, _, fingerprint in rows)
            if ours:  # a replica with another key changes nothing
                await conn.execute(DELETE_OLD, (today - timedelta(days=1),))
        loaded: dict[date, bytes] = {}
        try:
            if not ours:
                raise _another_key()
            for day, sealed, _ in rows:
                if day in (today, tomorrow):
                    loaded[day] = unseal(self._key, day, bytes(sealed))
        except VisitorKeyMismatch as exc:
            self.mismatch = exc
            raise
        self.mismatch = None
        # Days before today are never asked for again (ids use the day of receipt).
        self._salts = {d: s for d, s in self._salts.items() if d >= today} | loaded

    async def run(self, pool: AsyncConnectionPool[Any]) -> None:
        """Refreshes every `refresh_s` until cancelled (the first refresh is the caller's);
        each failure is logged in one line (never with a salt or the key) and retried at the
        next turn, within RETRY_WITHOUT_SALT_S while no salt for today is held."""
        while True:
            today = self._clock().astimezone(UTC).date()
            wait_s = self._refresh_s
            if self.salt_for(today) is None:
                wait_s = min(wait_s, RETRY_WITHOUT_SALT_S)
            await asyncio.sleep(wait_s)
            await self.refresh_logged(pool)

    async def refresh_logged(self, pool: AsyncConnectionPool[Any]) -> bool:
        """One refresh; False (and one log line) if it failed. A key mismatch is logged when
        it is found, and again once it is gone, not at every turn."""
        mismatched = self.mismatch is not None
        try:
            await self.refresh(pool)
        except VisitorKeyMismatch as exc:
            if not mismatched:
                log.error("browser route: %s", exc)
        except (psycopg.Error, PoolTimeout, TimeoutError) as exc:
            held = ", ".join(d.isoformat() for d in self.days) or "none"
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            log.warning(
                "visitor salts not refreshed (%s: %s); salts in memory for: %s",
                type(exc).__name__,
                reason,
                held,
            )
        except Exception:  # a bug: say so, and try again next turn
            log.exception("visitor salts not refreshed")
        else:
            if mismatched:
                log.warning("browser route: VISITOR_KEY matches the stored visitor salts again")
            return True
        return False
