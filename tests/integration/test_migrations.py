"""Versioned migrations against a real PostgreSQL: a database of the previous release (af0ce48,
whose schema is migration 0001 verbatim, before versions were recorded) migrates to exactly the
schema a new database gets from schema.sql, keeps its rows, and migrating again changes
nothing; consumers refuse a schema older than they need."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from consumer.brin_ranges import RangeSummarizer
from consumer.migrate import main as migrate_main
from consumer.schema import (
    SchemaNotCurrent,
    load_migrations,
    migrate,
    require_current_schema,
)
from tests.support import scalar

pytestmark = pytest.mark.postgres

# Migration 0001 is that release's schema.sql verbatim (below its header): what one of its
# consumers applied at start.
PREVIOUS_RELEASE_SCHEMA = load_migrations()[0].path
DAYS = ("2025-11-11", "2025-11-12")
LATEST = load_migrations()[-1].version
ALL_LABELS = ", ".join(m.label for m in load_migrations())  # "0001_baseline, 0002_…"
DROP_DATABASE = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")


@contextmanager
def created_database(server_database_url: str) -> Iterator[str]:
    """A database with nothing in it, not even the schema, dropped afterwards."""
    name = f"m_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(server_database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_conninfo(server_database_url, dbname=name)
    finally:
        with psycopg.connect(server_database_url, autocommit=True) as conn:
            conn.execute(DROP_DATABASE.format(sql.Identifier(name)))


@pytest.fixture
def previous_release_database(server_database_url: str) -> Iterator[str]:
    """An empty database, for the previous release's schema (build_previous_release)."""
    with created_database(server_database_url) as url:
        yield url


@pytest.fixture
def new_database(server_database_url: str) -> Iterator[str]:
    """An empty database."""
    with created_database(server_database_url) as url:
        yield url


