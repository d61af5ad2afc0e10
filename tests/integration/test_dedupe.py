"""The idempotency key against a real PostgreSQL: an event_id counts once per site, through the
consumer's own statements, and an earlier database is re-keyed on the next start."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import psycopg
import pytest

from consumer.migrate import main as migrate_main
from consumer.schema import apply_schema
from tests.support import assert_rollups_match_raw_rows, make_record, scalar, unversion, write_batch

pytestmark = pytest.mark.postgres

PRIMARY_KEY = """
SELECT array_agg(a.attname::text ORDER BY k.ord)
FROM pg_constraint c
CROSS JOIN unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
WHERE c.conrelid = %s::regclass AND c.contype = 'p'
"""


def page_views(database_url: str, site: str) -> int:
    return int(
        scalar(
            database_url,
            "SELECT coalesce(sum(page_views), 0) FROM daily_stats WHERE site_id = %s",
            (site,),
        )
    )


async def test_the_same_event_id_counts_once_per_site(database_url: str) -> None:
    shared = uuid.uuid4()
    # One emitter reusing another site's id must not suppress that site's event...
    await write_batch(
        database_url,
        [make_record(event_id=shared, site_id="a"), make_record(event_id=shared, site_id="b")],
        partition=0,
    )
    # ...while a retry of either, in a later batch or twice in one, counts nothing more.
    await write_batch(
        database_url,
        [
            make_record(event_id=shared, site_id="a"),
            make_record(event_id=shared, site_id="b"),
            make_record(event_id=shared, site_id="b"),
        ],
        partition=1,
    )
    assert page_views(database_url, "a") == 1
    assert page_views(database_url, "b") == 1
    assert scalar(database_url, "SELECT count(*) FROM events WHERE event_id = %s", (shared,)) == 2
    assert_rollups_match_raw_rows(database_url)


def make_previous_key(database_url: str) -> None:
    """The events table as earlier schemas keyed it: (day, event_id), and no recorded version."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE events DROP CONSTRAINT events_pkey")
        conn.execute("ALTER TABLE events ADD PRIMARY KEY (day, event_id)")
        unversion(conn)  # earlier releases recorded no version


async def test_schema_re_keys_a_database_of_the_previous_layout(database_url: str) -> None:
    shared = uuid.uuid4()
    days = [datetime(2025, 11, d, 12, tzinfo=UTC) for d in (11, 12)]
    await write_batch(
        database_url, [make_record(event_id=shared, site_id="a", timestamp=ts) for ts in days]
    )
    make_previous_key(database_url)
    assert scalar(database_url, PRIMARY_KEY, ("events",)) == ["day", "event_id"]

    await apply_schema(database_url)
    await apply_schema(database_url)  # and again: nothing left to do

    assert scalar(database_url, PRIMARY_KEY, ("events",)) == ["day", "event_id", "site_id"]
    for partition in ("events_20251111", "events_20251112"):
        assert scalar(database_url, PRIMARY_KEY, (partition,)) == ["day", "event_id", "site_id"]
    assert scalar(database_url, "SELECT count(*) FROM events") == 2  # rows kept
    await write_batch(
        database_url, [make_record(event_id=shared, site_id="b", timestamp=days[0])], partition=1
    )
    assert page_views(database_url, "b") == 1
    assert_rollups_match_raw_rows(database_url)


async def test_re_keying_gives_up_on_a_busy_table_and_says_what_to_do(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    await write_batch(database_url, [make_record()])
    make_previous_key(database_url)
    with psycopg.connect(database_url) as reader:
        # A reader in an open transaction (a long stats query, say) holds its lock on events.
        reader.execute("SELECT count(*) FROM events")
        with pytest.raises(psycopg.errors.LockNotAvailable) as raised:
            await apply_schema(database_url)
        assert "nothing was changed" in str(raised.value)
        assert "python -m consumer.migrate" in (raised.value.diag.message_hint or "")

        monkeypatch.setenv("DATABASE_URL", database_url)
        assert await asyncio.to_thread(migrate_main, []) == 1  # the command, as operators run it
        said = capsys.readouterr().err
        assert "could not lock table events" in said
        assert "Apply the schema again at a quieter moment" in said
    assert scalar(database_url, PRIMARY_KEY, ("events",)) == ["day", "event_id"]
    await apply_schema(database_url)  # once the reader is gone
    assert scalar(database_url, PRIMARY_KEY, ("events",)) == ["day", "event_id", "site_id"]
