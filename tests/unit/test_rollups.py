"""The rollup registry's statements (consumer/rollups): the named-section format of its .sql
files, and every declared statement present with no stray one."""

from __future__ import annotations

import re

import pytest

from consumer.rollups import BATCH_INPUTS, ROLLUPS, Rollup, batch_statement
from consumer.rollups.statements import all_statements, parse_sections, statement


def test_sections_run_to_the_next_name_without_whole_line_comments() -> None:
    text = """
-- a file's header
-- name: t.one
-- what it is for
SELECT 1  -- kept: not a whole line
-- dropped
FROM x

-- name: t.two
SELECT 2
"""
    assert parse_sections(text, "f.sql") == {
        "t.one": "SELECT 1  -- kept: not a whole line\nFROM x",
        "t.two": "SELECT 2",
    }


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (
            "-- name: t.one\nSELECT 1\n-- name: t.one\nSELECT 2\n",
            "f.sql:3: statement 't.one' is named twice",
        ),
        ("-- name: t.one\n-- only a comment\n\n", "statement 't.one' is empty"),
        ("SELECT 1\n-- name: t.one\nSELECT 2\n", "f.sql:1: SQL before the first"),
        ("-- name: One\nSELECT 1\n", "'One' is not <table>.<kind>"),
    ],
)
def test_a_malformed_file_is_refused_naming_the_file_and_line(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        parse_sections(text, "f.sql")


def test_every_declared_statement_exists_and_none_is_stray() -> None:
    declared = {f"{r.table}.{kind}" for r in ROLLUPS for kind in r.kinds}
    batch = {"batch.head", "batch.site_versions", "batch.tail"}
    batch |= {f"batch.{name}" for name in BATCH_INPUTS}
    visits = {"visits.head", "visits.site_days", "visits.tail", "visits.place_in_order"}
    visits |= {"visits.delete_moved"}
    visits |= {"visits.load_late_events", "visits.load_late_stored", "visits.cap_values"}
    visits |= {"visits.expected", "visits.stored"}  # the tests' oracle
    assert set(all_statements()) == declared | batch | visits


def test_each_statement_of_a_rollup_writes_its_table_only() -> None:
    for rollup in ROLLUPS:
        for kind in rollup.kinds:
            written = re.findall(r"\b(?:INSERT INTO|DELETE FROM)\s+(\w+)", rollup.sql(kind))
            if kind in ("expected", "stored"):
                assert written == [], (rollup.table, kind)
            else:
                assert written == [rollup.table], (rollup.table, kind)
        assert re.search(rf"\bFROM {rollup.table}\b", rollup.sql("stored")), rollup.table


def test_a_missing_statement_or_kind_is_a_lookup_error() -> None:
    with pytest.raises(LookupError, match=re.escape("no `-- name: nothing.upsert`")):
        statement("nothing.upsert")
    with pytest.raises(LookupError, match="has no 'seal' statement"):
        ROLLUPS[0].sql("seal")


def test_a_declaration_is_checked() -> None:
    with pytest.raises(ValueError, match="not a plain lower-case name"):
        Rollup("Daily-Stats")
    with pytest.raises(ValueError, match="unknown batch inputs"):
        Rollup("t", ("visits",))


def test_a_rollup_reads_a_shared_input_if_and_only_if_it_declares_it() -> None:
    # An undeclared reader could land before the input's CTE and fail only when run.
    for rollup in ROLLUPS:
        if rollup.from_visits:
            continue
        upsert = rollup.sql("upsert")
        for name in BATCH_INPUTS:
            reads = re.search(rf"\b{name}\b", upsert) is not None
            assert reads == (name in rollup.batch_inputs), (rollup.table, name)


def test_the_batch_statement_writes_each_shared_input_once_before_its_first_reader() -> None:
    statement_text = batch_statement()
    assert statement_text.startswith("WITH inserted AS (")
    assert statement_text.endswith("SELECT count(*) FROM inserted")
    for name in BATCH_INPUTS:
        defined = statement_text.index(f"\n{name} AS ")
        assert statement_text.count(f"\n{name} AS ") == 1
        first_reader = min(
            statement_text.index(r.sql("upsert")) for r in ROLLUPS if name in r.batch_inputs
        )
        assert defined < first_reader
