"""Summarizing the new block ranges of the BRIN index on `events (event_time)`, through
which stats questions read the raw events of a range's edges
(docs/decisions/0001-brin-index-on-events.md).

PostgreSQL's `autosummarize` asks autovacuum to summarize each range once inserts have filled
it, but holds at most 256 such requests per database between autovacuum's visits (one a
minute by default). Past that it refuses each one with a LOG line that carries the whole
statement, the batch statement of several kB: a replica storing a few thousand events a
second, or draining a backlog, writes hundreds of MB of server log an hour, and the refused
ranges stay unsummarized (read by every edge query) until the partition is next vacuumed.
So each day's index has `autosummarize` off (ensure_events_partition, migration 0021), and
every replica runs this pass instead: each partition that grew since the last pass has its
new ranges summarized.

    python -m consumer.brin_ranges   # one pass over every partition, then exit
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

import psycopg

from consumer.settings import ConsumerSettings, settings_for_command
from core.config import without_password
from core.logs import configure_logging

log = logging.getLogger(__name__)

# Ranges written since the last pass are read whole by an edge query until then; at 10,000
# events/s that is some 40 MB of the current day's newest rows, which a query of today reads
# anyway.
SUMMARIZE_INTERVAL_S = 15.0
# A pass gives way rather than queue: autovacuum, retention or another replica's pass may
# hold a partition (summarizing takes SHARE UPDATE EXCLUSIVE, which inserts do not wait for).
LOCK_TIMEOUT = "1s"
# One replica's pass at a time: two would only wait for each other's locks.
PASS_LOCK = "SELECT pg_try_advisory_lock(hashtext('events brin summaries'))"
PASS_UNLOCK = "SELECT pg_advisory_unlock(hashtext('events brin summaries'))"
# Each day's partition, its BRIN index (the partition of events_time) and its size in bytes.
PARTITIONS = """
SELECT t.relid::regclass::text, i.indexrelid::regclass::text, pg_relation_size(t.relid)
FROM pg_partition_tree('events') AS t
JOIN pg_index AS i ON i.indrelid = t.relid
JOIN pg_inherits AS h ON h.inhrelid = i.indexrelid AND h.inhparent = 'events_time'::regclass
WHERE t.isleaf
ORDER BY 1
"""
SUMMARIZE = "SELECT brin_summarize_new_values(%s::regclass)"


class RangeSummarizer:
    """Remembers the size of each partition at its last summary, so that a pass summarizes
    only the partitions that grew (on its first pass, all of them)."""

    def __init__(self) -> None:
        self._sizes: dict[str, int] = {}

    async def summarize(self, conn: psycopg.AsyncConnection[Any]) -> int | None:
        """One pass on `conn` (autocommit); returns the ranges summarized, or None when
        another replica's pass was running."""
        await conn.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
        locked = await (await conn.execute(PASS_LOCK)).fetchone()
        if not locked or not locked[0]:
            return None
        try:
            rows = await (await conn.execute(PARTITIONS)).fetchall()
            summarized = 0
            for table, index, size in rows:
                if self._sizes.get(table) == size:
                    continue
                try:
                    cur = await conn.execute(SUMMARIZE, (index,))
                except (psycopg.errors.LockNotAvailable, psycopg.errors.UndefinedTable):
                    continue  # held, or dropped by retention meanwhile: the next pass
                row = await cur.fetchone()
                summarized += int(row[0]) if row else 0
                self._sizes[table] = size
            present = {table for table, _, _ in rows}
            for table in self._sizes.keys() - present:
                del self._sizes[table]
            return summarized
        finally:
            await conn.execute(PASS_UNLOCK)


async def summarize_new_ranges_periodically(settings: ConsumerSettings) -> None:
    """Runs until cancelled; failures are logged and retried at the next pass."""
    summarizer = RangeSummarizer()
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(
                settings.database_url, autocommit=True
            ) as conn:
                summarized = await summarizer.summarize(conn)
            if summarized:
                log.debug("summarized %d new ranges of the events' BRIN index", summarized)
        except psycopg.Error as exc:
            reason = without_password(str(exc), settings.database_url)
            log.warning(
                "BRIN ranges not summarized (%s); next attempt in %.0fs",
                reason,
                SUMMARIZE_INTERVAL_S,
            )
        except Exception:  # a bug: say so, and keep the task alive
            log.exception("BRIN ranges not summarized; next attempt in %.0fs", SUMMARIZE_INTERVAL_S)
        await asyncio.sleep(SUMMARIZE_INTERVAL_S)


def main() -> int:
    configure_logging("brin_ranges")
    settings = settings_for_command("brin_ranges")
    if settings is None:
        return 2

    async def once() -> int | None:
        async with await psycopg.AsyncConnection.connect(
            settings.database_url, autocommit=True
        ) as conn:
            return await RangeSummarizer().summarize(conn)

    try:
        summarized = asyncio.run(once())
    except psycopg.Error as exc:
        reason = without_password(str(exc), settings.database_url)
        print(f"brin_ranges: {reason}; is PostgreSQL up (make up)?", file=sys.stderr)
        return 1
    if summarized is None:
        print("brin_ranges: another replica's pass is running; nothing done", file=sys.stderr)
        return 1
    print(f"brin_ranges: summarized {summarized} new ranges")
    return 0


if __name__ == "__main__":
    sys.exit(main())
