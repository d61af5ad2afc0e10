"""What one site can add to daily_props is bounded per (site, UTC day, event type): 30 keys,
and 100 values per key besides '(other)' (consumer/rollups/dimensions.sql). Past the caps
the counts still add up: a key's kept values and its '(other)' row hold every event that
carries the key, and a key not kept stays in events.props."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
import pytest

from consumer.rebuild import rebuild_rollups
from core.events import EventRecord
from tests.support import assert_rollups_match_raw_rows, make_record, write_batch

pytestmark = pytest.mark.postgres

MAX_KEYS = 30  # per (site, day, event type)
MAX_VALUES = 100  # per key, besides '(other)'
DAY = dt.date(2025, 11, 12)


def rows(database_url: str, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(query, params).fetchall()


def colors(values: list[str], user: str = "u") -> list[EventRecord]:
    return [
        make_record(event_type="click", user_id=f"{user}{i}", props={"color": value})
        for i, value in enumerate(values)
    ]


def kept_values(database_url: str, key: str = "color") -> dict[str, int]:
    found = rows(database_url, "SELECT value, events FROM daily_props WHERE key = %s", (key,))
    return {value: events for value, events in found}


def events_with(database_url: str, key: str) -> int:
    return int(rows(database_url, "SELECT count(*) FROM events WHERE props ? %s", (key,))[0][0])


async def test_values_past_the_cap_are_counted_under_other_and_add_up(
    database_url: str,
) -> None:
    # 120 new values in one batch, one of them twice: the 100 with the most events (then by
    # name) are kept, the 20 others go to '(other)'.
    first = [f"v{i:03d}" for i in range(120)] + ["v119"]
    await write_batch(database_url, colors(first))
    kept = kept_values(database_url)
    assert len(kept) == MAX_VALUES + 1
    assert kept["v119"] == 2 and "v000" in kept and "v098" in kept and "v099" not in kept
    assert kept["(other)"] == 20
    # A full key: a kept value keeps counting, a new value (and a literal '(other)') does not
    # take a place.
    await write_batch(database_url, colors(["v000", "v200", "(other)"], user="w"), partition=1)
    kept = kept_values(database_url)
    assert len(kept) == MAX_VALUES + 1
    assert (kept["v000"], kept["(other)"], "v200" in kept) == (2, 22, False)
    assert sum(kept.values()) == events_with(database_url, "color") == 124
    assert_rollups_match_raw_rows(database_url)


async def test_a_later_batch_fills_only_the_room_left(database_url: str) -> None:
    await write_batch(database_url, colors([f"a{i:02d}" for i in range(60)]))
    await write_batch(database_url, colors([f"b{i:02d}" for i in range(60)], "w"), partition=1)
    kept = kept_values(database_url)
    assert len(kept) - 1 == MAX_VALUES
    assert sorted(v for v in kept if v.startswith("b"))[-1] == "b39"
    assert kept["(other)"] == 20
    assert sum(kept.values()) == events_with(database_url, "color")
    assert_rollups_match_raw_rows(database_url)


async def test_keys_past_the_cap_are_not_rolled_up_but_stay_in_the_events(
    database_url: str,
) -> None:
    def event(keys: range, user: str, event_type: str = "signup") -> EventRecord:
        return make_record(
            event_type=event_type, user_id=user, props={f"k{k:02d}": "x" for k in keys}
        )

    # 35 keys in one batch (at most 10 an event, as the edge allows); k00-k09 twice.
    spread = [range(0, 10), range(10, 20), range(20, 30), range(30, 35), range(0, 10)]
    await write_batch(database_url, [event(keys, f"u{i}") for i, keys in enumerate(spread)])
    # A full group: a kept key keeps counting, a new key is not rolled up; another event
    # type has its own room.
    later = [event(range(0, 1), "w1"), event(range(40, 41), "w2"), event(range(40, 41), "w3", "x")]
    await write_batch(database_url, later, partition=1)

    keys = rows(
        database_url,
        "SELECT event_type, key, sum(events)::int FROM daily_props GROUP BY 1, 2 ORDER BY 1, 2",
    )
    signup = {key: events for event_type, key, events in keys if event_type == "signup"}
    assert len(signup) == MAX_KEYS
    assert sorted(signup)[-1] == "k29" and signup["k00"] == 3 and signup["k10"] == 1
    assert [key for event_type, key, _ in keys if event_type == "x"] == ["k40"]
    assert events_with(database_url, "k30") == 1 and events_with(database_url, "k40") == 2
    assert_rollups_match_raw_rows(database_url)


async def test_a_rebuild_keeps_the_keys_and_values_with_the_most_events(
    database_url: str,
) -> None:
    # Live, the first 100 values were kept; z-values arrive later but outnumber them.
    await write_batch(database_url, colors([f"v{i:03d}" for i in range(100)]))
    await write_batch(database_url, colors(["zz"] * 5, "w"), partition=1)
    assert kept_values(database_url)["(other)"] == 5

    await rebuild_rollups(database_url, DAY, DAY)
    kept = kept_values(database_url)
    assert len(kept) == MAX_VALUES + 1
    assert (kept["zz"], kept["(other)"], "v099" in kept) == (5, 1, False)
    assert sum(kept.values()) == events_with(database_url, "color")
    assert_rollups_match_raw_rows(database_url)
