"""Writing a batch to PostgreSQL in one transaction: offsets, raw rows, rollups.

The only module of the consumer that speaks to psycopg. One transaction per batch:

1. advance each partition's stored offset with a compare-and-set on the value this replica
   last saw (first, so a replica that lost the partition stops before touching any row);
2. binary `COPY` the rows into a session-local staging table;
3. insert them into `events`, skipping `event_id`s already there (client retries, redelivery);
4. update the rollups from the rows actually inserted;
5. place those rows in visits and store them with the visit rollups (consumer/sessions.py,
   consumer/sessions_store.py).

Either all of it is stored or none: a crash anywhere replays the batch from the stored
offsets, and the unique key and compare-and-set make the replay count nothing twice.

A batch whose rows the database refuses (consumer/errors.py decides whose fault an error is)
is written again by `write_isolating`: the same transaction, with the rows probed in
savepoints (consumer/isolation.py) so that only the refused events are left out, and the
caller's dead-lettering of them awaited before the commit that skips them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import psycopg
from psycopg.rows import TupleRow

from consumer.batch import Row
from consumer.errors import Fault, describe, fault_of, sqlstate_of
from consumer.isolation import bisect
from consumer.rollups import batch_statement
from consumer.sessions_store import VISIT_DDL, VISIT_TABLES, store_visits
from consumer.settings import ConsumerSettings
from core.events import CONTEXT_FIELDS
from core.settings import VISIT_TIMEOUT_SECONDS, VISIT_VALUES_PER_DAY

log = logging.getLogger(__name__)


class DatabaseUnavailable(Exception):
    """PostgreSQL cannot take the batch now (down, restarting, timed out): retry it later."""


class RowsRejected(Exception):
    """PostgreSQL refused the rows themselves: retrying the same rows will not help."""

    def __init__(self, reason: str, sqlstate: str | None = None) -> None:
        super().__init__(f"{reason} (SQLSTATE {sqlstate})" if sqlstate else reason)
        self.reason = reason
        self.sqlstate = sqlstate

    @classmethod
    def from_error(cls, exc: BaseException) -> RowsRejected:
        return cls(describe(exc), sqlstate_of(exc))


@dataclass(frozen=True, slots=True)
class RejectedRow:
    """A row of the batch (by index) that the database refused, and why."""

    index: int
    reason: str
    sqlstate: str | None


@dataclass(frozen=True, slots=True)
class Isolated:
    """What an isolating write stored: new rows, and the rows left out (dead-lettered)."""

    inserted: int
    rejected: list[RejectedRow]


class Fenced(Exception):
    """Another replica advanced a partition's offset: this one no longer owns it."""


# The event's columns, then its context (core/events.py, CONTEXT_FIELDS): all text but props.
_CONTEXT_TYPES = ["jsonb" if name == "props" else "text" for name in CONTEXT_FIELDS]
STAGING_DDL = (
    """
CREATE TEMP TABLE IF NOT EXISTS staging_events (
    day date, event_id uuid, site_id text, event_type text, path text, user_id text,
    event_time timestamptz, received_at timestamptz, emitter_id boolean, {context}
) ON COMMIT DELETE ROWS;
""".format(
        context=", ".join(f"{n} {t}" for n, t in zip(CONTEXT_FIELDS, _CONTEXT_TYPES, strict=True))
    )
    + VISIT_DDL
)  # the batch statement keeps its inserted rows' visit fields there

COPY_STAGING = """
COPY staging_events (day, event_id, site_id, event_type, path, user_id, event_time, received_at,
                     emitter_id, {context})
FROM STDIN (FORMAT BINARY)
""".format(context=", ".join(CONTEXT_FIELDS))
COPY_TYPES = [
    "date", "uuid", "text", "text", "text", "text", "timestamptz", "timestamptz", "bool",
    *_CONTEXT_TYPES,
]  # fmt: skip

# Inserting a missing row is allowed only when this replica saw none (expected is NULL); an
# existing row moves only from the value this replica expects. Rows come back for the
# partitions that moved: fewer than asked means another replica got there first.
ADVANCE_OFFSETS = """
WITH wanted AS (
    SELECT * FROM unnest(%(partitions)s::int[], %(next)s::bigint[], %(expected)s::bigint[])
        AS w(partition, next_offset, expected)
)
INSERT INTO consumer_offsets AS o (group_id, topic, partition, next_offset)
SELECT %(group)s, %(topic)s, partition, next_offset FROM wanted ORDER BY partition
ON CONFLICT (group_id, topic, partition) DO UPDATE
    SET next_offset = EXCLUDED.next_offset, updated_at = now()
    WHERE o.next_offset IS NOT DISTINCT FROM
        (SELECT expected FROM wanted WHERE wanted.partition = EXCLUDED.partition)
RETURNING partition
"""

LOAD_OFFSETS = """
SELECT partition, next_offset FROM consumer_offsets
WHERE group_id = %s AND topic = %s AND partition = ANY(%s)
"""

