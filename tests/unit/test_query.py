"""Parsing the richer stats parameters, and splitting ranges into rollup pieces."""

from __future__ import annotations

import datetime as dt

import pytest

from ingest import stats_days
from ingest import stats_params as query
from ingest.errors import BadRequest

NOW = dt.datetime(2025, 11, 12, 20, 0, tzinfo=dt.UTC)


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("params", "first", "last"),
    [
        ({"period": "day", "date": "2025-11-12"}, "2025-11-12", "2025-11-12"),
        ({"period": "7d", "date": "2025-11-12"}, "2025-11-06", "2025-11-12"),
        ({}, "2025-10-14", "2025-11-12"),  # 30d up to today
        ({"period": "month", "date": "2024-02-10"}, "2024-02-01", "2024-02-29"),
        ({"period": "6mo", "date": "2025-03-15"}, "2024-10-01", "2025-03-31"),
        ({"period": "12mo", "date": "2025-12-31"}, "2025-01-01", "2025-12-31"),
        ({"period": "custom", "date": "2025-10-30,2025-11-02"}, "2025-10-30", "2025-11-02"),
        ({"from": "2025-10-30", "to": "2025-11-02"}, "2025-10-30", "2025-11-02"),
    ],
)
def test_periods(params: dict[str, str], first: str, last: str) -> None:
    r = query.parse_range(params, now=NOW)
    assert (r.first.isoformat(), r.last.isoformat()) == (first, last)


def test_today_is_taken_in_the_requested_zone() -> None:
    # 20:00 UTC on the 12th is already the 13th in Kolkata (+05:30).
    r = query.parse_range({"period": "day", "timezone": "Asia/Kolkata"}, now=NOW)
    assert r.first == dt.date(2025, 11, 13)
    assert r.start == utc("2025-11-12 18:30")
    assert r.end == utc("2025-11-13 18:30")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"period": "day", "date": "2025-02-29"}, "date"),
        ({"period": "day", "date": "2025-13-01"}, "date"),
        ({"period": "fortnight"}, "period"),
        ({"period": "custom", "date": "2025-01-01"}, "date"),
        ({"from": "2025-01-01"}, "to"),
        ({"to": "2025-01-01"}, "from"),
        ({"from": "2025-01-05", "to": "2025-01-01"}, "to"),
        ({"from": "2024-01-01", "to": "2025-01-01"}, "to"),  # 367 days
        ({"timezone": "Not/AZone"}, "timezone"),
        ({"timezone": "../../etc/passwd"}, "timezone"),
    ],
)
def test_bad_ranges_name_the_field(params: dict[str, str], field: str) -> None:
    with pytest.raises(BadRequest) as caught:
        query.parse_range(params, now=NOW)
    assert caught.value.field == field


def test_hourly_timeseries_is_limited_to_a_month() -> None:
    with pytest.raises(BadRequest) as caught:
        query.parse_timeseries({"site_id": "s", "interval": "hour", "period": "6mo"}, now=NOW)
    assert caught.value.field == "period"
    ok = query.parse_timeseries({"site_id": "s", "interval": "hour", "period": "7d"}, now=NOW)
    assert ok.interval == "hour"


def test_filters_metrics_and_paging() -> None:
    request = query.parse_breakdown(
        {
            "site_id": "s",
            "property": "event:name",
            "filters": "event:page==/a b;event:name!=click",
            "metrics": "visitors,events,visitors",
            "limit": "5",
            "page": "3",
        },
        now=NOW,
    )
    assert request.dimension == "event_type"
    assert request.stats.filters == (
        query.Filter("path", False, "/a b"),
        query.Filter("event_type", True, "click"),
    )
    assert request.stats.metrics == ("visitors", "events")
    assert (request.limit, request.page) == (5, 3)
    for bad in ({"limit": "1001"}, {"page": "0"}, {"limit": "-1"}, {"property": "x"}):
        with pytest.raises(BadRequest) as caught:
            query.parse_breakdown({"site_id": "s", **bad}, now=NOW)
        assert caught.value.field == next(iter(bad))


@pytest.mark.parametrize(
    ("zone", "day", "start", "end"),
    [
        ("UTC", "2025-11-12", "2025-11-12 00:00", "2025-11-13 00:00"),
        ("Asia/Kolkata", "2025-11-12", "2025-11-11 18:30", "2025-11-12 18:30"),
        ("Asia/Kathmandu", "2025-11-12", "2025-11-11 18:15", "2025-11-12 18:15"),
        ("Australia/Eucla", "2025-11-12", "2025-11-11 15:15", "2025-11-12 15:15"),
        ("America/St_Johns", "2025-11-12", "2025-11-12 03:30", "2025-11-13 03:30"),
        # The day clocks go back in New York has 25 hours.
        ("America/New_York", "2025-11-02", "2025-11-02 04:00", "2025-11-03 05:00"),
        # Chile moves its clocks at midnight: 2025-09-07 starts at 01:00 local (-03).
        ("America/Santiago", "2025-09-07", "2025-09-07 04:00", "2025-09-08 03:00"),
    ],
)
def test_local_days_as_utc_instants(zone: str, day: str, start: str, end: str) -> None:
    d = dt.date.fromisoformat(day)
    r = stats_days.make_range(d, d, zone)
    assert (r.start, r.end) == (utc(start), utc(end))


def test_split_into_whole_days_and_edges() -> None:
    p = stats_days.split(utc("2025-10-31 18:15"), utc("2025-11-30 18:15"))
    assert (p.day_from, p.day_to) == (dt.date(2025, 11, 1), dt.date(2025, 11, 30))
    assert p.edges == (
        (utc("2025-10-31 18:15"), utc("2025-11-01 00:00")),
        (utc("2025-11-30 00:00"), utc("2025-11-30 18:15")),
    )
    one = stats_days.split(utc("2025-11-11 18:30"), utc("2025-11-12 18:30"))
    assert one.day_from == one.day_to
    assert one.edges == ((utc("2025-11-11 18:30"), utc("2025-11-12 18:30")),)
    whole = stats_days.split(utc("2025-11-01 00:00"), utc("2025-12-01 00:00"))
    assert (whole.day_from, whole.day_to, whole.edges) == (
        dt.date(2025, 11, 1),
        dt.date(2025, 12, 1),
        (),
    )


def test_utc_alignment_follows_daylight_saving() -> None:
    winter = stats_days.make_range(dt.date(2025, 1, 1), dt.date(2025, 1, 31), "Europe/London")
    assert winter.utc_aligned
    summer = stats_days.make_range(dt.date(2025, 7, 1), dt.date(2025, 7, 1), "Europe/London")
    assert not summer.utc_aligned


@pytest.mark.parametrize(
    ("zone", "first", "last", "hours"),
    [
        ("UTC", "2025-11-12", "2025-11-12", True),
        ("Europe/Berlin", "2025-10-25", "2025-10-27", True),  # across the end of summer time
        ("Asia/Kolkata", "2025-11-12", "2025-11-12", False),
        ("America/St_Johns", "2025-11-12", "2025-11-12", False),
        ("Australia/Lord_Howe", "2025-10-04", "2025-10-06", False),  # half-hour summer time
    ],
)
def test_hour_alignment(zone: str, first: str, last: str, hours: bool) -> None:
    days = stats_days.make_range(dt.date.fromisoformat(first), dt.date.fromisoformat(last), zone)
    assert days.hour_aligned is hours
