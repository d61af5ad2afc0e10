"""Property, end to end: whatever the API accepts is stored or dead-lettered, never stalled.

Hypothesis draws batches of events at the edges of validation (text of every Unicode plane
sized to its limit in UTF-8 bytes, timestamps at both ends of the window, event ids shared
across sites and repeated within one) and posts them through the real API. The drawing is
derandomized and fixed in size (EXAMPLES batches of at most BATCH events, at most 4,800 events a
run: 611 events in 120 batches today), so the CI budget stays bounded and a failure replays.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.settings import ConsumerSettings
from tests.e2e.hostile import Client, new_site

pytestmark = pytest.mark.e2e

EXAMPLES = 120
BATCH = 40
WINDOW_DAYS = 31  # the hostile fixture's MAX_PAST_DAYS

# Every character PostgreSQL text and UTF-8 can hold: no NUL, no lone surrogate.
_CHARACTERS = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")


def _fit(text: str, limit_bytes: int) -> str:
    """The longest prefix of `text` within `limit_bytes` of UTF-8."""
    encoded = text.encode()[:limit_bytes]
    return encoded.decode(errors="ignore") or "x"


def _text(limit_bytes: int) -> st.SearchStrategy[str]:
    """Short text, or text filled up to the limit with one drawn character (all widths)."""
    short = st.text(_CHARACTERS, min_size=1, max_size=20).map(lambda s: _fit(s, limit_bytes))
    full = _CHARACTERS.map(lambda c: _fit(c * limit_bytes, limit_bytes))
    return st.one_of(short, full)


def _timestamp(now: dt.datetime) -> st.SearchStrategy[str]:
    first_day = dt.datetime.combine(
        now.date() - dt.timedelta(days=WINDOW_DAYS - 1), dt.time(), tzinfo=dt.UTC
    )
    edges = st.sampled_from([first_day + dt.timedelta(minutes=5), now, now + dt.timedelta(hours=3)])
    inside = st.integers(min_value=60, max_value=(WINDOW_DAYS - 1) * 86_400).map(
        lambda s: now - dt.timedelta(seconds=s)
    )
    return st.one_of(edges, inside).map(lambda t: t.isoformat())


def _events(now: dt.datetime, sites: list[str], ids: list[str]) -> st.SearchStrategy[Any]:
    event = st.fixed_dictionaries(
        {
            "site_id": st.one_of(st.sampled_from(sites), _text(128)),
            "event_type": st.one_of(st.just("page_view"), _text(64)),
            "path": _text(2048),
            "user_id": _text(256),
            "timestamp": _timestamp(now),
        },
        optional={"event_id": st.sampled_from(ids)},
    )
    return st.lists(event, min_size=1, max_size=BATCH)


def draw_batches(now: dt.datetime) -> list[list[dict[str, Any]]]:
    sites = [new_site() for _ in range(3)]
    ids = [str(uuid.uuid4()) for _ in range(5)]
    batches: list[list[dict[str, Any]]] = []

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(_events(now, sites, ids))
    def collect(batch: list[dict[str, Any]]) -> None:
        batches.append(batch)

    collect()
    return batches


async def test_everything_accepted_is_stored_or_dead_lettered(
    hostile: tuple[Client, ConsumerSettings],
) -> None:
    client, _ = hostile
    batches = draw_batches(dt.datetime.now(dt.UTC))
    drawn = accepted = 0
    for batch in batches:
        drawn += len(batch)
        response = await client.post("/events", json=batch)
        assert response.status_code in (202, 400), response.text
        if response.status_code == 202:
            accepted += response.json()["accepted"]
    # Every drawn event is valid: a refusal here means the edge and the store disagree.
    assert accepted == drawn
    # The fixture then proves each of them stored or dead-lettered, and a fresh event counted.