# One statement, so every rollup reads the rows the insert actually produced: the insert into
# `events`, then each rollup's upsert (its CTE, in consumer/rollups/*.sql) in the lock order
# the registry declares (consumer/rollups), which every operator's command follows too.
# Rollup keys are sorted within each upsert, so concurrent batches lock rows in one order.
INSERT_AND_ROLL_UP = batch_statement()

ENSURE_PARTITION = "SELECT ensure_events_partition(%s)"

# The batch statement's CTEs hold the inserted rows and their groupings in tuplestores that
# its many readers scan again, and the visit statements sort and group the batch's events and
# visits a few ways; at the default work_mem (4 MB) those of a few thousand events already
# spill to temporary files. Larger values changed the plans for the worse
# (docs/decisions/0036-batch-work-mem.md). Set once for the transaction, before both.
BATCH_WORK_MEM = "SET LOCAL work_mem = '16MB'"

# Empties the staging table between the probes of one transaction (a successful probe keeps
# its rows there until commit otherwise).
CLEAR_STAGING = "TRUNCATE staging_events, " + ", ".join(VISIT_TABLES)

# What psycopg raises, before the server sees a row, for a value it cannot encode.
ROW_ENCODING_ERRORS = (TypeError, ValueError, OverflowError)


def day_refused(exc: psycopg.Error) -> bool:
    """Whether ensure_events_partition refused the day itself: retention dropped it (22023,
    with its own message: the code alone is also that of other invalid parameters), or a
    DEFAULT partition already holds rows of it (23514)."""
    sqlstate = sqlstate_of(exc)
    if sqlstate == "22023":
        return "dropped by retention" in (exc.diag.message_primary or "")
    return sqlstate == "23514"


