"""Parsing the richer stats parameters, splitting ranges into rollup pieces, building SQL."""

from __future__ import annotations

import datetime as dt

import pytest

from ingest import query, query_local, query_sql
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
    r = query.make_range(d, d, zone)
    assert (r.start, r.end) == (utc(start), utc(end))


def test_split_into_whole_days_and_edges() -> None:
    p = query_sql.split(utc("2025-10-31 18:15"), utc("2025-11-30 18:15"))
    assert (p.day_from, p.day_to) == (dt.date(2025, 11, 1), dt.date(2025, 11, 30))
    assert p.edges == (
        (utc("2025-10-31 18:15"), utc("2025-11-01 00:00")),
        (utc("2025-11-30 00:00"), utc("2025-11-30 18:15")),
    )
    one = query_sql.split(utc("2025-11-11 18:30"), utc("2025-11-12 18:30"))
    assert one.day_from == one.day_to
    assert one.edges == ((utc("2025-11-11 18:30"), utc("2025-11-12 18:30")),)
    whole = query_sql.split(utc("2025-11-01 00:00"), utc("2025-12-01 00:00"))
    assert (whole.day_from, whole.day_to, whole.edges) == (
        dt.date(2025, 11, 1),
        dt.date(2025, 12, 1),
        (),
    )


def test_utc_alignment_follows_daylight_saving() -> None:
    winter = query.make_range(dt.date(2025, 1, 1), dt.date(2025, 1, 31), "Europe/London")
    assert winter.utc_aligned
    summer = query.make_range(dt.date(2025, 7, 1), dt.date(2025, 7, 1), "Europe/London")
    assert not summer.utc_aligned


def test_exact_visitors_only_for_whole_days_of_all_page_views() -> None:
    whole = query.make_range(dt.date(2025, 11, 1), dt.date(2025, 11, 3), "UTC")
    pieces = query_sql.split(whole.start, whole.end)
    plain = query.StatsRequest("s", whole, ("visitors",))
    assert query_sql.exact_visitors_possible(plain, pieces)
    by_path = query.StatsRequest("s", whole, ("visitors",), (query.Filter("path", False, "/"),))
    assert not query_sql.exact_visitors_possible(by_path, pieces)
    local = query.make_range(dt.date(2025, 11, 1), dt.date(2025, 11, 3), "Asia/Kolkata")
    assert not query_sql.exact_visitors_possible(plain, query_sql.split(local.start, local.end))


def test_filter_values_are_bound_not_inlined() -> None:
    r = query.make_range(dt.date(2025, 11, 1), dt.date(2025, 11, 3), "UTC")
    evil = "x'; DROP TABLE events; --"
    request = query.StatsRequest("s", r, ("views",), (query.Filter("path", False, evil),))
    statement, params = query_sql.aggregate_sql(request)
    assert evil in params.values()
    assert "DROP TABLE" not in statement.as_string(None)


@pytest.mark.parametrize(
    ("first", "last", "month_from", "month_to"),
    [
        # whole local months read monthly rows; the days around them daily rows
        ("2025-11-01", "2025-11-30", "2025-11-01", "2025-12-01"),
        ("2025-10-31", "2025-12-01", "2025-11-01", "2025-12-01"),
        ("2025-10-15", "2026-01-31", "2025-11-01", "2026-02-01"),
        # no whole month: an empty month range past the last day, so every day is daily
        ("2025-11-02", "2025-11-30", "2025-12-01", "2025-12-01"),
        ("2025-11-12", "2025-11-12", "2025-11-13", "2025-11-13"),
    ],
)
def test_local_zone_months(first: str, last: str, month_from: str, month_to: str) -> None:
    days = query.make_range(
        dt.date.fromisoformat(first), dt.date.fromisoformat(last), "Asia/Kolkata"
    )
    local = query_local.aggregate_sql(query.StatsRequest("s", days, ("views",)))
    assert local is not None
    _, params = local
    assert (params["month_from"], params["month_to"]) == (
        dt.date.fromisoformat(month_from),
        dt.date.fromisoformat(month_to),
    )
    assert (params["first"], params["last"], params["tz"]) == (days.first, days.last, days.timezone)


