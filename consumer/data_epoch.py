"""The one version every transaction that changes what the stats read, other than a consumer
batch, bumps: the stats API then computes its kept answers again (ingest/stats_answers.py;
batches bump the versions of their own sites instead, consumer/rollups/batch.sql).

Bumped as the transaction's last statement: it takes the epoch's row lock when it holds
every other lock it needs, so a transaction waiting for that row is never one this one waits
for, and two commands cannot deadlock over it.
"""

from __future__ import annotations

from typing import Any

import psycopg

BUMP_EPOCH = "UPDATE data_epoch SET epoch = epoch + 1"


async def bump_epoch(conn: psycopg.AsyncConnection[Any]) -> None:
    """Bumps the epoch in `conn`'s transaction; call it last, just before the commit."""
    await conn.execute(BUMP_EPOCH)
