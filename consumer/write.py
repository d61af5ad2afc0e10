"""Writing a batch to PostgreSQL in one transaction: offsets, raw rows, rollups.

The only module of the consumer that speaks to psycopg. One transaction per batch:

1. advance each partition's stored offset with a compare-and-set on the value this replica
   last saw (first, so a replica that lost the partition stops before touching any row);
2. binary `COPY` the rows into a session-local staging table;
3. insert them into `events`, skipping `event_id`s already there (client retries, redelivery);
4. update the rollups from the rows actually inserted.

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


STAGING_DDL = """
CREATE TEMP TABLE IF NOT EXISTS staging_events (
    day date, event_id uuid, site_id text, event_type text, path text, user_id text,
    event_time timestamptz, received_at timestamptz
) ON COMMIT DELETE ROWS
"""

COPY_STAGING = """
COPY staging_events (day, event_id, site_id, event_type, path, user_id, event_time, received_at)
FROM STDIN (FORMAT BINARY)
"""
COPY_TYPES = ["date", "uuid", "text", "text", "text", "text", "timestamptz", "timestamptz"]

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

# The stats API's rollups (schema.sql: daily_visitors, quarter_hour_stats, quarter_hour_paths,
# daily_details, daily_event_types, monthly_paths), as CTEs of INSERT_AND_ROLL_UP reading its
# `counts` and `page_counts`. Sketches merge with hll_union, so a batch adds to what earlier
# batches stored, and a sketch of a group is the union of the sketches of its parts.
STATS_API_ROLLUPS = """
visitors_daily AS (
    INSERT INTO daily_visitors AS v (site_id, day, visitors)
    SELECT site_id, day, hll_union_agg(users) FROM page_counts
    GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (site_id, day) DO UPDATE SET visitors = hll_union(v.visitors, EXCLUDED.visitors)
),
quarter_hours AS (
    INSERT INTO quarter_hour_stats AS q (site_id, bucket, page_views, events, visitors)
    SELECT site_id, bucket, coalesce(sum(events) FILTER (WHERE event_type = 'page_view'), 0),
           sum(events),
           coalesce(hll_union_agg(users) FILTER (WHERE event_type = 'page_view'), hll_empty())
    FROM counts GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (site_id, bucket) DO UPDATE SET
        page_views = q.page_views + EXCLUDED.page_views,
        events = q.events + EXCLUDED.events,
        visitors = hll_union(q.visitors, EXCLUDED.visitors)
),
paths_quarter_hours AS (
    INSERT INTO quarter_hour_paths AS qp (site_id, bucket, path, views, visitors)
    SELECT site_id, bucket, path, sum(events), hll_union_agg(users) FROM page_counts
    GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (site_id, bucket, path) DO UPDATE SET
        views = qp.views + EXCLUDED.views, visitors = hll_union(qp.visitors, EXCLUDED.visitors)
),
details_daily AS (
    INSERT INTO daily_details AS d (site_id, day, event_type, path, events, users)
    SELECT site_id, day, event_type, path, sum(events), hll_union_agg(users)
    FROM counts GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
    ON CONFLICT (site_id, day, event_type, path) DO UPDATE SET
        events = d.events + EXCLUDED.events, users = hll_union(d.users, EXCLUDED.users)
),
paths_monthly AS (
    INSERT INTO monthly_paths AS m (site_id, month, path, views)
    SELECT site_id, date_trunc('month', day)::date, path, sum(events)
    FROM page_counts GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (site_id, month, path) DO UPDATE SET views = m.views + EXCLUDED.views
),
event_types_daily AS (
    INSERT INTO daily_event_types AS t (site_id, day, event_type, events, users)
    SELECT site_id, day, event_type, sum(events), hll_union_agg(users)
    FROM counts GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (site_id, day, event_type) DO UPDATE SET
        events = t.events + EXCLUDED.events, users = hll_union(t.users, EXCLUDED.users)
)"""

# The rollups in each site's configured zones (schema.sql: site_zones, local_*). A 15-minute
# bucket lies inside one local day in every zone in use, so `counts` regroups exactly; a site
# with no configured zone joins no row here and costs nothing.
SITE_ZONE_ROLLUPS = """
local_counts AS MATERIALIZED (
    SELECT c.site_id, z.timezone, (c.bucket AT TIME ZONE z.timezone)::date AS day,
           c.event_type, c.path, c.events, c.users
    FROM counts c JOIN site_zones z ON z.site_id = c.site_id
),
local_daily AS (
    INSERT INTO local_daily_stats AS l (site_id, timezone, day, page_views, events, visitors)
    SELECT site_id, timezone, day,
           coalesce(sum(events) FILTER (WHERE event_type = 'page_view'), 0), sum(events),
           coalesce(hll_union_agg(users) FILTER (WHERE event_type = 'page_view'), hll_empty())
    FROM local_counts GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (site_id, timezone, day) DO UPDATE SET
        page_views = l.page_views + EXCLUDED.page_views,
        events = l.events + EXCLUDED.events,
        visitors = hll_union(l.visitors, EXCLUDED.visitors)
),
local_paths AS (
    INSERT INTO local_daily_paths AS lp (site_id, timezone, day, path, views, visitors)
    SELECT site_id, timezone, day, path, sum(events), hll_union_agg(users)
    FROM local_counts WHERE event_type = 'page_view' GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
    ON CONFLICT (site_id, timezone, day, path) DO UPDATE SET
        views = lp.views + EXCLUDED.views, visitors = hll_union(lp.visitors, EXCLUDED.visitors)
),
local_monthly AS (
    INSERT INTO local_monthly_paths AS lm (site_id, timezone, month, path, views)
    SELECT site_id, timezone, date_trunc('month', day)::date, path, sum(events)
    FROM local_counts WHERE event_type = 'page_view' GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
    ON CONFLICT (site_id, timezone, path, month) DO UPDATE SET views = lm.views + EXCLUDED.views
)"""

# Events of days already sealed into sealed_monthly_paths and sealed_monthly_event_types
# (consumer/seal.py): late events, usually none, so this costs a batch a filter over
# `counts`. Last in the statement: a seal locks these tables only, and a batch waiting for it
# holds no lock a seal needs; the batch then reads the watermark the seal committed (its
# snapshot follows its locks).
SEALED_MONTH_ROLLUPS = """
sealed AS (
    SELECT sealed_before FROM sealed_days
),
late_page_views AS (
    INSERT INTO sealed_monthly_paths AS sp (site_id, timezone, month, path, views, visitors)
    SELECT site_id, timezone, month, path, sum(events), hll_union_agg(users)
    FROM (
        SELECT site_id, 'UTC' AS timezone, date_trunc('month', day)::date AS month, path,
               events, users
        FROM page_counts WHERE day < (SELECT sealed_before FROM sealed)
        UNION ALL
        SELECT site_id, timezone, date_trunc('month', day)::date, path, events, users
        FROM local_counts
        WHERE event_type = 'page_view' AND day < (SELECT sealed_before FROM sealed)
    ) late
    GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 4, 3
    ON CONFLICT (site_id, timezone, path, month) DO UPDATE SET
        views = sp.views + EXCLUDED.views, visitors = hll_union(sp.visitors, EXCLUDED.visitors)
),
late_event_types AS (
    INSERT INTO sealed_monthly_event_types AS st (site_id, month, event_type, events, users)
    SELECT site_id, date_trunc('month', day)::date, event_type, sum(events), hll_union_agg(users)
    FROM counts WHERE day < (SELECT sealed_before FROM sealed)
    GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (site_id, month, event_type) DO UPDATE SET
        events = st.events + EXCLUDED.events, users = hll_union(st.users, EXCLUDED.users)
)"""

# One statement, so every step reads the rows the insert actually produced. The inserted rows
# are counted once at the finest grain every rollup needs, `counts` (site, day, 15 minutes,
# event type, path: events and a sketch of their users), and each rollup is a regrouping of
# those few thousand rows rather than another pass over the batch (measured: ~10 % less time
# a batch than one pass per rollup). Only the exact unique-user set reads user-level rows.
# Rollup keys are sorted so that concurrent writers lock rows in the same order (no
# deadlocks); any fixed order does, and COLLATE "C" (byte order) sorts text much faster than
# the database's linguistic collation (measured: the statement takes ~20 % less time).
INSERT_AND_ROLL_UP = """
WITH inserted AS (
    INSERT INTO events (day, event_id, site_id, event_type, path, user_id, event_time,
                        received_at)
    SELECT day, event_id, site_id, event_type, path, user_id, event_time, received_at
    FROM staging_events
    ON CONFLICT DO NOTHING
    RETURNING day, site_id, event_type, path, user_id, event_time
),
counts AS MATERIALIZED (
    SELECT site_id, day,
           date_bin('15 minutes', event_time, timestamptz '2000-01-01 00:00+00') AS bucket,
           event_type, path, count(*) AS events, hll_add_agg(hll_hash_text(user_id)) AS users
    FROM inserted GROUP BY 1, 2, 3, 4, 5
),
page_counts AS (
    SELECT site_id, day, bucket, path, events, users FROM counts WHERE event_type = 'page_view'
),
new_users AS (
    INSERT INTO daily_users (site_id, day, user_id)
    SELECT site_id, day, user_id FROM inserted WHERE event_type = 'page_view' GROUP BY 1, 2, 3
    ORDER BY site_id COLLATE "C", day, user_id COLLATE "C"
    ON CONFLICT DO NOTHING
    RETURNING site_id, day
),
daily AS (
    INSERT INTO daily_stats AS s (site_id, day, page_views, unique_users, events)
    SELECT site_id, day, sum(page_views), sum(unique_users), sum(events)
    FROM (
        SELECT site_id, day,
               coalesce(sum(events) FILTER (WHERE event_type = 'page_view'), 0) AS page_views,
               0 AS unique_users, sum(events) AS events
        FROM counts GROUP BY site_id, day
        UNION ALL
        SELECT site_id, day, 0, count(*), 0 FROM new_users GROUP BY site_id, day
    ) AS c
    GROUP BY site_id, day ORDER BY site_id COLLATE "C", day
    ON CONFLICT (site_id, day) DO UPDATE SET
        page_views = s.page_views + EXCLUDED.page_views,
        unique_users = s.unique_users + EXCLUDED.unique_users,
        events = s.events + EXCLUDED.events
),
paths AS (
    INSERT INTO daily_paths AS p (site_id, day, path, views)
    SELECT site_id, day, path, sum(events) FROM page_counts
    GROUP BY site_id, day, path ORDER BY site_id COLLATE "C", day, path COLLATE "C"
    ON CONFLICT (site_id, day, path) DO UPDATE SET views = p.views + EXCLUDED.views
),
hourly AS (
    INSERT INTO hourly_stats AS h (site_id, hour, page_views, events, visitors)
    SELECT site_id, date_trunc('hour', bucket, 'UTC') AS hour,
           coalesce(sum(events) FILTER (WHERE event_type = 'page_view'), 0), sum(events),
           coalesce(hll_union_agg(users) FILTER (WHERE event_type = 'page_view'), hll_empty())
    FROM counts GROUP BY 1, 2 ORDER BY site_id COLLATE "C", 2
    ON CONFLICT (site_id, hour) DO UPDATE SET
        page_views = h.page_views + EXCLUDED.page_views,
        events = h.events + EXCLUDED.events,
        visitors = hll_union(h.visitors, EXCLUDED.visitors)
),
{STATS_API_ROLLUPS},
{SITE_ZONE_ROLLUPS},
{SEALED_MONTH_ROLLUPS}
SELECT count(*) FROM inserted
"""
for _name, _ctes in [
    ("{STATS_API_ROLLUPS}", STATS_API_ROLLUPS),
    ("{SITE_ZONE_ROLLUPS}", SITE_ZONE_ROLLUPS),
    ("{SEALED_MONTH_ROLLUPS}", SEALED_MONTH_ROLLUPS),
]:
    INSERT_AND_ROLL_UP = INSERT_AND_ROLL_UP.replace(_name, _ctes.strip("\n"))

ENSURE_PARTITION = "SELECT ensure_events_partition(%s)"

# Empties the staging table between the probes of one transaction (a successful probe keeps
# its rows there until commit otherwise).
CLEAR_STAGING = "TRUNCATE staging_events"


class Writer:
    """Owns one PostgreSQL connection; reconnects on the next call after losing it."""

    def __init__(self, database_url: str, group_id: str, topic: str) -> None:
        self._database_url = database_url
        self._group_id = group_id
        self._topic = topic
        self._conn: psycopg.AsyncConnection[TupleRow] | None = None
        self._known_days: set[dt.date] = set()

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
        cannot be reached; in every error case nothing was stored.
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
        refuses to create (class 22/23: e.g. a day retention dropped) rejects that day's rows;
        the other rows are bisected in savepoints of one transaction until the refused ones
        are single rows. `dead_letter` is awaited with the rejected rows before the commit
        that skips them; if it raises, nothing is stored. Raises Fenced or
        DatabaseUnavailable as `write` does (nothing stored); the caller retries the whole
        batch later, which may dead-letter the same rows again.
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
                    if fault_of(exc) is not Fault.DATA:
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
            async with cur.copy(COPY_STAGING) as copy:
                copy.set_types(COPY_TYPES)
                for row in rows:
                    await copy.write_row(row)
            await cur.execute(INSERT_AND_ROLL_UP)
            result = await cur.fetchone()
            return int(result[0]) if result else 0

    async def _ensure_partitions(
        self, conn: psycopg.AsyncConnection[TupleRow], days: set[dt.date]
    ) -> None:
        for day in sorted(days - self._known_days):
            # Outside the batch's transaction: DDL would hold a lock on `events` until commit.
            await conn.execute(ENSURE_PARTITION, (day,))
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
