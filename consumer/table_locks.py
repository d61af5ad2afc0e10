"""Operators' commands that change rollups while the consumers run (rebuild, zone changes,
seals): a READ COMMITTED connection, and a LOCK TABLE that gives up instead of queueing the
consumers' batches behind it for ever.

A batch's statement locks every table it names (ROW EXCLUSIVE) before it takes the snapshot
it runs on, and these commands lock first and read after, so each side sees what the other
committed before it: nothing is lost or counted twice. Both lock rollup tables in the one
order the registry declares (consumer/rollups), so neither waits for the other while holding
what the other waits for.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg import sql

LOCK_TIMEOUT_S = 30


def lock_rollups(tables: Iterable[str]) -> sql.Composed:
    """LOCK TABLE of rollup `tables` (a subsequence of consumer.rollups.LOCK_ORDER), in a
    mode that waits for the batches in flight and holds new ones (they take ROW EXCLUSIVE)
    until commit."""
    return sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(
        sql.SQL(", ").join(map(sql.Identifier, tables))
    )


async def connect_read_committed(database_url: str) -> psycopg.AsyncConnection[Any]:
    """A connection whose transactions are READ COMMITTED whatever the database's default:
    each statement after a lock must see the batches committed while it waited (a
    transaction-wide snapshot would not)."""
    conn = await psycopg.AsyncConnection.connect(database_url)
    await conn.set_isolation_level(psycopg.IsolationLevel.READ_COMMITTED)
    return conn


async def lock_or_give_up(
    conn: psycopg.AsyncConnection[Any], lock: sql.Composed, what: str
) -> None:
    """Runs the LOCK TABLE statement `lock`, giving up after LOCK_TIMEOUT_S: while this
    waits, every batch that arrives queues behind it. The first statement of the transaction
    (LOCK takes no snapshot), so what follows sees every batch committed before the lock was
    granted."""
    await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT_S}s'")
    try:
        await conn.execute(lock)
    except psycopg.errors.LockNotAvailable:
        raise ValueError(
            f"{what} stayed locked for {LOCK_TIMEOUT_S} s (a rebuild, a seal or a zone change "
            "is running?); try again"
        ) from None
    await conn.execute("SET LOCAL lock_timeout = 0")  # for the lock wait only
