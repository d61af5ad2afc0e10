"""The batch statement and every operator's command lock rollup tables in the one order the
registry declares (consumer/rollups), so that a batch and a rebuild, a zone change or a seal
never wait for each other (a deadlock). Derived from the registry itself; the integration
test tests/integration/test_lock_acquisition.py watches the real locks being taken.

PostgreSQL locks a statement's tables as it analyses it, CTE by CTE in the order written, so
the order of the INSERT targets in the batch statement's text is the order of its locks."""

from __future__ import annotations

import datetime as dt
import re

from psycopg import sql

from consumer.rebuild import LOCK_ROLLUPS, REBUILDS
from consumer.rollups import LOCK_ORDER, ROLLUPS, seal_steps
from consumer.schema import load_migrations
from consumer.seal import LOCK_SEALED
from consumer.sessions_store import STORE_VISITS, VISIT_TABLES
from consumer.write import INSERT_AND_ROLL_UP
from consumer.zones import DELETE_ZONE_ROWS, LOCK_LOCAL_ROLLUPS, RECOUNT_LOCAL_ROLLUPS
from ingest.stats_days import make_range
from ingest.stats_params import BreakdownRequest, StatsRequest
from ingest.stats_plan import plan_breakdown
from ingest.stats_plan_parts import ValueVisitors
from ingest.stats_sql_breakdown import breakdown_sql, value_visitors_sql

_WRITTEN = re.compile(r"\b(?:INSERT INTO|DELETE FROM)\s+(\w+)")
_READ = re.compile(r"\b(?:FROM|JOIN)\s+(\w+)")


def _locked(statement: sql.Composed) -> list[str]:
    text = statement.as_string(None)
    names = re.fullmatch(r"LOCK TABLE (.+) IN SHARE ROW EXCLUSIVE MODE", text)
    assert names, text
    return [name.strip().strip('"') for name in names[1].split(",")]


def _is_subsequence(tables: list[str], order: tuple[str, ...]) -> bool:
    rest = iter(order)
    return all(table in rest for table in tables)


def _written(statements: list[str]) -> set[str]:
    return {table for statement in statements for table in _WRITTEN.findall(statement)}


def test_the_batch_statement_writes_every_rollup_in_the_lock_order() -> None:
    # Then the visit statement, in the same transaction: `visits`, then the visit rollups.
    # The session-local tables (VISIT_TABLES) are no one else's: nothing waits for them.
    # site_versions and site_day_versions only batches write, last, rows of sites whose rollup
    # rows they hold.
    skipped = {"events", "visits", "site_versions", "site_day_versions", *VISIT_TABLES}
    statements = INSERT_AND_ROLL_UP + STORE_VISITS
    written = [t for t in re.findall(r"INSERT INTO (\w+)", statements) if t not in skipped]
    assert tuple(written) == LOCK_ORDER
    assert STORE_VISITS.index("INSERT INTO visits") < STORE_VISITS.index("INSERT INTO quarter")
    assert len(set(LOCK_ORDER)) == len(LOCK_ORDER)


def test_every_command_locks_a_subsequence_of_the_lock_order() -> None:
    assert tuple(_locked(LOCK_ROLLUPS)) == LOCK_ORDER  # rebuild: all of them
    for lock in (LOCK_LOCAL_ROLLUPS, LOCK_SEALED):
        assert _is_subsequence(_locked(lock), LOCK_ORDER), _locked(lock)
    assert _locked(LOCK_LOCAL_ROLLUPS) == [r.table for r in ROLLUPS if r.zoned]
    assert _locked(LOCK_SEALED) == [r.table for r in ROLLUPS if r.sealed]


def test_a_subsequence_is_told_from_a_reordering() -> None:
    assert _is_subsequence(["b", "d"], ("a", "b", "c", "d"))
    assert not _is_subsequence(["d", "b"], ("a", "b", "c", "d"))


def test_every_command_writes_only_tables_it_has_locked() -> None:
    rebuilt = [s for step in REBUILDS for s in step] + [s for s in RECOUNT_LOCAL_ROLLUPS[0]]
    assert _written(rebuilt) <= set(_locked(LOCK_ROLLUPS))
    zones = [s for step in RECOUNT_LOCAL_ROLLUPS for s in step]
    zones += [d.as_string(None) for d in DELETE_ZONE_ROWS]
    assert _written(zones) == set(_locked(LOCK_LOCAL_ROLLUPS))
    assert _written(seal_steps()) == set(_locked(LOCK_SEALED))


