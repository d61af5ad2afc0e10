"""The stats pool's size: the connections it keeps open (warmed before they serve)."""

from ingest.database import make_pool
from ingest.settings import Settings


def test_the_pool_keeps_every_connection_it_may_open() -> None:
    settings = Settings()
    pool = make_pool(settings)
    assert pool.min_size == pool.max_size == settings.db_pool_max_size


def test_a_smaller_pool_keeps_no_more_than_it_may_open() -> None:
    pool = make_pool(Settings(db_pool_max_size=2))
    assert (pool.min_size, pool.max_size) == (2, 2)
    pool = make_pool(Settings(db_pool_min_size=1, db_pool_max_size=4))
    assert (pool.min_size, pool.max_size) == (1, 4)
