"""Summarizing the new block ranges of the BRIN index on `events (event_time)`, through
which stats questions read the raw events of a range's edges
(docs/decisions/0001-brin-index-on-events.md).

PostgreSQL's `autosummarize` asks autovacuum to summarize each range once inserts have filled
it, but holds at most 256 such requests, for the whole server, between autovacuum's visits
(one a minute by default). Past that it refuses each one with a LOG line that carries the whole
statement, the batch statement of about 20 kB: a replica storing a few thousand events a
second, or draining a backlog, writes hundreds of MB of server log an hour, and the refused
ranges stay unsummarized (read by every edge query) until the partition is next vacuumed.
So each day's index has `autosummarize` off (ensure_events_partition, migration 0021; a pass
turns it off on the days made before, once they are over), and every replica runs this
pass instead: each partition that grew since the last pass has its new ranges summarized.

    python -m consumer.brin_ranges   # summarize every day's new ranges, then exit
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from psycopg import sql

from consumer.errors import describe, sqlstate_of
from consumer.settings import ConsumerSettings, settings_for_command
from core.config import without_password
from core.logs import configure_logging

log = logging.getLogger(__name__)
T = TypeVar("T")

# Ranges written since the last pass are read whole by an edge query until then; at 10,000
# events/s that is some 30 MB of the current day's newest rows (the bench's events fill a
# 16-page range every 680 or so), which a query of today reads anyway.
SUMMARIZE_INTERVAL_S = 15.0
# A pass gives way rather than queue. Each day is locked NOWAIT first (SHARE UPDATE
# EXCLUSIVE, which inserts and questions do not wait for): a lock request that waited as long
# as deadlock_timeout would cancel an autovacuum of that day. The index's lock (the same mode,
# taken by the summary) and an earlier day's ALTER INDEX (ACCESS EXCLUSIVE on the index,
# which inserts into that day and questions planned on it wait behind) wait at most 100 ms,
# and under half of deadlock_timeout (at least 1 ms: 0 would be no limit).
SET_LOCK_TIMEOUT = """
SELECT set_config('lock_timeout',
                  greatest(1, least(100, (SELECT setting::int FROM pg_settings
                                          WHERE name = 'deadlock_timeout') / 2))::text, false)
"""
# One replica's pass at a time: two would only wait for each other's locks.
PASS_LOCK = "SELECT pg_try_advisory_lock(hashtext('events brin summaries'))"
PASS_UNLOCK = "SELECT pg_advisory_unlock(hashtext('events brin summaries'))"
# Each day's partition (its oid and name), its part of events_time if that is a BRIN index,
# whether that still has autosummarize on (days made before migration 0021), and whether the
# day is before today (UTC); newest first: retention drops the oldest, so a first pass over
# many days meets it last. Read from the catalogs alone, locking no day.
DAYS = """
SELECT t.oid, t.oid::regclass::text, i.oid::regclass::text,
       EXISTS (SELECT 1 FROM pg_options_to_table(i.reloptions) AS o
               WHERE o.option_name = 'autosummarize' AND o.option_value::bool),
       right(t.relname, 8) < to_char(now() AT TIME ZONE 'UTC', 'YYYYMMDD')
FROM pg_inherits AS ht
JOIN pg_class AS t ON t.oid = ht.inhrelid
JOIN pg_index AS x ON x.indrelid = t.oid
JOIN pg_inherits AS hi
    ON hi.inhrelid = x.indexrelid AND hi.inhparent = to_regclass('events_time')
