"""Visits built by the real consumer from Kafka into PostgreSQL, from scripted timelines:
idle gaps either side of the timeout, a visit across midnight, late and out-of-order events,
one visitor on two sites, and a full replay; then what retention and rebuild do to visits.
Each timeline ends with the registry's check (the visit rollups equal a recount from
`visits`) and, where events came in order, `visits` equal to a plain sessionization of the
stored events."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from consumer.rebuild import rebuild_rollups
from consumer.retention import apply_retention
from consumer.sessions_store import LOAD_LATE_STORED
from consumer.settings import ConsumerSettings
from core.events import EventRecord
from tests.conftest import TEST_PARTITIONS
from tests.support import (
    assert_rollups_match_raw_rows,
    assert_visits_match_events,
    make_record,
    produce_events,
    running_consumer,
    stored_event_count,
    wait_for,
    write_batch,
)

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

T0 = dt.datetime(2025, 11, 12, 12, 0, tzinfo=dt.UTC)
TIMEOUT_S = 1800


def event(seconds: float, **changes: Any) -> EventRecord:
    at = T0 + dt.timedelta(seconds=seconds)
    return make_record(timestamp=at, received_at=at, **changes)


async def consume(settings: ConsumerSettings, records: list[EventRecord]) -> None:
    """Produces the records in order, then runs a consumer until every one is stored or
    found a duplicate (the offsets reach the end of what was produced)."""
    await produce_events(settings, records)
    url = settings.database_url
    produced = await produced_messages(settings)

    def caught_up() -> bool:
        with psycopg.connect(url) as conn:
            row = conn.execute(
                "SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets WHERE group_id = %s",
                (settings.group_id,),
            ).fetchone()
        return row is not None and int(row[0]) >= produced

    async with running_consumer(settings):
        await wait_for(caught_up, timeout_s=30, what=f"{produced} messages to be consumed")


async def produced_messages(settings: ConsumerSettings) -> int:
    reader = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await reader.start()
    try:
        parts = [TopicPartition(settings.events_topic, p) for p in range(TEST_PARTITIONS)]
        ends = await reader.end_offsets(parts)
    finally:
        await reader.stop()
    return sum(int(v) for v in ends.values())


def visits(url: str, **where: str) -> list[tuple[Any, ...]]:
    """(site, visitor, start, last, day, entry, exit, page views, events, duration), by start."""
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT site_id, visitor, started_at, last_at, day, entry_page, exit_page,"
            " page_views, events, floor(extract(epoch FROM last_at - started_at))::int"
            " FROM visits WHERE visitor = coalesce(%(visitor)s, visitor)"
            " ORDER BY site_id, visitor, started_at",
            {"visitor": where.get("visitor")},
        ).fetchall()


def rows(url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query).fetchall()


def visits_by_value(url: str, dimension: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        found = conn.execute(
            "SELECT value, visits FROM daily_visit_dimensions WHERE dimension = %s", (dimension,)
        ).fetchall()
    return {value: visits for value, visits in found}


async def test_a_gap_up_to_the_timeout_continues_a_visit_and_a_longer_one_starts_another(
    consumer_settings: ConsumerSettings,
) -> None:
    url = consumer_settings.database_url
    timeline = [
        event(0, path="/a"),
        event(TIMEOUT_S - 1, path="/b"),  # just under: the same visit
        event(2 * TIMEOUT_S - 1, path="/c", event_type="click"),  # exactly the timeout: same
        event(3 * TIMEOUT_S, path="/d"),  # just over: a new visit, a bounce
    ]
    # Two consumer runs: the visit is continued from what the first stored.
    await consume(consumer_settings, timeline[:2])
    await consume(consumer_settings, timeline[2:])
    found = visits(url)
    assert [(v[5], v[6], v[7], v[8], v[9]) for v in found] == [
        ("/a", "/c", 2, 3, 2 * TIMEOUT_S - 1),
        ("/d", "/d", 1, 1, 0),
    ]
    assert rows(url, "SELECT visits, bounces, duration, page_views FROM quarter_hour_visits") == [
        (1, 0, 2 * TIMEOUT_S - 1, 2),
        (1, 1, 0, 1),
    ]
    assert_visits_match_events(url, TIMEOUT_S)
    assert_rollups_match_raw_rows(url)


async def test_a_visit_across_midnight_counts_on_the_day_it_starts(
    consumer_settings: ConsumerSettings,
) -> None:
    url = consumer_settings.database_url
    midnight = dt.datetime(2025, 11, 13, tzinfo=dt.UTC)
    before = (midnight - T0).total_seconds()
    await consume(
        consumer_settings,
        [event(before - 600, path="/late-night"), event(before + 600, path="/after-midnight")],
    )
    (visit,) = visits(url)
    assert visit[4] == dt.date(2025, 11, 12) and visit[9] == 1200
    days = rows(url, "SELECT DISTINCT day FROM daily_visit_dimensions")
    assert days == [(dt.date(2025, 11, 12),)]
    assert rows(
        url,
        "SELECT value, visits FROM daily_visit_dimensions WHERE dimension = 'exit_page'"
        " AND visits > 0",
    ) == [("/after-midnight", 1)]
    assert_visits_match_events(url, TIMEOUT_S)
    assert_rollups_match_raw_rows(url)


async def test_late_events_join_the_visit_they_precede_or_start_their_own(
    consumer_settings: ConsumerSettings,
) -> None:
    url = consumer_settings.database_url
    await consume(consumer_settings, [event(0, path="/first"), event(60, path="/second")])
    source = {"referrer_host": "news.example", "referrer_source": "News", "utm_source": "news"}
    await consume(
        consumer_settings,
        [
            event(-TIMEOUT_S + 10, path="/earlier", **source),  # within the timeout before
            event(-3 * TIMEOUT_S, path="/long-before"),  # older: a visit of its own
            event(30, path="/between", event_type="click"),  # inside: joins, ends unchanged
        ],
    )
    found = visits(url)
    assert [(v[5], v[6], v[7], v[8]) for v in found] == [
        ("/long-before", "/long-before", 1, 1),
        ("/earlier", "/second", 3, 4),
    ]
    assert found[1][2] == T0 + dt.timedelta(seconds=-TIMEOUT_S + 10)
    # The visit's source moved with its start; the old entry page keeps no visit.
    assert rows(
        url,
        "SELECT dimension, value, visits FROM daily_visit_dimensions"
        " WHERE dimension IN ('source', 'entry_page') AND visits > 0 ORDER BY 1, 2",
    ) == [
        ("entry_page", "/earlier", 1),
        ("entry_page", "/long-before", 1),
        ("source", "(not set)", 1),
        ("source", "News", 1),
    ]
    assert_rollups_match_raw_rows(url)


async def test_a_late_event_reads_only_the_visits_next_to_it(
    consumer_settings: ConsumerSettings,
) -> None:
    """A visitor with many stored visits between a late event and the latest one: the late
    event joins the visit before it, every visit in between is left as it was, and the stored
    visits read for it are the two next to each of the batch's events, not all in reach."""
    url = consumer_settings.database_url
    gap = TIMEOUT_S + 60
    await consume(consumer_settings, [event(k * gap, path=f"/v{k}") for k in range(40)])
    before = visits(url)
    assert len(before) == 40
    await consume(
        consumer_settings,
        # Late: 30 s after the first visit, more than the timeout before the second.
        [event(30, path="/late"), event(40 * gap, path="/next")],
    )
    after = visits(url)
    assert len(after) == 41
    assert after[0][5:9] == ("/v0", "/late", 2, 2)  # the late event ends the first visit
    assert after[1:40] == before[1:40]
    assert after[40][5:9] == ("/next", "/next", 1, 1)
    assert_rollups_match_raw_rows(url)
    with psycopg.connect(url) as conn:
        conn.execute(
            "CREATE TEMP TABLE visit_events AS SELECT site_id, user_id AS visitor, event_time"
            " FROM events WHERE path IN ('/late', '/next')"
        )
        loaded = conn.execute(
            LOAD_LATE_STORED, {"sites": [after[0][0]], "visitors": [after[0][1]]}
        ).fetchall()
    # Asked now: the visits next to the late event, and the one the in-order event made.
    assert [row[2] for row in loaded] == [after[0][2], after[1][2], after[40][2]]


