"""Which migrations a database gets, from what it holds; the files they come from."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumer.schema import (
    MIGRATIONS_DIR,
    SCHEMA_PATH,
    DatabaseState,
    Migration,
    load_migrations,
    plan_migrations,
)

ROOT = Path(__file__).resolve().parent.parent.parent


def three() -> list[Migration]:
    return [Migration(v, f"m{v}", Path(f"{v:04d}_m{v}.sql")) for v in (1, 2, 3)]


def test_a_database_with_nothing_gets_schema_sql() -> None:
    plan = plan_migrations(DatabaseState(has_events=False, applied=frozenset()), three())
    assert plan.fresh
    assert not plan.up_to_date


def test_a_database_of_a_release_without_versions_gets_every_migration_baseline_first() -> None:
    plan = plan_migrations(DatabaseState(has_events=True, applied=frozenset()), three())
    assert not plan.fresh
    assert [m.version for m in plan.pending] == [1, 2, 3]


def test_a_recorded_database_gets_the_missing_ones_in_order() -> None:
    plan = plan_migrations(DatabaseState(has_events=True, applied=frozenset({1, 3})), three())
    assert [m.version for m in plan.pending] == [2]


def test_a_database_of_a_newer_release_is_up_to_date() -> None:
    plan = plan_migrations(DatabaseState(has_events=True, applied=frozenset({1, 2, 3, 4})), three())
    assert plan.up_to_date
    assert plan.unknown == (4,)


def test_the_packaged_migrations_run_from_one_without_gaps() -> None:
    migrations = load_migrations()
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    assert migrations[0].label == "0001_baseline"


def test_the_packaged_schema_is_the_one_at_the_root() -> None:
    assert SCHEMA_PATH.parent == MIGRATIONS_DIR
    assert SCHEMA_PATH.read_bytes() == (ROOT / "schema.sql").read_bytes()


@pytest.mark.parametrize(
    ("names", "error"),
    [
        (["0001_a.sql", "0003_c.sql"], "without gaps"),
        (["0001_a.sql", "0001_b.sql"], "without gaps"),
        (["1_a.sql"], "NNNN_lowercase_words.sql"),
        (["0001-A.sql"], "NNNN_lowercase_words.sql"),
    ],
)
def test_misnumbered_migrations_are_refused(tmp_path: Path, names: list[str], error: str) -> None:
    for name in names:
        (tmp_path / name).write_text("SELECT 1;\n")
    with pytest.raises(ValueError, match=error):
        load_migrations(tmp_path)