JOIN pg_class AS i ON i.oid = x.indexrelid
JOIN pg_am AS a ON a.oid = i.relam AND a.amname = 'brin'
WHERE ht.inhparent = 'events'::regclass
ORDER BY t.relname DESC
"""
LOCK_DAY = "LOCK TABLE {} IN SHARE UPDATE EXCLUSIVE MODE NOWAIT"
DAY_SIZE = "SELECT pg_relation_size(%s::regclass)"
SUMMARIZE = "SELECT brin_summarize_new_values(%s::regclass)"
AUTOSUMMARIZE_OFF = "ALTER INDEX {} SET (autosummarize = off)"


@dataclass
class Pass:
    """What one pass did: ranges summarized, days whose new ranges it summarized, days it left
    for the next pass (locked by someone else, or dropped meanwhile), earlier days' indexes
    whose autosummarize it turned off, and days it could not summarize for another reason
    (logged as a warning)."""

    ranges: int = 0
    days: int = 0
    left: int = 0
    turned_off: int = 0
    failed: int = 0


class RangeSummarizer:
    """Remembers the size of each partition at its last summary, so that a pass summarizes
    only the partitions that grew (on its first pass, all of them)."""

    def __init__(self) -> None:
        # partition oid -> its size at its last summary (by oid: a day dropped and made again
        # under its name is another table)
        self._sizes: dict[int, int] = {}
        # (partition oid, step) -> the SQLSTATE of its last failure, said once until it
        # changes or the step succeeds
        self._failures: dict[tuple[int, str], str] = {}

    async def summarize(self, conn: psycopg.AsyncConnection[Any]) -> Pass | None:
        """One pass on `conn` (autocommit); None when another replica's pass was running."""
        await conn.execute(SET_LOCK_TIMEOUT)
        locked = await (await conn.execute(PASS_LOCK)).fetchone()
        if not locked or not locked[0]:
            return None
        try:
            done = Pass()
            days = await (await conn.execute(DAYS)).fetchall()
            for oid, table, index, autosummarize, past in days:
                summary = self._summarize_day(conn, oid, table, index, done)
                quiet = await self._attempt(conn, (oid, f"{table}'s new ranges"), done, summary)
                # A day made before migration 0021 has autosummarize on. Turning it off locks
                # the index (ACCESS EXCLUSIVE), which inserts into that day wait behind: only
                # on a day before today (UTC) that did not grow since this replica's last
                # pass, so not on the day being written (today keeps it until it ends).
                if autosummarize and past and quiet:
                    alter = conn.execute(sql.SQL(AUTOSUMMARIZE_OFF).format(_name(index)))
                    step = (oid, f"{index}'s autosummarize")
                    if await self._attempt(conn, step, done, alter) is not None:
                        done.turned_off += 1
            present = {oid for oid, *_ in days}
            for gone in self._sizes.keys() - present:
                del self._sizes[gone]
            for key in [key for key in self._failures if key[0] not in present]:
                del self._failures[key]
            return done
        finally:
            if not conn.broken:
                await conn.execute(PASS_UNLOCK)

    async def _summarize_day(
        self, conn: psycopg.AsyncConnection[Any], oid: int, table: str, index: str, done: Pass
    ) -> bool:
        """Summarizes the day's new ranges if it grew; returns whether it had not."""
        async with conn.transaction():
            await conn.execute(sql.SQL(LOCK_DAY).format(_name(table)))
            row = await (await conn.execute(DAY_SIZE, (table,))).fetchone()
            size = int(row[0]) if row else 0
            if self._sizes.get(oid) == size:
                return True
            row = await (await conn.execute(SUMMARIZE, (index,))).fetchone()
        done.ranges += int(row[0]) if row else 0
        done.days += 1
        self._sizes[oid] = size
        return False

    async def _attempt(
        self,
        conn: psycopg.AsyncConnection[Any],
        step_key: tuple[int, str],
        done: Pass,
        step: Awaitable[T],
    ) -> T | None:
        """Awaits one day's step; None if it failed. A day someone else holds, or dropped
        meanwhile, is left for the next pass; any other error is said, once until it changes
        (a day the replica's role does not own, a statement timeout...); a lost connection
        ends the pass."""
        try:
            result = await step
        except (psycopg.errors.LockNotAvailable, psycopg.errors.UndefinedTable):
            if conn.broken:
                raise
            done.left += 1
            return None
        except psycopg.Error as exc:
            if conn.broken:
                raise
            done.failed += 1
            sqlstate = sqlstate_of(exc) or "?"
            if self._failures.get(step_key) != sqlstate:
                self._failures[step_key] = sqlstate
                log.warning(
                    "BRIN summaries: %s failed (%s %s); said once, retried every pass",
                    step_key[1],
                    sqlstate,
                    describe(exc),
                )
            return None
        self._failures.pop(step_key, None)
        return result


def _name(regclass_text: str) -> sql.Composable:
    """A relation's name as regclass prints it (quoted where needed), back into SQL."""
    return sql.SQL(regclass_text)


async def summarize_new_ranges_periodically(settings: ConsumerSettings) -> None:
    """Runs until cancelled; failures are logged and retried at the next pass."""
    summarizer = RangeSummarizer()
    while True:
        try:
            async with await _connect(settings) as conn:
                done = await summarizer.summarize(conn)
            if done is None:
                log.debug("BRIN ranges: another replica's pass is running")
            elif done.ranges or done.left or done.turned_off or done.failed:
                log.debug("BRIN ranges: %s", done)
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


async def _connect(settings: ConsumerSettings) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(
        settings.database_url, autocommit=True, connect_timeout=10
    )


def main() -> int:
    configure_logging("brin_ranges")
    settings = settings_for_command("brin_ranges")
    if settings is None:
        return 2

    async def twice() -> tuple[Pass | None, Pass | None]:
        """Two passes: the second turns autosummarize off on the earlier days that did not
        grow in between (a replica does it on its second pass too)."""
        summarizer = RangeSummarizer()
        async with await _connect(settings) as conn:
            first = await summarizer.summarize(conn)
            second = await summarizer.summarize(conn) if first is not None else None
        return first, second

    try:
        first, second = asyncio.run(twice())
    except psycopg.Error as exc:
        reason = without_password(str(exc), settings.database_url)
        print(f"brin_ranges: {reason}; is PostgreSQL up (make up)?", file=sys.stderr)
        return 1
    if first is None:
        print("brin_ranges: a replica's pass is running; nothing to do", file=sys.stderr)
        return 0
    last = second or first
    print(
        f"brin_ranges: {first.ranges + (second.ranges if second else 0)} new ranges summarized"
        f" (days that grew: {first.days})"
        + (
            f"; autosummarize turned off on {last.turned_off} earlier days"
            if last.turned_off
            else ""
        )
        + (f"; {last.left} days held by others, left to the replicas" if last.left else "")
        + (f"; {last.failed} days failed (said above)" if last.failed else "")
    )
    return 1 if last.failed else 0


if __name__ == "__main__":
    sys.exit(main())