def build_previous_release(database_url: str) -> None:
    """The schema of af0ce48 with a few rows written the way that release wrote them: two days
    of raw events, and rollups of a third day whose partition retention dropped."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(PREVIOUS_RELEASE_SCHEMA.read_bytes())
        for day in DAYS:
            conn.execute("SELECT ensure_events_partition(%s)", (day,))
            conn.execute(
                "INSERT INTO events VALUES (%s, gen_random_uuid(), 'a', 'page_view', '/', 'u1', "
                "%s::date + time '10:00', now())",
                (day, day),
            )
        conn.execute(
            "INSERT INTO daily_stats VALUES ('a', '2025-11-10', 5, 2, 5), "
            "('a', '2025-11-11', 1, 1, 1), ('a', '2025-11-12', 1, 1, 1)"
        )
        conn.execute(
            "INSERT INTO hourly_stats VALUES ('a', '2025-11-11 10:00+00', 1, 1, "
            "hll_add(hll_empty(), hll_hash_text('u1')))"
        )
        conn.execute("INSERT INTO site_zones (site_id, timezone, auto) VALUES ('a', 'UTC', true)")
        conn.execute("UPDATE sealed_days SET sealed_before = '2025-11-01'")


def pg_dump_binary(database_url: str) -> str:
    """The newest pg_dump installed, provided it can read this server."""
    with psycopg.connect(database_url) as conn:
        server_major = conn.info.server_version // 10000
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_dump"), key=lambda p: int(p.parts[-3])
    )
    if not candidates or int(candidates[-1].parts[-3]) < server_major:
        pytest.skip(f"no pg_dump of version {server_major} or newer under /usr/lib/postgresql")
    return str(candidates[-1])


def schema_dump(database_url: str) -> list[str]:
    """`pg_dump --schema-only`, one entry per object, comments, owners and session settings
    left out, sorted: what two databases must agree on, whatever order they were built in."""
    params = conninfo_to_dict(database_url)
    dump = subprocess.run(
        [pg_dump_binary(database_url), "--schema-only", "--no-owner", "--dbname", database_url],
        check=True,
        capture_output=True,
        text=True,
        env={"PGPASSWORD": str(params.get("password", "")), "PATH": "/usr/bin:/bin"},
    ).stdout
    objects = []
    for block in re.split(r"^-- Name: .*$", dump, flags=re.MULTILINE)[1:]:
        lines = [
            line
            for line in block.splitlines()
            if line.strip()
            and not line.startswith(("--", "SET ", "SELECT pg_catalog.set_config", "\\"))
            and " OWNER TO " not in line
        ]
        objects.append("\n".join(lines))
    assert objects, dump
    return sorted(objects)


async def summarize_twice(database_url: str) -> int:
    """Two passes of a replica's BRIN summaries; returns the days whose autosummarize they
    turned off."""
    summarizer = RangeSummarizer()
    turned_off = 0
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        for _ in range(2):
            done = await summarizer.summarize(conn)
            assert done is not None
            turned_off += done.turned_off
    return turned_off


def versions(database_url: str) -> list[tuple[int, str]]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT version, name FROM schema_migrations ORDER BY 1").fetchall()
    return [(int(v), str(n)) for v, n in rows]


async def test_the_previous_release_migrates_to_the_schema_of_a_new_database(
    previous_release_database: str, new_database: str
) -> None:
    build_previous_release(previous_release_database)
    assert scalar(previous_release_database, "SELECT to_regclass('schema_migrations')") is None

    plan = await migrate(previous_release_database)
    assert [m.version for m in plan.pending] == list(range(1, LATEST + 1))  # baseline first
    # The days made before 0021 have autosummarize on until a replica's pass finds them no
    # longer growing: its second.
    assert await summarize_twice(previous_release_database) == len(DAYS)
    await migrate(new_database)
    with psycopg.connect(new_database, autocommit=True) as conn:
        for day in DAYS:  # the same partitions, made the current way
            conn.execute("SELECT ensure_events_partition(%s)", (day,))

    assert schema_dump(previous_release_database) == schema_dump(new_database)
    expected = [(m.version, m.name) for m in load_migrations()]
    assert versions(previous_release_database) == versions(new_database) == expected

    # The rows survive, and the day only rollups remember is recorded as dropped.
    assert scalar(previous_release_database, "SELECT count(*) FROM events") == 2
    assert scalar(previous_release_database, "SELECT sum(events) FROM daily_stats") == 7
    assert (
        scalar(previous_release_database, "SELECT hll_cardinality(visitors) FROM hourly_stats") == 1
    )
    assert scalar(previous_release_database, "SELECT auto FROM site_zones") is True
    assert (
        str(scalar(previous_release_database, "SELECT array_agg(day)::text FROM dropped_days"))
        == "{2025-11-10}"
    )


async def test_migrating_again_changes_nothing(previous_release_database: str) -> None:
    build_previous_release(previous_release_database)
    await migrate(previous_release_database)
    dump = schema_dump(previous_release_database)
    applied_at = "SELECT array_agg(applied_at ORDER BY version) FROM schema_migrations"
    recorded = scalar(previous_release_database, applied_at)

    plan = await migrate(previous_release_database)

    assert plan.up_to_date
    assert schema_dump(previous_release_database) == dump
    assert scalar(previous_release_database, applied_at) == recorded
    assert scalar(previous_release_database, "SELECT count(*) FROM events") == 2


async def test_migrators_starting_together_take_turns(previous_release_database: str) -> None:
    build_previous_release(previous_release_database)
    plans = await asyncio.gather(*(migrate(previous_release_database) for _ in range(3)))
    assert sorted(len(p.pending) for p in plans) == [0, 0, LATEST]  # one did it all
    assert [v for v, _ in versions(previous_release_database)] == list(range(1, LATEST + 1))


async def test_a_dry_run_says_what_is_left_and_changes_nothing(
    previous_release_database: str,
    new_database: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    build_previous_release(previous_release_database)
    dump = schema_dump(previous_release_database)
    monkeypatch.setenv("DATABASE_URL", previous_release_database)
    assert await asyncio.to_thread(migrate_main, ["--dry-run"]) == 0
    said = capsys.readouterr().out
    assert f"{LATEST} migrations to apply: {ALL_LABELS}" in said
    assert schema_dump(previous_release_database) == dump

    monkeypatch.setenv("DATABASE_URL", new_database)
    assert await asyncio.to_thread(migrate_main, ["--dry-run"]) == 0
    assert "a new database: schema.sql would be applied" in capsys.readouterr().out
    assert await asyncio.to_thread(migrate_main, []) == 0
    assert f"is at version {LATEST}" in capsys.readouterr().out
    assert await asyncio.to_thread(migrate_main, ["--dry-run"]) == 0
    assert f"at version {LATEST}: nothing to apply" in capsys.readouterr().out


async def test_a_migration_that_cannot_lock_stops_and_says_what_to_do(
    previous_release_database: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    build_previous_release(previous_release_database)
    monkeypatch.setenv("DATABASE_URL", previous_release_database)
    with psycopg.connect(previous_release_database) as batch:
        # A consumer batch in progress: the baseline's index check must wait for it.
        batch.execute("LOCK TABLE daily_paths IN ROW EXCLUSIVE MODE")
        code = await asyncio.to_thread(migrate_main, ["--lock-timeout-s", "0.2"])
        assert code == 1
        said = capsys.readouterr()
        assert "applying 0001_baseline" in said.out
        assert "lock timeout" in said.err
        assert "Run `python -m consumer.migrate` again at a quieter moment" in said.err
        assert "The migration in progress was rolled back" in said.err
    assert scalar(previous_release_database, "SELECT count(*) FROM schema_migrations") == 0
    assert await asyncio.to_thread(migrate_main, []) == 0  # once the batch is done
    assert [v for v, _ in versions(previous_release_database)] == list(range(1, LATEST + 1))


async def test_a_new_database_is_recorded_at_the_latest_version(database_url: str) -> None:
    # The tests' template is made by apply_schema, as a new database is.
    assert [v for v, _ in versions(database_url)] == list(range(1, LATEST + 1))
    await require_current_schema(database_url)


async def test_the_consumer_refuses_an_older_schema_and_names_the_command(
    previous_release_database: str, new_database: str
) -> None:
    build_previous_release(previous_release_database)
    with pytest.raises(SchemaNotCurrent, match=r"python -m consumer\.migrate") as raised:
        await require_current_schema(previous_release_database)
    assert ALL_LABELS in str(raised.value)

    with pytest.raises(SchemaNotCurrent, match="the database has no schema"):
        await require_current_schema(new_database)

    # One migration short, as after a release that adds one.
    await migrate(previous_release_database)
    with psycopg.connect(previous_release_database, autocommit=True) as conn:
        conn.execute("DELETE FROM schema_migrations WHERE version = %s", (LATEST,))
    # The process, as operators start it: it stops before it reaches Kafka.
    started = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "consumer"],
        env={**os.environ, "DATABASE_URL": previous_release_database},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode == 1
    said = started.stderr
    assert f"lacks migrations {load_migrations()[-1].label}" in said
    assert "run `python -m consumer.migrate`" in said


async def test_consumers_of_the_previous_release_beside_a_migrated_database(
    previous_release_database: str, new_database: str
) -> None:
    """A rolling upgrade: the previous release's raw inserts keep working after the migration
    (its rollup statements name columns 0004 renamed: they fail and are retried), and one of
    its consumers that starts again fails to re-apply its schema and changes nothing."""
    await migrate(new_database)
    with psycopg.connect(new_database, autocommit=True) as conn:
        for day in DAYS:
            conn.execute("SELECT ensure_events_partition(%s)", (day,))
    current = schema_dump(new_database)
    build_previous_release(previous_release_database)
    await migrate(previous_release_database)
    with psycopg.connect(previous_release_database, autocommit=True) as conn:
        # That release's insert names no key, so it follows the new one: an id shared by two
        # sites stores both, and a retry stores nothing.
        shared = uuid.uuid4()
        insert = (
            "INSERT INTO events VALUES ('2025-11-11', %s, %s, 'page_view', '/', 'u', "
            "'2025-11-11 11:00+00', now()) ON CONFLICT DO NOTHING"
        )
        for site in ("a", "b", "b"):
            conn.execute(insert, (shared, site))
        assert scalar(previous_release_database, "SELECT count(*) FROM events") == 4

        # One of its consumers starts: its schema, applied in one transaction, fails on a
        # renamed column.
        with pytest.raises(psycopg.errors.UndefinedColumn, match="views"):
            conn.execute(PREVIOUS_RELEASE_SCHEMA.read_bytes())
    # A replica of this release turns autosummarize off on the days made before 0021.
    assert await summarize_twice(previous_release_database) == len(DAYS)
    assert schema_dump(previous_release_database) == current


WAITING_FOR_THE_PATHS = (
    "SELECT count(*) FROM pg_locks WHERE NOT granted"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    " AND relation IN ('quarter_hour_paths'::regclass, 'hourly_paths'::regclass)"
    " AND mode = 'AccessExclusiveLock'"
)


async def test_rebuilding_the_path_keys_waits_for_a_batch_instead_of_deadlocking(
    database_url: str,
) -> None:
    """0017 beside a consumer batch that holds quarter_hour_paths and then asks for
    hourly_paths (the batch statement's order): the migration must wait for the batch, not
    hold hourly_paths meanwhile (each would then wait for the other)."""
    rebuild = next(m for m in load_migrations() if m.version == 17).path.read_text()
    with psycopg.connect(database_url, autocommit=True) as conn:  # the keys before 0017
        for table, time in (("quarter_hour_paths", "bucket"), ("hourly_paths", "hour")):
            conn.execute(
                f"ALTER TABLE {table} DROP CONSTRAINT {table}_pkey,"
                f" ADD PRIMARY KEY (site_id, {time}, path)"
            )
    with psycopg.connect(database_url) as batch:
        batch.execute("LOCK TABLE quarter_hour_paths IN ROW EXCLUSIVE MODE")

        def migrating() -> None:
            with psycopg.connect(database_url) as conn:
                conn.execute("SET lock_timeout = '10s'")
                conn.execute(rebuild)

        running = asyncio.create_task(asyncio.to_thread(migrating))
        for _ in range(200):  # until the migration waits for a lock (at most 10 s)
            if scalar(database_url, WAITING_FOR_THE_PATHS):
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the migration never waited for the batch's lock")
        batch.execute("LOCK TABLE hourly_paths IN ROW EXCLUSIVE MODE")  # deadlocked before
        batch.commit()
        await running
    for table in ("quarter_hour_paths", "hourly_paths"):
        key = scalar(database_url, f"SELECT pg_get_indexdef('{table}_pkey'::regclass)")
        assert key.endswith("INCLUDE (page_views)"), key
