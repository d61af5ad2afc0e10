"""stats_days.cover: a range as whole UTC months, plus and minus days and spans, must count
every instant of the range exactly once and nothing else. Checked per 15-minute bucket."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from ingest import stats_days

QUARTER = dt.timedelta(minutes=15)
ZONES = ("UTC", "Europe/Berlin", "Asia/Kathmandu", "America/St_Johns", "Asia/Kolkata")


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0), dt.UTC)


def _weights(cover: stats_days.Cover, low: dt.datetime, high: dt.datetime) -> list[int]:
    """How many times the cover counts each 15-minute bucket of [low, high)."""
    spans: list[tuple[dt.datetime, dt.datetime, int]] = []
    if cover.has_months:
        spans.append((_midnight(cover.month_from), _midnight(cover.month_to), 1))
    spans += [(_midnight(a), _midnight(b), 1) for a, b in cover.add_days]
    spans += [(_midnight(a), _midnight(b), -1) for a, b in cover.take_days]
    spans += [(a, b, 1) for a, b in cover.add_spans]
    spans += [(a, b, -1) for a, b in cover.take_spans]
    weights = []
    bucket = low
    while bucket < high:
        weights.append(sum(sign for a, b, sign in spans if a <= bucket < b))
        bucket += QUARTER
    return weights


def _check(first: dt.date, last: dt.date, zone: str) -> stats_days.Cover | None:
    r = stats_days.make_range(first, last, zone)
    found = stats_days.cover(r.start, r.end)
    if found is None:
        assert not stats_days.split(r.start, r.end).has_days
        return None
    low = _midnight(first.replace(day=1)) - dt.timedelta(days=40)
    high = _midnight(last) + dt.timedelta(days=40)
    expected = []
    bucket = low
    while bucket < high:
        expected.append(1 if r.start <= bucket < r.end else 0)
        bucket += QUARTER
    assert _weights(found, low, high) == expected
    return found


@pytest.mark.parametrize("zone", ZONES)
def test_a_local_month_is_the_utc_month_and_at_most_half_a_day_either_side(zone: str) -> None:
    found = _check(dt.date(2025, 11, 1), dt.date(2025, 11, 30), zone)
    assert found is not None
    assert (found.month_from, found.month_to) == (dt.date(2025, 11, 1), dt.date(2025, 12, 1))
    assert found.add_days == found.take_days == ()
    for a, b in found.add_spans + found.take_spans:
        assert b - a <= dt.timedelta(hours=12)


def test_a_rolling_30_days_reads_a_month_and_the_fewest_days_around_it() -> None:
    found = _check(dt.date(2025, 11, 7), dt.date(2025, 12, 6), "UTC")
    assert found is not None
    assert found.add_days == ((dt.date(2025, 12, 1), dt.date(2025, 12, 7)),)
    assert found.take_days == ((dt.date(2025, 11, 1), dt.date(2025, 11, 7)),)


def test_random_ranges_in_every_zone_count_each_instant_once() -> None:
    rng = random.Random(15)
    for _ in range(150):
        first = dt.date(2025, 1, 1) + dt.timedelta(days=rng.randrange(365))
        last = first + dt.timedelta(days=rng.choice((0, 1, 6, 29, 30, 45, 90)))
        _check(first, last, rng.choice(ZONES))


def test_a_day_in_a_zone_that_is_not_utc_holds_no_whole_utc_day() -> None:
    assert _check(dt.date(2025, 11, 12), dt.date(2025, 11, 12), "Asia/Kathmandu") is None


@pytest.mark.parametrize(
    ("zone", "first_day", "last_day"),
    [
        ("UTC", dt.date(2025, 11, 1), dt.date(2025, 11, 30)),
        ("America/New_York", dt.date(2025, 11, 1), dt.date(2025, 12, 1)),  # UTC-4, then -5
        ("Asia/Kathmandu", dt.date(2025, 10, 31), dt.date(2025, 11, 30)),  # UTC+5:45
        ("Pacific/Kiritimati", dt.date(2025, 10, 31), dt.date(2025, 11, 30)),  # UTC+14
    ],
)
def test_the_utc_days_a_range_touches(zone: str, first_day: dt.date, last_day: dt.date) -> None:
    """What a kept answer's version reads (ingest/stats_answers.py): every UTC day holding an
    instant of the range, and no other."""
    r = stats_days.make_range(dt.date(2025, 11, 1), dt.date(2025, 11, 30), zone)
    assert r.utc_days == (first_day, last_day)
