"""Storing a batch's visits, inside the batch's transaction (consumer/write.py calls it right
after the batch statement).

The batch statement keeps the rows it actually inserted in `visit_events` (replays and
duplicate ids never get there). One statement places the visitors whose events come after
their latest stored visit (a plain sessionization, in SQL) into `visit_changes`; the few with
a late event are read with the stored visits they can reach, placed by consumer/sessions.py
(pure) and copied there too; then one statement (consumer/rollups: `visit_statement`) stores
them with the visit rollups' deltas, each changed visit's row as stored travelling with it.

The `visits` table is the only state: nothing is kept in memory between batches, so a
replica taking over a partition continues its open visits.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg

from consumer.rollups import ROLLUPS, visit_statement
from consumer.rollups.statements import statement
from consumer.sessions import ORIGIN_FIELDS, Change, Visit, sessionize
from core.settings import VISIT_VALUES_PER_DAY

_ORIGIN_COLUMNS = ", ".join(f"{name} text" for name in ORIGIN_FIELDS)
_WAS_ORIGIN_COLUMNS = ", ".join(f"was_{name} text" for name in ORIGIN_FIELDS)
# Session-local tables, emptied at each commit (and by each isolation probe, CLEAR_STAGING).
VISIT_DDL = f"""
CREATE TEMP TABLE IF NOT EXISTS visit_events (
    site_id text, visitor text, event_time timestamptz, event_id uuid, page_view boolean,
    path text, {_ORIGIN_COLUMNS}
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS visit_changes (
    site_id text, visitor text, stored_started_at timestamptz, started_at timestamptz,
    last_at timestamptz, entry_page text, exit_page text, {_ORIGIN_COLUMNS},
    page_views integer, events integer,
    was_last_at timestamptz, was_entry_page text, was_exit_page text, {_WAS_ORIGIN_COLUMNS},
    was_page_views integer, was_events integer
) ON COMMIT DELETE ROWS
"""
VISIT_TABLES = ("visit_events", "visit_changes")

COPY_CHANGES = f"""
COPY visit_changes (site_id, visitor, stored_started_at, started_at, last_at, entry_page,
                    exit_page, {", ".join(ORIGIN_FIELDS)}, page_views, events, was_last_at,
                    was_entry_page, was_exit_page, {", ".join("was_" + f for f in ORIGIN_FIELDS)},
                    was_page_views, was_events)
FROM STDIN (FORMAT BINARY)
"""
_STATE_TYPES = ["timestamptz", "text", "text", *["text"] * len(ORIGIN_FIELDS), "int4", "int4"]
CHANGE_TYPES = ["text", "text", "timestamptz", "timestamptz", *_STATE_TYPES, *_STATE_TYPES]

# Retention deletes old visits under SHARE ROW EXCLUSIVE: taken before the visits are read,
# this keeps it from deleting one between the read and the write (it waits for the batch).
# The visit rollups are locked with it, in the registry's order, the mode the visit
# statement takes them in: the cap reads daily_visit_dimensions before that statement, and
# must not hold it before quarter_hour_visits.
LOCK_VISITS = "LOCK TABLE visits, {} IN ROW EXCLUSIVE MODE".format(
    ", ".join(r.table for r in ROLLUPS if r.from_visits)
)
PLACE_IN_ORDER = statement("visits.place_in_order")
LOAD_LATE_EVENTS = statement("visits.load_late_events")
LOAD_LATE_STORED = statement("visits.load_late_stored")
DELETE_MOVED = statement("visits.delete_moved")
CAP_VALUES = statement("visits.cap_values")
STORE_VISITS = visit_statement()


def _state(visit: Visit | None) -> tuple[object, ...]:
    """A visit's columns after its start in visit_changes (NULLs for none)."""
    if visit is None:
        return (None,) * len(_STATE_TYPES)
    return (
        visit.last_at,
        visit.entry_page,
        visit.exit_page,
        *visit.origin,
        visit.page_views,
        visit.events,
    )


async def store_visits(
    cur: psycopg.AsyncCursor[Any],
    visit_timeout: dt.timedelta,
    values_per_day: int = VISIT_VALUES_PER_DAY.default,
) -> int:
    """Places the events in `visit_events` in visits and stores them with the visit rollups,
    in the cursor's transaction (which holds the partitions' offsets rows, so no other writer
    touches these visitors meanwhile). Waits for each statement; returns the number of
    visits made or changed.

    Visitors whose events come in order are placed in SQL; the few with a late event are
    read, placed by consumer/sessions.py and copied back. A free-text value past
    `values_per_day` for its site, day and dimension is kept as '(other)' (visits.cap_values)."""
    timeout = {"timeout_s": visit_timeout.total_seconds()}
    await cur.execute(LOCK_VISITS)
    await cur.execute(PLACE_IN_ORDER, timeout)
    late = await cur.fetchall()
    if late:
        keys = {"sites": [k[0] for k in late], "visitors": [k[1] for k in late]}
        await cur.execute(LOAD_LATE_EVENTS, keys)
        events = await cur.fetchall()
        await cur.execute(LOAD_LATE_STORED, keys)
        stored = await cur.fetchall()
        changes = sessionize(events, stored, visit_timeout)
        await _delete_moved(cur, changes)
        async with cur.copy(COPY_CHANGES) as copy:
            copy.set_types(CHANGE_TYPES)
            for change in changes:
                was = change.was
                await copy.write_row(
                    (
                        change.site_id,
                        change.visitor,
                        None if was is None else was.started_at,
                        change.visit.started_at,
                        *_state(change.visit),
                        *_state(was),
                    )
                )
    await cur.execute(CAP_VALUES, {"cap": values_per_day})
    await cur.execute(STORE_VISITS)
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def _delete_moved(cur: psycopg.AsyncCursor[Any], changes: list[Change]) -> None:
    moved = [c for c in changes if c.was is not None and c.was.started_at != c.visit.started_at]
    if moved:
        await cur.execute(
            DELETE_MOVED,
            {
                "sites": [c.site_id for c in moved],
                "visitors": [c.visitor for c in moved],
                "starts": [c.was.started_at for c in moved if c.was is not None],
            },
        )