def test_a_seal_locks_the_last_tables_of_the_batch_and_visit_statements() -> None:
    # Then a batch waiting for a seal at the batch statement holds nothing the seal waits for,
    # and one past it holds the batch statement's sealed months, which the seal takes first:
    # it never waits for a seal at the visit statement.
    sealed = _locked(LOCK_SEALED)
    batch = [r.table for r in ROLLUPS if not r.from_visits]
    visits = [r.table for r in ROLLUPS if r.from_visits]
    in_batch = [t for t in sealed if t in batch]
    in_visits = [t for t in sealed if t in visits]
    assert sealed == in_batch + in_visits
    assert in_batch == batch[-len(in_batch) :]
    assert in_visits == visits[-len(in_visits) :]
    assert in_batch == ["sealed_monthly_paths", "sealed_monthly_event_types"]
    assert in_visits == ["sealed_monthly_visit_dimensions"]


def test_each_recount_reads_only_rollups_before_it_in_the_order() -> None:
    # Commands run their recounts in the lock order: a rollup recounted from other rollups
    # must come after them.
    for position, rollup in enumerate(ROLLUPS):
        for kind in ("recount", "zone_recount", "seal", "zone_seal"):
            if kind not in rollup.kinds:
                continue
            read = set(_READ.findall(rollup.sql(kind))) & set(LOCK_ORDER)
            assert read <= set(LOCK_ORDER[: position + 1]), (rollup.table, kind, read)


_MIGRATION_LOCKS = re.compile(
    r"\b(?:LOCK(?:\s+TABLE)?|ALTER\s+TABLE(?:\s+IF\s+EXISTS)?|INSERT\s+INTO|DELETE\s+FROM"
    r"|UPDATE|TRUNCATE(?:\s+TABLE)?|ON)\s+(?:ONLY\s+)?([\w.\"]+(?:\s*,\s*[\w.\"]+)*)",
    re.IGNORECASE,
)


def test_every_migration_takes_the_rollups_it_changes_in_the_lock_order() -> None:
    """A migration runs beside consumers: a rollup table locked out of order waits for a
    batch that waits for it. From 0005 on: 0001 and 0004 index and rename the tables of
    releases whose batches wrote them in another order (and other names)."""
    for migration in load_migrations()[4:]:
        text = re.sub(r"--[^\n]*|/\*.*?\*/", "", migration.path.read_text(), flags=re.DOTALL)
        seen: list[str] = []
        for names in _MIGRATION_LOCKS.findall(text):
            for name in (n.strip().strip('"').removeprefix("public.") for n in names.split(",")):
                if name in LOCK_ORDER and name not in seen:
                    seen.append(name)
        assert _is_subsequence(seen, LOCK_ORDER), (migration.label, seen)


def test_stats_statements_read_the_sub_day_paths_in_the_lock_order() -> None:
    """Readers lock each table they name, in the order named; one naming hourly_paths before
    quarter_hour_paths waits for a migration holding the first while it holds the second."""
    for zone in ("Asia/Kathmandu", "Asia/Kolkata", "Europe/Berlin"):
        for first in (dt.date(2025, 10, 27), dt.date(2025, 11, 1)):
            days = make_range(first, dt.date(2025, 11, 25), zone)
            asked = StatsRequest("s", days, ("views", "visitors"))
            request = BreakdownRequest(asked, "path", 10, 1)
            plan = plan_breakdown(request, dt.date(2026, 1, 15))
            texts = [breakdown_sql(plan.answer, request)[0].as_string(None)]
            if isinstance(plan.then, ValueVisitors):
                texts.append(value_visitors_sql(plan.then, request, ["/"])[0].as_string(None))
            for text in texts:
                named = [t for t in re.findall(r'\b(?:FROM|JOIN)\s+"?(\w+)', text)]
                pair = [t for t in dict.fromkeys(named) if t.endswith("_paths") and "hour" in t]
                assert _is_subsequence(pair, LOCK_ORDER), (zone, first, pair)
