"""The order in which the batch statement and the operators' commands really take their locks
on rollup tables, watched on a real PostgreSQL: it is the registry's (consumer/rollups).

For each rollup table a command locks, the test holds that table itself (ACCESS EXCLUSIVE),
starts the command, and once the command waits for it, reads which rollup tables the
command's backend already holds (pg_locks): exactly those before it in the registry's order
that the command locks. Over every table, that is the order of acquisition."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Callable

import psycopg
import pytest
from psycopg import sql

from consumer.rebuild import rebuild_rollups
from consumer.rollups import LOCK_ORDER, sealed_tables, zone_tables
from consumer.seal import seal_closed_days
from consumer.zones import add_zone, remove_zone
from tests.support import make_record, write_batch

pytestmark = pytest.mark.postgres

WAITING_FOR = """
SELECT pid FROM pg_locks
WHERE locktype = 'relation' AND relation = to_regclass(%s) AND NOT granted
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""
HELD_BY = """
SELECT relation::regclass::text FROM pg_locks
WHERE locktype = 'relation' AND pid = %s AND granted
"""


async def _held_when_blocked_on(
    database_url: str, table: str, work: Callable[[], Awaitable[object]]
) -> list[str]:
    """Runs `work` while this test holds `table`; returns the rollup tables (in the registry's
    order) that work's backend had locked when it came to wait for `table`."""
    async with (
        await psycopg.AsyncConnection.connect(database_url, autocommit=True) as watcher,
        await psycopg.AsyncConnection.connect(database_url) as blocker,
    ):
        await blocker.execute(
            sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.Identifier(table))
        )
        task = asyncio.ensure_future(work())
        try:
            deadline = time.monotonic() + 10
            while not (rows := await (await watcher.execute(WAITING_FOR, (table,))).fetchall()):
                assert not task.done(), f"finished without waiting for {table}"
                assert time.monotonic() < deadline, f"nothing came to wait for {table}"
                await asyncio.sleep(0.02)
            held = {name for (name,) in await (await watcher.execute(HELD_BY, rows[0])).fetchall()}
        finally:
            await blocker.rollback()
            await asyncio.wait_for(task, timeout=30)
    return [name for name in LOCK_ORDER if name in held]


def _before(table: str, locked: tuple[str, ...]) -> list[str]:
    return list(locked[: locked.index(table)])


async def test_a_batch_locks_every_rollup_in_the_registry_order(database_url: str) -> None:
    await add_zone(database_url, "a", "Asia/Kolkata")  # the local rollups are written too
    for partition, table in enumerate(LOCK_ORDER):
        batch = [make_record(site_id="a", user_id=f"u{partition}")]
        held = await _held_when_blocked_on(
            database_url,
            table,
            lambda batch=batch, p=partition: write_batch(database_url, batch, p),
        )
        assert held == _before(table, LOCK_ORDER)


async def test_a_rebuild_locks_every_rollup_in_the_registry_order(database_url: str) -> None:
    await write_batch(database_url, [make_record(site_id="a")])
    day = make_record().timestamp.date()
    for table in LOCK_ORDER:
        held = await _held_when_blocked_on(
            database_url, table, lambda: rebuild_rollups(database_url, day, day)
        )
        assert held == _before(table, LOCK_ORDER)


async def test_zone_changes_lock_the_zone_rollups_in_the_registry_order(database_url: str) -> None:
    locked = zone_tables()
    assert list(locked) == [t for t in LOCK_ORDER if t in locked]
    for table in locked:
        held = await _held_when_blocked_on(
            database_url, table, lambda: add_zone(database_url, "a", "Asia/Kolkata")
        )
        assert held == _before(table, locked)
        held = await _held_when_blocked_on(
            database_url, table, lambda: remove_zone(database_url, "a", "Asia/Kolkata")
        )
        assert held == _before(table, locked)


async def test_a_seal_locks_the_sealed_rollups_in_the_registry_order(database_url: str) -> None:
    await write_batch(database_url, [make_record(site_id="a")])
    locked = sealed_tables()
    assert list(locked) == [t for t in LOCK_ORDER if t in locked]
    for later, table in enumerate(locked):
        # A day more each time, so that each seal has a day to seal (and locks).
        today = make_record().timestamp.date() + dt.timedelta(days=7 + later)
        held = await _held_when_blocked_on(
            database_url, table, lambda today=today: seal_closed_days(database_url, today)
        )
        assert held == _before(table, locked)