def test_local_zone_rollups_answer_unfiltered_questions_of_non_utc_days() -> None:
    kolkata = query.make_range(dt.date(2025, 11, 1), dt.date(2025, 11, 30), "Asia/Kolkata")
    utc_days = query.make_range(dt.date(2025, 11, 1), dt.date(2025, 11, 30), "UTC")
    plain = query.StatsRequest("s", kolkata, ("views", "visitors"))
    filtered = query.StatsRequest("s", kolkata, ("views",), (query.Filter("path", False, "/"),))
    assert query_local.applies(plain)
    assert not query_local.applies(filtered)
    assert not query_local.applies(query.StatsRequest("s", utc_days, ("views",)))
    assert query_local.timeseries_sql(query.TimeseriesRequest(plain, "day")) is not None
    assert query_local.timeseries_sql(query.TimeseriesRequest(plain, "hour")) is None
    pages = query_local.breakdown_sql(query.BreakdownRequest(plain, "path", 10, 2))
    assert pages is not None and pages[1]["offset"] == 10
    assert "hll_union_agg(v.visitors)" in pages[0]  # visitors of the page's paths
    views_only = query.StatsRequest("s", kolkata, ("views",))
    no_visitors = query_local.breakdown_sql(query.BreakdownRequest(views_only, "path", 3, 1))
    assert no_visitors is not None and "v.visitors" not in no_visitors[0]
    assert query_local.breakdown_sql(query.BreakdownRequest(plain, "event_type", 10, 1)) is None


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
    days = query.make_range(dt.date.fromisoformat(first), dt.date.fromisoformat(last), zone)
    assert days.hour_aligned is hours


def test_page_breakdown_of_one_whole_month_reads_one_row_per_path() -> None:
    def ranking_sql(first: dt.date, last: dt.date, zone: str = "UTC") -> str:
        days = query.make_range(first, last, zone)
        request = query.BreakdownRequest(query.StatsRequest("s", days, ("views",)), "path", 10, 1)
        if zone != "UTC":
            local = query_local.breakdown_sql(request)
            assert local is not None
            return local[0]
        composed, _ = query_sql.breakdown_sql(request)
        return composed.as_string(None)

    november = (dt.date(2025, 11, 1), dt.date(2025, 11, 30))
    assert ranking_sql(*november) == query_sql.ONE_MONTH_PATHS.as_string(None)
    assert "GROUP BY" in ranking_sql(dt.date(2025, 11, 1), dt.date(2025, 12, 31))
    assert "GROUP BY" in ranking_sql(dt.date(2025, 11, 2), dt.date(2025, 11, 30))
    assert "local_monthly_paths WHERE" in ranking_sql(*november, zone="Asia/Kolkata")
    assert "GROUP BY" not in ranking_sql(*november, zone="Asia/Kolkata")
    one_day = ranking_sql(dt.date(2025, 11, 12), dt.date(2025, 11, 12), zone="Asia/Kolkata")
    assert "day = %(first)s" in one_day


def test_only_a_page_breakdown_of_one_whole_local_month_by_views_tries_the_sealed_month() -> None:
    def sealed(first: str, last: str, zone: str = "Asia/Kolkata", **kw: object) -> bool:
        days = query.make_range(dt.date.fromisoformat(first), dt.date.fromisoformat(last), zone)
        metrics = kw.get("metrics", ("views", "visitors"))
        stats = query.StatsRequest("s", days, metrics, kw.get("filters", ()))  # type: ignore[arg-type]
        request = query.BreakdownRequest(stats, kw.get("dimension", "path"), 10, 1)  # type: ignore[arg-type]
        return query_local.sealed_month_sql(request, dt.date(2026, 1, 1)) is not None

    assert sealed("2025-11-01", "2025-11-30")
    assert sealed("2025-02-01", "2025-02-28")
    assert not sealed("2025-11-01", "2025-11-29")
    assert not sealed("2025-12-01", "2025-12-31")  # not over before "today": never sealed yet
    assert not sealed("2025-11-01", "2025-12-31")  # two months: the general ranking
    assert not sealed("2025-11-01", "2025-11-30", zone="UTC")  # UTC has its own
    assert not sealed("2025-11-01", "2025-11-30", metrics=("visitors", "views"))
    assert not sealed("2025-11-01", "2025-11-30", dimension="event_type")
    assert not sealed("2025-11-01", "2025-11-30", filters=(query.Filter("path", False, "/a"),))
