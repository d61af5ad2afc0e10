"""Storing a batch's visits, inside the batch's transaction (consumer/write.py calls it right
after the batch statement).

The batch statement keeps the rows it actually inserted in `visit_events` (replays and
duplicate ids never get there). This reads them with the stored visits they can reach,
places them (consumer/sessions.py, pure), copies the visits made or changed into
`visit_changes`, and one statement (consumer/rollups: `visit_statement`) stores them with
the visit rollups' deltas. The `visits` table is the only state: nothing is kept in memory
between batches, so a replica taking over a partition continues its open visits.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg

from consumer.rollups import visit_statement
from consumer.rollups.statements import statement
from consumer.sessions import ORIGIN_FIELDS, sessionize

_ORIGIN_COLUMNS = ", ".join(f"{name} text" for name in ORIGIN_FIELDS)
# Session-local tables, emptied at each commit (and by each isolation probe, CLEAR_STAGING).
VISIT_DDL = f"""
CREATE TEMP TABLE IF NOT EXISTS visit_events (
    site_id text, visitor text, event_time timestamptz, event_id uuid, page_view boolean,
    path text, {_ORIGIN_COLUMNS}
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS visit_changes (
    site_id text, visitor text, stored_started_at timestamptz, started_at timestamptz,
    last_at timestamptz, entry_page text, exit_page text, {_ORIGIN_COLUMNS},
    page_views integer, events integer
) ON COMMIT DELETE ROWS
"""
VISIT_TABLES = ("visit_events", "visit_changes")

COPY_CHANGES = f"""
COPY visit_changes (site_id, visitor, stored_started_at, started_at, last_at, entry_page,
                    exit_page, {", ".join(ORIGIN_FIELDS)}, page_views, events)
FROM STDIN (FORMAT BINARY)
"""
CHANGE_TYPES = [
    "text", "text", "timestamptz", "timestamptz", "timestamptz", "text", "text",
    *["text"] * len(ORIGIN_FIELDS), "int4", "int4",
]  # fmt: skip

# Retention deletes old visits under SHARE ROW EXCLUSIVE: taken before the visits are read,
# this keeps it from deleting one between the read and the write (it waits for the batch).
LOCK_VISITS = "LOCK TABLE visits IN ROW EXCLUSIVE MODE"
LOAD_EVENTS = statement("visits.load_events")
LOAD_STORED = statement("visits.load_stored")
STORE_VISITS = visit_statement()


async def store_visits(cur: psycopg.AsyncCursor[Any], visit_timeout: dt.timedelta) -> int:
    """Places the events in `visit_events` in visits and stores them with the visit rollups,
    in the cursor's transaction (which holds the partitions' offsets rows, so no other writer
    touches these visitors meanwhile). Waits for each statement; returns the number of
    visits made or changed."""
    await cur.execute(LOAD_EVENTS)
    events = await cur.fetchall()
    if not events:
        return 0
    await cur.execute(LOCK_VISITS)
    await cur.execute(LOAD_STORED, {"timeout_s": visit_timeout.total_seconds()})
    stored = await cur.fetchall()
    changes = sessionize(events, stored, visit_timeout)
    async with cur.copy(COPY_CHANGES) as copy:
        copy.set_types(CHANGE_TYPES)
        for change in changes:
            visit = change.visit
            await copy.write_row(
                (
                    change.site_id,
                    change.visitor,
                    change.stored_started_at,
                    visit.started_at,
                    visit.last_at,
                    visit.entry_page,
                    visit.exit_page,
                    *visit.origin,
                    visit.page_views,
                    visit.events,
                )
            )
    await cur.execute(STORE_VISITS)
    row = await cur.fetchone()
    return int(row[0]) if row else 0
