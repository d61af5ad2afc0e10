"""The database schema and its recorded version.

`schema.sql` is the current schema, for a new database; `migrations/NNNN_name.sql` are the
changes since the baseline, for an existing one; `schema_migrations` records which have been
applied. Both ship as package data (`consumer/migrations/`; its `schema.sql` is a symlink to
the root one, and wheels carry the file). `python -m consumer.migrate` is the command.

A change is a new numbered file and the same change in schema.sql (a test compares the two).
It must keep the previous release working, since its consumers run beside the migrated
database during a rolling upgrade: add tables, columns with defaults and indexes; rename or
drop only in a later release, once nothing reads the old name. Earlier files never change.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.rows import TupleRow

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SCHEMA_PATH = MIGRATIONS_DIR / "schema.sql"
DEFAULT_LOCK_TIMEOUT_S = 10.0
MIGRATE_COMMAND = "python -m consumer.migrate"

# The key schema.sql was applied under before versions were recorded: consumers of those
# releases still take it at start, so they and a migration take turns.
_LOCK_KEY = "analytics schema"
_FILE_NAME = re.compile(r"(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql")

CREATE_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer     PRIMARY KEY,
    name        text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)"""
RECORD_VERSION = "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"


@dataclass(frozen=True)
class DatabaseState:
    """What a database holds of the schema: the versions recorded, and whether it has tables
    (a database of a release before versions were recorded has `events` and no versions)."""

    has_events: bool
    applied: frozenset[int]


@dataclass(frozen=True)
class Plan:
    """`fresh`: schema.sql, then every migration recorded as applied; otherwise `pending` runs,
    one transaction each, in order. `unknown`: versions recorded by a newer release."""

    fresh: bool
    pending: tuple[Migration, ...]
    unknown: tuple[int, ...]

    @property
    def up_to_date(self) -> bool:
        return not self.fresh and not self.pending