async def test_the_same_visitor_on_two_sites_makes_two_visits(
    consumer_settings: ConsumerSettings,
) -> None:
    url = consumer_settings.database_url
    await consume(
        consumer_settings,
        [
            event(0, site_id="site-a", user_id="same"),
            event(0, site_id="site-b", user_id="same"),
            event(60, site_id="site-a", user_id="same"),
        ],
    )
    found = visits(url, visitor="same")
    assert [(v[0], v[8]) for v in found] == [("site-a", 2), ("site-b", 1)]
    assert_visits_match_events(url, TIMEOUT_S)
    assert_rollups_match_raw_rows(url)


async def test_a_replay_and_retried_events_count_nothing_twice(
    consumer_settings: ConsumerSettings,
) -> None:
    url = consumer_settings.database_url
    timeline = [event(i * 300, path=f"/{i}", user_id=f"u{i % 3}") for i in range(30)]
    retried = [timeline[4], timeline[17]]  # the same event ids again: client retries
    await consume(consumer_settings, [*timeline[:20], *retried, *timeline[20:]])
    first = visits(url)
    before = rows(url, "SELECT * FROM quarter_hour_visits ORDER BY 1, 2")
    # A new consumer group has no stored offsets: it reads the whole topic again.
    replay = msgspec.structs.replace(consumer_settings, group_id=consumer_settings.group_id + "-r")
    await consume(replay, [])
    assert stored_event_count(url) == 30
    assert visits(url) == first
    assert rows(url, "SELECT * FROM quarter_hour_visits ORDER BY 1, 2") == before
    assert_visits_match_events(url, TIMEOUT_S)
    assert_rollups_match_raw_rows(url)