class Writer:
    """Owns one PostgreSQL connection; reconnects on the next call after losing it."""

    def __init__(
        self,
        database_url: str,
        group_id: str,
        topic: str,
        visit_timeout_s: float = VISIT_TIMEOUT_SECONDS.default,
        visit_values_per_day: int = VISIT_VALUES_PER_DAY.default,
    ) -> None:
        self._database_url = database_url
        self._group_id = group_id
        self._topic = topic
        self._visit_timeout = dt.timedelta(seconds=visit_timeout_s)
        self._visit_values_per_day = visit_values_per_day
        self._conn: psycopg.AsyncConnection[TupleRow] | None = None
        self._known_days: set[dt.date] = set()

    @classmethod
    def for_replica(cls, settings: ConsumerSettings) -> Writer:
        """The writer of a consumer replica with these settings."""
        return cls(
            settings.database_url,
            settings.group_id,
            settings.events_topic,
            settings.visit_timeout_seconds,
            settings.visit_values_per_day,
        )

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def load_offsets(self, partitions: Iterable[int]) -> dict[int, int | None]:
        """The stored next offset of each partition; None where this group stored none."""
        wanted = sorted(partitions)
        async with self._translated_errors():
            conn = await self._connection()
            cur = await conn.execute(LOAD_OFFSETS, (self._group_id, self._topic, wanted))
            stored = {int(p): int(o) for p, o in await cur.fetchall()}
        return {p: stored.get(p) for p in wanted}

    async def write(
        self,
        rows: Sequence[Row],
        next_offsets: Mapping[int, int],
        expected: Mapping[int, int | None],
    ) -> int:
        """Stores the rows, their rollups and the partitions' next offsets atomically.

        Waits for PostgreSQL's commit. Returns how many rows were new (the rest were
        duplicates). Raises Fenced if another replica moved one of the offsets (nothing is
        stored), RowsRejected if the database refuses the data, DatabaseUnavailable if it
        cannot be reached or cannot make a day's partition (other than a day it refuses,
        day_refused); in every error case nothing was stored.
        """
        async with self._translated_errors():
            conn = await self._connection()
            await self._ensure_partitions(conn, {row[0] for row in rows})
            async with conn.transaction():
                await self._advance_offsets(conn, next_offsets, expected)
                if not rows:
                    return 0
                return await self._insert(conn, rows)

    async def write_isolating(
        self,
        rows: Sequence[Row],
        next_offsets: Mapping[int, int],
        expected: Mapping[int, int | None],
        dead_letter: Callable[[list[RejectedRow]], Awaitable[None]],
    ) -> Isolated:
        """Stores every row the database accepts, with the offsets, leaving out the others.

        For a batch `write` refused with RowsRejected. A day whose partition the database
        refuses (day_refused: a day retention dropped, or rows of it in a DEFAULT partition)
        rejects that day's rows; the other rows are bisected in savepoints of one transaction
        until the refused ones are single rows. `dead_letter` is awaited with the rejected
        rows before the commit that skips them; if it raises, nothing is stored. Raises
        Fenced or DatabaseUnavailable as `write` does (nothing stored); the caller retries the
        whole batch later, which may dead-letter the same rows again.
        """
        async with self._translated_errors():
            conn = await self._connection()
            rejected: list[RejectedRow] = []
            days = {row[0] for row in rows}
            # Checked again: retention may have dropped a day this writer thinks it has.
            self._known_days -= days
            refused_days: dict[dt.date, RowsRejected] = {}
            for day in sorted(days):
                try:
                    await self._ensure_partitions(conn, {day})
                except psycopg.Error as exc:
                    if not day_refused(exc):
                        raise
                    refused_days[day] = RowsRejected.from_error(exc)
            candidates = []
            for index, row in enumerate(rows):
                if (refusal := refused_days.get(row[0])) is not None:
                    rejected.append(RejectedRow(index, refusal.reason, refusal.sqlstate))
                else:
                    candidates.append(index)
            inserted = 0

            async def probe(indices: list[int]) -> RowsRejected | None:
                nonlocal inserted
                try:
                    async with conn.transaction():  # a savepoint: a refusal leaves nothing
                        await conn.execute(CLEAR_STAGING)
                        inserted += await self._insert(conn, [rows[i] for i in indices])
                except RowsRejected as exc:
                    return exc
                except psycopg.Error as exc:
                    if fault_of(exc) is not Fault.DATA:
                        raise
                    return RowsRejected.from_error(exc)
                return None

            async with conn.transaction():
                await self._advance_offsets(conn, next_offsets, expected)
                for index, refusal in await bisect(candidates, probe):
                    rejected.append(RejectedRow(index, refusal.reason, refusal.sqlstate))
                rejected.sort(key=lambda r: r.index)
                if rejected:
                    await dead_letter(rejected)
            return Isolated(inserted, rejected)

    async def _advance_offsets(
        self,
        conn: psycopg.AsyncConnection[TupleRow],
        next_offsets: Mapping[int, int],
        expected: Mapping[int, int | None],
    ) -> None:
        partitions = sorted(next_offsets)
        cur = await conn.execute(
            ADVANCE_OFFSETS,
            {
                "partitions": partitions,
                "next": [next_offsets[p] for p in partitions],
                "expected": [expected.get(p) for p in partitions],
                "group": self._group_id,
                "topic": self._topic,
            },
        )
        moved = {int(p) for (p,) in await cur.fetchall()}
        if len(moved) != len(partitions):
            lost = sorted(set(partitions) - moved)
            raise Fenced(f"partitions {lost} were advanced by another replica")

    async def _insert(self, conn: psycopg.AsyncConnection[TupleRow], rows: Sequence[Row]) -> int:
        async with conn.cursor() as cur:
            await cur.execute(BATCH_WORK_MEM)
            try:
                async with cur.copy(COPY_STAGING) as copy:
                    copy.set_types(COPY_TYPES)
                    for row in rows:
                        await copy.write_row(row)
            except ROW_ENCODING_ERRORS as exc:
                # A value psycopg cannot encode (a record from another producer with a
                # zone-less time, say): the data's fault, isolated like a refusal.
                raise RowsRejected(f"cannot encode the event: {type(exc).__name__}: {exc}") from exc
            await cur.execute(INSERT_AND_ROLL_UP)
            result = await cur.fetchone()
            await store_visits(cur, self._visit_timeout, self._visit_values_per_day)
            return int(result[0]) if result else 0

    async def _ensure_partitions(
        self, conn: psycopg.AsyncConnection[TupleRow], days: set[dt.date]
    ) -> None:
        for day in sorted(days - self._known_days):
            # Outside the batch's transaction: DDL would hold a lock on `events` until commit.
            try:
                await conn.execute(ENSURE_PARTITION, (day,))
            except psycopg.Error as exc:
                if day_refused(exc) or fault_of(exc) is not Fault.DATA:
                    raise  # the day's events set aside (write_isolating), or a lost server
                # Any other refusal of the day's DDL (a schema it cannot copy, say) is the
                # database's: the batch waits and is retried, no event is dead-lettered.
                raise DatabaseUnavailable(
                    f"cannot make the partition of {day}: {describe(exc)}"
                    f" (SQLSTATE {sqlstate_of(exc)}); docs/operations.md, Day partitions"
                ) from exc
            self._known_days.add(day)

    async def _connection(self) -> psycopg.AsyncConnection[TupleRow]:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(
                self._database_url,
                autocommit=True,
                connect_timeout=5,
                application_name=f"analytics-consumer:{self._group_id}",
            )
            # The rollups of site zones rely on a waiting batch statement seeing what was
            # committed while it waited (consumer/zones.py): READ COMMITTED, whatever the
            # database's default isolation says.
            await self._conn.set_isolation_level(psycopg.IsolationLevel.READ_COMMITTED)
            # The batch statement is planned anew for each batch, and its cost estimate can
            # cross the JIT threshold, where compiling takes longer than running it does.
            await self._conn.execute("SET jit = off")
            await self._conn.execute(STAGING_DDL)
        return self._conn

    @contextlib.asynccontextmanager
    async def _translated_errors(self) -> AsyncIterator[None]:
        """Maps psycopg's exceptions onto the two the consumer acts on, by whose fault they
        are (consumer/errors.py)."""
        try:
            yield
        except psycopg.Error as exc:
            if fault_of(exc) is Fault.DATA:
                raise RowsRejected.from_error(exc) from exc
            # The database's (connection lost, server restarting, timeouts, a missing
            # object): retried on a new connection; the transaction was rolled back, so
            # nothing was stored.
            await self.close()
            raise DatabaseUnavailable(f"{type(exc).__name__}: {exc}") from exc
