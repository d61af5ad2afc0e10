"""Operators' commands lock the rollup tables in the order a batch's statement takes them, so
that a batch and a rebuild or a zone change never wait for each other (a deadlock).

PostgreSQL locks a statement's tables as it analyses it, CTE by CTE in the order written, so
the order of the INSERT targets in the statement's text is the order of its locks."""

from __future__ import annotations

import re

from consumer.rebuild import LOCK_ROLLUPS
from consumer.seal import LOCK_SEALED
from consumer.write import INSERT_AND_ROLL_UP
from consumer.zones import LOCK_LOCAL_ROLLUPS


def _locked(statement: str) -> list[str]:
    names = re.split(r"\s+IN\s+", statement.split("LOCK TABLE", 1)[1], maxsplit=1)[0]
    return [name.strip() for name in names.split(",")]


def _written_by_batches() -> list[str]:
    written = re.findall(r"INSERT INTO (\w+)", INSERT_AND_ROLL_UP)
    return [table for table in written if table != "events"]


def test_rebuild_locks_every_rollup_in_the_batch_statement_order() -> None:
    assert _locked(LOCK_ROLLUPS) == _written_by_batches()


def test_zone_changes_lock_the_local_rollups_in_the_same_order() -> None:
    locked = _locked(LOCK_LOCAL_ROLLUPS)
    local = [table for table in _written_by_batches() if table in locked]
    assert locked == local
    assert [t for t in locked if t.startswith("local_")] == [
        t for t in _written_by_batches() if t.startswith("local_")
    ]


def test_a_seal_locks_the_last_tables_a_batch_writes() -> None:
    # Then a batch waiting for a seal holds nothing the seal waits for.
    assert _locked(LOCK_SEALED) == _written_by_batches()[-2:]
    assert _locked(LOCK_SEALED) == ["sealed_monthly_paths", "sealed_monthly_event_types"]