async def test_retention_deletes_the_visits_of_dropped_days_and_keeps_their_rollups(
    database_url: str,
) -> None:
    old = event(-3 * 86_400, user_id="old")
    recent = event(0, user_id="recent")
    await write_batch(database_url, [old, recent])
    await apply_retention(database_url, 2, T0.date())
    assert [v[1] for v in visits(database_url)] == ["recent"]
    counted = rows(database_url, "SELECT site_id, bucket FROM quarter_hour_visits ORDER BY 2")
    assert [bucket for _, bucket in counted] == [old.timestamp, recent.timestamp]


async def test_a_rebuild_recounts_the_visit_rollups_from_the_visits(database_url: str) -> None:
    day = T0.date()
    # The exit page moves from /a to /b: /a's sketch still counts the visitor until a rebuild.
    await write_batch(database_url, [event(0, path="/a")], 0)
    await write_batch(database_url, [event(60, path="/b")], 1)
    query = (
        "SELECT value, visits, hll_cardinality(visitors)::int FROM daily_visit_dimensions"
        " WHERE dimension = 'exit_page' ORDER BY 1"
    )
    assert rows(database_url, query) == [("/a", 0, 1), ("/b", 1, 1)]
    before = rows(database_url, "SELECT * FROM quarter_hour_visits")
    await rebuild_rollups(database_url, day, day)
    assert rows(database_url, query) == [("/b", 1, 1)]
    assert rows(database_url, "SELECT * FROM quarter_hour_visits") == before
    assert_rollups_match_raw_rows(database_url)


async def test_free_text_values_past_the_daily_cap_count_under_other_and_a_fresh_visit_counts(
    consumer_settings: ConsumerSettings,
) -> None:
    # A flood of visits each with its own campaign and landing page: past the cap (3 here)
    # per site, day and dimension, they count under '(other)', in `visits` too, and the
    # rollups still equal a recount from the visits; a fresh visit after the flood is counted.
    settings = msgspec.structs.replace(consumer_settings, visit_values_per_day=3)
    url = settings.database_url
    flood = [
        event(i, user_id=f"u{i}", path=f"/landing-{i}", utm_campaign=f"c{i}") for i in range(8)
    ]
    # c0 twice (two visitors), so it ranks first among the batch's new values.
    flood.append(event(9, user_id="u-again", path="/landing-0", utm_campaign="c0"))
    await consume(settings, flood)
    campaigns = visits_by_value(url, "utm_campaign")
    assert campaigns == {"c0": 2, "c1": 1, "c2": 1, "(other)": 5}
    entries = rows(
        url, "SELECT count(*) FROM daily_visit_dimensions WHERE dimension = 'entry_page'"
    )
    assert entries == [(4,)]  # 3 pages and '(other)'
    assert rows(url, "SELECT count(*) FROM visits WHERE utm_campaign = '(other)'") == [(5,)]
    assert rows(url, "SELECT count(*) FROM events WHERE utm_campaign LIKE 'c%'") == [(9,)]
    assert_rollups_match_raw_rows(url)
    # A kept value keeps counting, and an extended visit's new exit page past the cap goes to
    # '(other)' too; its first visit's rows are moved consistently.
    await consume(
        settings,
        [
            event(60, user_id="u1", path="/exit-new"),
            event(61, user_id="fresh", path="/landing-1", utm_campaign="c1"),
        ],
    )
    campaigns = visits_by_value(url, "utm_campaign")
    assert campaigns == {"c0": 2, "c1": 2, "c2": 1, "(other)": 5}
    assert rows(url, "SELECT exit_page, page_views FROM visits WHERE visitor = 'u1'") == [
        ("(other)", 2)
    ]
    assert_rollups_match_raw_rows(url)


