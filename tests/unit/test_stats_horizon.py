"""stats_days.readable_end: a range is read to another end only when the instants it adds
lie at or after the horizon (no event is dated there), and only to the next UTC midnight, so
that the range's last UTC day is read whole."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from ingest import stats_days, stats_params

UTC = dt.UTC
NOW = dt.datetime(2025, 11, 12, 12, 0, tzinfo=UTC)
HORIZON = stats_days.data_horizon(NOW, 3600)
ZONES = (
    "UTC",
    "Europe/Berlin",
    "Asia/Kathmandu",
    "Asia/Kolkata",
    "Australia/Eucla",
    "Pacific/Kiritimati",
    "America/New_York",
    "America/St_Johns",
    "Pacific/Pago_Pago",
)


def _edge_time(start: dt.datetime, end: dt.datetime) -> dt.timedelta:
    return sum((b - a for a, b in stats_days.split(start, end).edges), dt.timedelta())


def test_the_horizon_is_max_future_and_the_slack_past_now() -> None:
    ahead = stats_days.data_horizon(NOW, 3600) - NOW
    assert ahead == dt.timedelta(hours=1) + stats_days.HORIZON_SLACK


@pytest.mark.parametrize(
    ("zone", "read_end"),
    [
        # East of UTC, the day ends inside Nov 12 (UTC) after the horizon: the whole UTC day.
        ("Europe/Berlin", "2025-11-13 00:00"),
        ("Asia/Kathmandu", "2025-11-13 00:00"),
        # West of UTC, it ends inside Nov 13: that whole day, which holds nothing yet.
        ("America/New_York", "2025-11-14 00:00"),
        ("Pacific/Pago_Pago", "2025-11-14 00:00"),
        # Kiritimati's today is Nov 13 (10:00 UTC on the 12th to 10:00 on the 13th).
        ("Pacific/Kiritimati", "2025-11-14 00:00"),
    ],
)
def test_today_is_read_to_a_utc_midnight(zone: str, read_end: str) -> None:
    r = stats_params.parse_range({"period": "day", "timezone": zone}, now=NOW, horizon=HORIZON)
    assert r.read_end == dt.datetime.fromisoformat(read_end).replace(tzinfo=UTC)
    assert r.read_end != r.end
    # Fewer instants are read from sub-day rows (every value's quarter hours, say).
    assert _edge_time(r.start, r.read_end) < _edge_time(r.start, r.end)
    # The days the answers are keyed by do not move (ingest/stats_answers.py).
    assert r.utc_days == stats_days.make_range(r.first, r.last, zone).utc_days


def test_utc_and_past_ranges_are_read_to_their_end() -> None:
    today = stats_params.parse_range({"period": "30d"}, now=NOW, horizon=HORIZON)
    assert today.read_to is None and today.read_end == today.end
    past = stats_params.parse_range(
        {"period": "day", "date": "2025-11-10", "timezone": "Europe/Berlin"},
        now=NOW,
        horizon=HORIZON,
    )
    assert past.read_to is None
    assert stats_days.make_range(NOW.date(), NOW.date(), "Europe/Berlin").read_to is None


def test_just_before_a_local_midnight_the_end_is_kept() -> None:
    # Kathmandu's Nov 13 starts at 18:15 UTC: an event may still be dated before it.
    late = dt.datetime(2025, 11, 12, 17, 30, tzinfo=UTC)
    r = stats_params.parse_range(
        {"period": "day", "timezone": "Asia/Kathmandu"},
        now=late,
        horizon=stats_days.data_horizon(late, 3600),
    )
    assert r.last == dt.date(2025, 11, 12)
    assert r.read_to is None


def test_random_ranges_change_only_instants_past_the_horizon() -> None:
    rng = random.Random(15)
    for _ in range(3000):
        zone = rng.choice(ZONES)
        now = NOW + dt.timedelta(minutes=rng.randrange(-3 * 24 * 60, 3 * 24 * 60))
        horizon = stats_days.data_horizon(now, rng.choice([0, 60, 3600, 6 * 3600]))
        last = now.date() + dt.timedelta(days=rng.randrange(-3, 3))
        first = last - dt.timedelta(days=rng.randrange(0, 40))
        r = stats_days.make_range(first, last, zone, horizon)
        end = r.read_end
        assert end == r.end or (end.astimezone(UTC).time() == dt.time(0) and end > r.end)
        # What [start, read_end) adds to [start, end) lies past the horizon.
        assert r.end >= horizon or end == r.end
        assert end - r.end < dt.timedelta(days=1)


def test_a_huge_max_future_reads_every_range_to_its_end() -> None:
    horizon = stats_days.data_horizon(NOW, 1e12)  # no overflow
    for zone in ZONES:
        r = stats_params.parse_range({"period": "day", "timezone": zone}, now=NOW, horizon=horizon)
        assert r.read_end == r.end
