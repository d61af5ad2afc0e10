"""The stats pool after PostgreSQL lost its connections (a restart, a failover, an idle
connection cut): no question fails on a dead kept connection, and the pool fills again."""

import asyncio

import psycopg
import pytest

from ingest.database import keep_pool_filled, make_pool
from ingest.settings import Settings

pytestmark = pytest.mark.postgres


API_BACKENDS = (
    "FROM pg_stat_activity "
    "WHERE datname = current_database() AND application_name = 'analytics-api'"
)


def _terminate_api_backends(database_url: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(f"SELECT pg_terminate_backend(pid) {API_BACKENDS}").fetchall()
    return len(rows)


async def test_every_question_after_a_check_of_the_dead_connections_is_answered(
    database_url: str,
) -> None:
    settings = Settings(database_url=database_url, db_pool_max_size=4)
    async with make_pool(settings) as pool:
        await pool.wait(timeout=10)
        assert _terminate_api_backends(database_url) == 4
        await pool.check()  # what keep_pool_filled does every POOL_CHECK_INTERVAL_S

        async def ask() -> int:
            async with pool.connection() as conn:
                row = await (await conn.execute("SELECT 1")).fetchone()
                return row[0] if row else 0

        assert await asyncio.gather(*(ask() for _ in range(4))) == [1, 1, 1, 1]


async def test_the_pool_fills_again_without_a_question(database_url: str) -> None:
    settings = Settings(database_url=database_url, db_pool_max_size=3)
    async with make_pool(settings) as pool:
        await pool.wait(timeout=10)
        assert _terminate_api_backends(database_url) == 3
        checking = asyncio.create_task(keep_pool_filled(pool, interval_s=0.05))
        try:
            for _ in range(200):  # nothing is asked meanwhile
                if _api_backends(database_url) == 3 and pool.get_stats()["pool_available"] == 3:
                    break
                await asyncio.sleep(0.05)
            assert _api_backends(database_url) == 3
            assert pool.get_stats()["pool_available"] == 3
        finally:
            checking.cancel()


def _api_backends(database_url: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(f"SELECT count(*) {API_BACKENDS}").fetchone()
    return int(row[0]) if row else 0
