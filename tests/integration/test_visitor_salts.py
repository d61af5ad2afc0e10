"""The daily visitor salts against a real PostgreSQL: replicas agree, old salts go, and a
keeper keeps serving from memory once the database is gone."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from ingest.salts import SALT_BYTES, SaltKeeper, VisitorKeyMismatch, key_fingerprint

pytestmark = pytest.mark.postgres

NOON = datetime(2025, 11, 12, 12, 0, tzinfo=UTC)
DAY = NOON.date()


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    async with AsyncConnectionPool(
        database_url, min_size=1, max_size=2, timeout=2, kwargs={"autocommit": True}, open=False
    ) as opened:
        yield opened


def stored_days(database_url: str) -> list[date]:
    with psycopg.connect(database_url) as conn:
        return [row[0] for row in conn.execute("SELECT day FROM visitor_salts ORDER BY day")]


async def test_two_keepers_agree_on_each_days_salt(
    pool: AsyncConnectionPool[Any], database_url: str
) -> None:
    key = os.urandom(32)
    first, second = SaltKeeper(key, clock=Clock(NOON)), SaltKeeper(key, clock=Clock(NOON))
    await first.refresh(pool)
    await second.refresh(pool)
    tomorrow = DAY + timedelta(days=1)
    for day in (DAY, tomorrow):
        salt = first.salt_for(day)
        assert salt is not None and len(salt) == SALT_BYTES
        assert second.salt_for(day) == salt
    assert first.salt_for(DAY) != first.salt_for(tomorrow)
    assert stored_days(database_url) == [DAY, tomorrow]
    # The database holds the salts sealed only.
    with psycopg.connect(database_url) as conn:
        sealed = [bytes(row[0]) for row in conn.execute("SELECT sealed FROM visitor_salts")]
    assert all(first.salt_for(DAY) not in s and first.salt_for(tomorrow) not in s for s in sealed)


async def test_a_days_salt_is_deleted_48_hours_after_its_day_began(
    pool: AsyncConnectionPool[Any], database_url: str
) -> None:
    clock = Clock(NOON)
    keeper = SaltKeeper(os.urandom(32), clock=clock)
    await keeper.refresh(pool)
    day_salt = keeper.salt_for(DAY)
    # The next day: the salt made a day ahead is the one used, and DAY's is still stored.
    clock.now = NOON + timedelta(days=1)
    await keeper.refresh(pool)
    assert keeper.salt_for(DAY + timedelta(days=1)) is not None
    assert keeper.salt_for(DAY) is None  # never asked for again: out of memory
    assert DAY in stored_days(database_url)
    # 48 hours after DAY began (and a second): gone from the database too.
    clock.now = datetime.combine(DAY + timedelta(days=2), datetime.min.time(), UTC)
    clock.now += timedelta(seconds=1)
    await keeper.refresh(pool)
    assert DAY not in stored_days(database_url)
    assert day_salt not in {keeper.salt_for(d) for d in keeper.days}
    assert stored_days(database_url) == [DAY + timedelta(days=d) for d in (1, 2, 3)]


async def test_a_keeper_with_another_key_refuses_the_stored_salts(
    pool: AsyncConnectionPool[Any],
) -> None:
    await SaltKeeper(os.urandom(32), clock=Clock(NOON)).refresh(pool)
    other = SaltKeeper(os.urandom(32), clock=Clock(NOON))
    with pytest.raises(VisitorKeyMismatch, match="VISITOR_KEY"):
        await other.refresh(pool)
    assert other.salt_for(DAY) is None and other.mismatch is not None
    assert not await other.refresh_logged(pool)


async def test_a_keeper_with_another_key_never_inserts_a_salt(
    pool: AsyncConnectionPool[Any], database_url: str
) -> None:
    """The next day, a replica with another key would otherwise seal the new day's salt
    first, and every replica with the right key would then refuse it."""
    key = os.urandom(32)
    await SaltKeeper(key, clock=Clock(NOON)).refresh(pool)
    next_day = NOON + timedelta(days=1)
    other = SaltKeeper(os.urandom(32), clock=Clock(next_day))
    with pytest.raises(VisitorKeyMismatch, match="VISITOR_KEY"):
        await other.refresh(pool)
    assert stored_days(database_url) == [DAY, DAY + timedelta(days=1)]  # nor deleted any
    right = SaltKeeper(key, clock=Clock(next_day))
    await right.refresh(pool)
    assert right.salt_for(DAY + timedelta(days=2)) is not None
    with psycopg.connect(database_url) as conn:
        fingerprints = {
            bytes(r[0]) for r in conn.execute("SELECT key_fingerprint FROM visitor_salts")
        }
    assert fingerprints == {key_fingerprint(key)}


async def test_a_mismatch_is_logged_once_naming_the_setting(
    pool: AsyncConnectionPool[Any], caplog: pytest.LogCaptureFixture
) -> None:
    await SaltKeeper(os.urandom(32), clock=Clock(NOON)).refresh(pool)
    other = SaltKeeper(os.urandom(32), clock=Clock(NOON))
    with caplog.at_level(logging.WARNING, logger="ingest.salts"):
        for _ in range(3):
            assert not await other.refresh_logged(pool)
    [record] = caplog.records
    assert record.levelno == logging.ERROR
    assert "VISITOR_KEY" in record.getMessage()


async def test_the_salts_in_memory_outlive_the_database(
    server_database_url: str, template_database: str
) -> None:
    """A database dropped after the first refresh: refreshes fail (logged, not raised) and
    today's and tomorrow's salts stay in memory, so the next day still has its salt."""
    name = f"t_salts_{os.urandom(6).hex()}"
    with psycopg.connect(server_database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    url = psycopg.conninfo.make_conninfo(server_database_url, dbname=name)
    clock = Clock(NOON)
    keeper = SaltKeeper(os.urandom(32), clock=clock, timeout_s=3)
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        url, min_size=1, max_size=1, timeout=1, kwargs={"autocommit": True}, open=False
    )
    await pool.open(wait=True)
    try:
        await keeper.refresh(pool)
        tomorrow = keeper.salt_for(DAY + timedelta(days=1))
        with psycopg.connect(server_database_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        assert not await keeper.refresh_logged(pool)
        clock.now = NOON + timedelta(days=1)
        assert not await keeper.refresh_logged(pool)
        assert keeper.salt_for(clock.now.date()) == tomorrow
    finally:
        await pool.close()
        with psycopg.connect(server_database_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
