"""The rows nearly every batch rewrites — a visit it extends, the visit rollups' rows of its
bucket and day — stay in their page without new index entries (HOT updates) only while no
index covers a column the update changes (docs/decisions/0035-visits-updated-in-place.md).
Checked against the statement itself, so that an index added later on such a column fails
here rather than quietly slowing every batch; and once for real, through pg_stat."""

from __future__ import annotations

import datetime as dt
import re

import psycopg
import pytest

from consumer.sessions_store import STORE_VISITS
from core.events import EventRecord
from tests.support import make_record, wait_for, write_batch

pytestmark = pytest.mark.postgres

# Each upsert of the visit statement: its table, and the SET list of its DO UPDATE.
_UPSERT = re.compile(
    r"INSERT INTO (?P<table>\w+) AS \w+\b.*?DO UPDATE SET(?P<sets>.*?)\n\)", re.DOTALL
)
_ASSIGNED = re.compile(r"(\w+) = ")
# Changes only when a visit's last event enters another quarter hour: not on nearly every
# extension, as last_at would.
ALLOWED = {"visits": {"last_bucket"}}

# The tables whose rows a batch rewrites whenever it extends a visit (the sealed months only
# for a late one).
REWRITTEN_BY_EVERY_BATCH = (
    "visits",
    "quarter_hour_visits",
    "quarter_hour_visit_dimensions",
    "daily_visit_dimensions",
)

INDEXED_COLUMNS = """
SELECT DISTINCT a.attname
FROM pg_index i
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum > 0
WHERE i.indrelid = %s::regclass
  AND (a.attnum = ANY(i.indkey)
       OR pg_get_expr(i.indexprs, i.indrelid) ~ ('\\m' || a.attname || '\\M')
       OR pg_get_expr(i.indpred, i.indrelid) ~ ('\\m' || a.attname || '\\M'))
"""


def updated_columns() -> dict[str, set[str]]:
    found = {
        m.group("table"): set(_ASSIGNED.findall(m.group("sets")))
        for m in _UPSERT.finditer(STORE_VISITS)
    }
    assert {"visits", "quarter_hour_visit_dimensions", "daily_visit_dimensions"} <= set(found)
    return found


def test_no_index_covers_a_column_the_visit_statement_updates(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        for table, columns in updated_columns().items():
            indexed = {row[0] for row in conn.execute(INDEXED_COLUMNS, (table,))}
            assert indexed, table
            covered = (columns & indexed) - ALLOWED.get(table, set())
            assert not covered, f"an index of {table} covers {sorted(covered)}: no HOT update"


def test_the_rewritten_tables_leave_room_in_their_pages(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        for table in REWRITTEN_BY_EVERY_BATCH:
            (options,) = conn.execute(
                "SELECT reloptions FROM pg_class WHERE oid = %s::regclass", (table,)
            ).fetchone() or (None,)
            factors = [int(o.split("=")[1]) for o in options or [] if "fillfactor=" in o]
            assert factors and factors[0] < 100, table


async def test_a_visit_extended_within_its_quarter_hour_is_updated_in_place(
    database_url: str,
) -> None:
    start = dt.datetime(2025, 11, 12, 12, 1, tzinfo=dt.UTC)

    def views(seconds: float) -> list[EventRecord]:
        at = start + dt.timedelta(seconds=seconds)
        return [
            make_record(user_id=f"u{i}", path=f"/p{seconds:.0f}", timestamp=at, received_at=at)
            for i in range(20)
        ]

    await write_batch(database_url, views(0), partition=0)
    await write_batch(database_url, views(60), partition=1)  # the same visits, a minute on

    def stats() -> tuple[int, int]:
        with psycopg.connect(database_url) as conn:
            conn.execute("SELECT pg_stat_clear_snapshot()")
            row = conn.execute(
                "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'visits'"
            ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    await wait_for(lambda: stats()[0] >= 20, timeout_s=15, what="the updates in pg_stat")
    updated, in_place = stats()
    assert updated == 20 and in_place == 20
    with psycopg.connect(database_url) as conn:
        buckets = conn.execute("SELECT DISTINCT last_bucket FROM visits").fetchall()
    assert buckets == [(dt.datetime(2025, 11, 12, 12, 0, tzinfo=dt.UTC),)]


def test_a_writer_that_leaves_the_bucket_out_gets_it_right(database_url: str) -> None:
    """A consumer of the previous release (or a hand-written fix) names no last_bucket: the
    trigger sets it on insert and moves it when an update moves last_at to another quarter
    hour, so the realtime count still finds the visit."""
    t = dt.datetime(2025, 11, 12, 12, 14, tzinfo=dt.UTC)
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "INSERT INTO visits (site_id, visitor, started_at, last_at, day, entry_page,"
            " exit_page, page_views, events) VALUES ('s', 'v', %s, %s, %s, '/', '/', 1, 1)",
            (t, t, t.date()),
        )
        conn.execute(
            "INSERT INTO visits (site_id, visitor, started_at, last_at, day, entry_page,"
            " exit_page, page_views, events) VALUES ('s', 'v', %s, %s, %s, '/', '/', 2, 2)"
            " ON CONFLICT (site_id, visitor, started_at) DO UPDATE SET"
            " last_at = EXCLUDED.last_at, events = EXCLUDED.events",
            (t, t + dt.timedelta(minutes=2), t.date()),
        )
        stored = conn.execute("SELECT last_at, last_bucket FROM visits").fetchall()
    assert stored == [
        (t + dt.timedelta(minutes=2), dt.datetime(2025, 11, 12, 12, 15, tzinfo=dt.UTC))
    ]