async def test_a_literal_not_set_value_counts_with_the_missing_ones_and_the_batch_is_stored(
    consumer_settings: ConsumerSettings,
) -> None:
    # A public hit can carry the text '(not set)', the name a missing value is counted under:
    # it is counted with the visits that have no value, rather than as a second row of the
    # same key (which an upsert refuses, stalling the partition). Past a full cap it is
    # neither refused nor counted as a value.
    settings = msgspec.structs.replace(consumer_settings, visit_values_per_day=1)
    url = settings.database_url
    await consume(
        settings,
        [
            event(0, user_id="literal", utm_campaign="(not set)", browser="(not set)"),
            event(1, user_id="missing"),
            event(2, user_id="valued", utm_campaign="spring", browser="Firefox"),
            event(3, user_id="refused", utm_campaign="autumn"),
        ],
    )
    campaigns = visits_by_value(url, "utm_campaign")
    # Both new values had one visit: the first by name took the one place.
    assert campaigns == {"(not set)": 2, "autumn": 1, "(other)": 1}
    browsers = dict(
        rows(url, "SELECT value, events FROM daily_dimensions WHERE dimension = 'browser'")
    )
    assert browsers["(not set)"] == 3
    assert_rollups_match_raw_rows(url)
    await consume(settings, [event(60, user_id="fresh", path="/after")])
    assert rows(url, "SELECT count(*) FROM visits") == [(5,)]
    assert_rollups_match_raw_rows(url)


async def test_a_flood_of_new_values_past_the_cap_is_stored_and_a_fresh_visit_counts(
    consumer_settings: ConsumerSettings,
) -> None:
    # Thousands of values refused in one batch: each visit's values are looked up among them
    # (not scanned once per visit), the batch is stored, the groups stay at the cap.
    settings = msgspec.structs.replace(consumer_settings, visit_values_per_day=2)
    url = settings.database_url
    flood = [
        event(
            i / 10,
            user_id=f"f{i}",
            path=f"/p/{i}",
            utm_campaign=f"c{i}",
            referrer_host=f"r{i}.example.org",
        )
        for i in range(2000)
    ]
    await consume(settings, [*flood, event(300, user_id="fresh", path="/p/0", utm_campaign="c0")])
    kept = rows(
        url,
        "SELECT dimension, count(*) FILTER (WHERE value NOT IN ('(other)', '(not set)')),"
        " sum(visits) FILTER (WHERE value = '(other)') FROM daily_visit_dimensions"
        " WHERE dimension IN ('entry_page', 'utm_campaign', 'referrer', 'source')"
        " GROUP BY 1 ORDER BY 1",
    )
    assert [(dimension, values) for dimension, values, _ in kept] == [
        ("entry_page", 2),
        ("referrer", 2),
        ("source", 2),
        ("utm_campaign", 2),
    ]
    assert all(other >= 1997 for _, _, other in kept)
    assert rows(url, "SELECT count(*) FROM visits") == [(2001,)]
    assert_rollups_match_raw_rows(url)


async def test_the_largest_cap_reaches_postgresql_and_a_fresh_visit_counts(
    consumer_settings: ConsumerSettings,
) -> None:
    # VISIT_VALUES_PER_DAY at its maximum goes into the cap statement's LIMIT and room
    # arithmetic as it is: nothing overflows, every value is kept, and a later visit counts.
    settings = msgspec.structs.replace(consumer_settings, visit_values_per_day=1_000_000)
    url = settings.database_url
    await consume(settings, [event(i, user_id=f"u{i}", utm_campaign=f"c{i}") for i in range(3)])
    await consume(settings, [event(60, user_id="fresh", utm_campaign="c0")])
    assert visits_by_value(url, "utm_campaign") == {"c0": 2, "c1": 1, "c2": 1}
    assert_rollups_match_raw_rows(url)