class SchemaNotCurrent(Exception):
    """The database lacks migrations this code needs; the message says which and the command."""


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The numbered files, in order; raises ValueError unless they run 1, 2, 3... by one."""
    migrations = []
    for path in directory.iterdir():
        if path.suffix != ".sql" or path.name == SCHEMA_PATH.name:
            continue
        match = _FILE_NAME.fullmatch(path.name)
        if match is None:
            raise ValueError(f"{path.name}: a migration is named NNNN_lowercase_words.sql")
        migrations.append(Migration(int(match["version"]), match["name"], path))
    migrations.sort(key=lambda m: m.version)
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migrations must be numbered 1, 2, 3... without gaps: {versions}")
    return migrations


def plan_migrations(state: DatabaseState, migrations: Sequence[Migration]) -> Plan:
    """What brings a database in `state` to the last of `migrations`. A database with neither
    tables nor versions is new. One with `events` and no versions is of a release before
    versions were recorded: every migration runs, the baseline (0001, idempotent) first."""
    known = {m.version for m in migrations}
    unknown = tuple(sorted(state.applied - known))
    if not state.has_events and not state.applied:
        return Plan(fresh=True, pending=tuple(migrations), unknown=unknown)
    pending = tuple(m for m in migrations if m.version not in state.applied)
    return Plan(fresh=False, pending=pending, unknown=unknown)


async def read_state(conn: psycopg.AsyncConnection[TupleRow]) -> DatabaseState:
    cur = await conn.execute(
        "SELECT to_regclass('events') IS NOT NULL, to_regclass('schema_migrations') IS NOT NULL"
    )
    row = await cur.fetchone()
    assert row is not None
    has_events, has_versions = bool(row[0]), bool(row[1])
    applied: frozenset[int] = frozenset()
    if has_versions:
        cur = await conn.execute("SELECT version FROM schema_migrations")
        applied = frozenset(int(v) for (v,) in await cur.fetchall())
    return DatabaseState(has_events=has_events, applied=applied)


async def _lock(conn: psycopg.AsyncConnection[TupleRow], say: Callable[[str], None]) -> None:
    cur = await conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (_LOCK_KEY,))
    row = await cur.fetchone()
    if row is not None and row[0]:
        return
    say(
        "another session is changing the schema (a migration, a consumer of an earlier release "
        "starting); waiting for it"
    )
    await conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (_LOCK_KEY,))


async def _set_lock_timeout(conn: psycopg.AsyncConnection[TupleRow], seconds: float) -> None:
    await conn.execute(
        "SELECT set_config('lock_timeout', %s, true)", (f"{round(seconds * 1000)}ms",)
    )


async def migrate(
    database_url: str,
    *,
    dry_run: bool = False,
    lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
    schema_path: Path = SCHEMA_PATH,
    migrations: Sequence[Migration] | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> Plan:
    """Brings the database to the latest version and returns the plan it followed (with
    `dry_run`, only returns it). Holds a session advisory lock throughout, so migrators and
    consumers of earlier releases starting together take turns; each migration commits in its
    own transaction with its version, its lock waits bounded by `lock_timeout_s` (SQLSTATE
    55P03 after, the migration rolled back and the ones before it kept). Raises psycopg errors
    as they come."""
    if migrations is None:
        migrations = load_migrations()
    async with await psycopg.AsyncConnection.connect(
        database_url, connect_timeout=10, autocommit=True
    ) as conn:
        if dry_run:
            return plan_migrations(await read_state(conn), migrations)
        await _lock(conn, say)
        # Read under the lock: another migrator may just have finished.
        plan = plan_migrations(await read_state(conn), migrations)
        if plan.fresh:
            schema = schema_path.read_bytes()  # noqa: ASYNC240 (a few KiB, once)
            async with conn.transaction():
                await _set_lock_timeout(conn, lock_timeout_s)
                await conn.execute(CREATE_VERSION_TABLE)
                await conn.execute(schema)
                for migration in migrations:
                    await conn.execute(RECORD_VERSION, (migration.version, migration.name))
            say(f"applied {schema_path.name}, recorded as version {migrations[-1].version}")
            return plan
        if plan.pending:
            await conn.execute(CREATE_VERSION_TABLE)
        for migration in plan.pending:
            say(f"applying {migration.label}")
            sql = migration.path.read_bytes()
            async with conn.transaction():
                await _set_lock_timeout(conn, lock_timeout_s)
                await conn.execute(sql)
                await conn.execute(RECORD_VERSION, (migration.version, migration.name))
            say(f"applied {migration.label}")
        return plan


async def apply_schema(database_url: str, schema_path: Path = SCHEMA_PATH) -> None:
    """Brings the database to the latest version (schema.sql for a new one, the missing
    migrations otherwise); replicas and migrators starting together take turns."""
    await migrate(database_url, schema_path=schema_path)


async def require_current_schema(database_url: str) -> None:
    """Raises SchemaNotCurrent unless every migration this code knows is applied. Changes
    nothing and takes no lock: a consumer checks at start, and `python -m consumer.migrate`
    is the one that migrates. Versions of a newer release are accepted (a migration keeps the
    previous release working)."""
    migrations = load_migrations()
    async with await psycopg.AsyncConnection.connect(
        database_url, connect_timeout=10, autocommit=True
    ) as conn:
        plan = plan_migrations(await read_state(conn), migrations)
    if plan.up_to_date:
        return
    latest = migrations[-1].version
    if plan.fresh:
        raise SchemaNotCurrent(
            f"the database has no schema; this release needs version {latest}: "
            f"run `{MIGRATE_COMMAND}` (`make migrate`) first"
        )
    missing = ", ".join(m.label for m in plan.pending)
    raise SchemaNotCurrent(
        f"the database lacks migrations {missing} (this release needs version {latest}): "
        f"run `{MIGRATE_COMMAND}` (`make migrate`) first"
    )


if __name__ == "__main__":  # the command's earlier name
    import sys

    from consumer.migrate import main

    sys.exit(main())
