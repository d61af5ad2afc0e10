"""Each event's context (browser, OS, device, country, referrer, UTM values, properties) is
stored with it and rolled up by dimension, exactly once, like every other count."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest

from tests.support import assert_rollups_match_raw_rows, make_record, write_batch

pytestmark = pytest.mark.postgres

DESKTOP = {"browser": "Firefox", "os": "Ubuntu", "device": "desktop", "country": "NL"}
PHONE = {"browser": "Mobile Safari", "os": "iOS", "device": "mobile", "country": "US"}


def rows(database_url: str, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(query).fetchall()


async def test_context_is_stored_and_counted_by_dimension(database_url: str) -> None:
    records = [
        make_record(user_id="a", **DESKTOP, utm_source="news", referrer_host="example.org"),
        make_record(user_id="a", path="/pricing", **DESKTOP),
        make_record(user_id="b", **PHONE),
        make_record(user_id="c"),  # from an earlier API: no context
        make_record(
            user_id="b", event_type="signup", **PHONE, props={"plan": "pro", "trial": "no"}
        ),
    ]
    await write_batch(database_url, records)
    await write_batch(database_url, records, partition=1)  # a replay: counted once

    stored = rows(
        database_url,
        "SELECT browser, country, utm_source, referrer_host, props FROM events "
        "WHERE user_id = 'a' AND path = '/'",
    )
    assert stored == [("Firefox", "NL", "news", "example.org", None)]
    by_device = rows(
        database_url,
        "SELECT value, page_views, events, hll_cardinality(visitors)::int FROM daily_dimensions "
        "WHERE dimension = 'device' ORDER BY value",
    )
    assert by_device == [("(not set)", 1, 1, 1), ("desktop", 2, 2, 1), ("mobile", 1, 2, 1)]
    props = rows(
        database_url,
        "SELECT event_type, key, value, events FROM daily_props ORDER BY key",
    )
    assert props == [("signup", "plan", "pro", 1), ("signup", "trial", "no", 1)]
    assert_rollups_match_raw_rows(database_url)


async def test_a_breakdown_adds_up_to_the_totals_on_every_day(database_url: str) -> None:
    days = [datetime(2025, 11, d, 12, tzinfo=UTC) for d in (11, 12)]
    await write_batch(
        database_url,
        [
            make_record(timestamp=t, received_at=t, user_id=f"u{i}", **PHONE)
            for i, t in enumerate(days)
        ]
        + [make_record(timestamp=days[1], received_at=days[1], event_type="click")],
    )
    mismatched = rows(
        database_url,
        "SELECT s.day, d.dimension FROM daily_stats s JOIN daily_dimensions d USING (site_id, day) "
        "GROUP BY s.day, d.dimension, s.page_views, s.events "
        "HAVING sum(d.page_views) <> s.page_views OR sum(d.events) <> s.events",
    )
    assert mismatched == []
    assert_rollups_match_raw_rows(database_url)
