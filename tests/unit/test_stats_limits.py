"""The stats API's limits on its parameters, and its composed-SQL caches keyed by the shape
of a statement, not the values it binds: pure logic."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from ingest import stats_days, stats_plan, stats_plan_parts, stats_sql, stats_sql_breakdown
from ingest import stats_params as query
from ingest.errors import BadRequest, InvalidText, OutOfRange, TooLong, TooManyFilters
from ingest.stats_legacy import parse_stats_query
from ingest.stats_params import BreakdownRequest, Filter, StatsRequest

NOW = dt.datetime(2025, 11, 12, 20, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("params", "code", "field"),
    [
        # The first reproductions of issue 11: period arithmetic past year 1 or 9999.
        ({"period": "30d", "date": "0001-01-01"}, OutOfRange, "date"),
        ({"period": "30d", "date": "9999-12-31"}, OutOfRange, "date"),
        ({"period": "month", "date": "9999-12-31", "timezone": "Asia/Kolkata"}, OutOfRange, "date"),
        ({"period": "day", "date": "1969-12-31"}, OutOfRange, "date"),
        ({"period": "12mo", "date": "1970-06-01"}, OutOfRange, "date"),  # reaches 1969
        ({"period": "7d", "date": "1970-01-03"}, OutOfRange, "date"),
        ({"from": "0001-01-01", "to": "0001-01-02"}, OutOfRange, "from"),
        ({"from": "9998-12-30", "to": "9999-01-01"}, OutOfRange, "to"),
        ({"period": "custom", "date": "1970-01-01,9999-12-31"}, OutOfRange, "date"),
        (
            {"period": "day", "date": "\uff12\uff10\uff12\uff15-11-12"},
            BadRequest,
            "date",
        ),  # full-width
        (
            {"period": "day", "date": "\u0662\u0660\u0662\u0665-\u0661\u0661-\u0661\u0662"},
            BadRequest,
            "date",
        ),
    ],
)
def test_days_outside_the_supported_range_are_refused(
    params: dict[str, str], code: type[BadRequest], field: str
) -> None:
    with pytest.raises(code) as caught:
        query.parse_stats({"site_id": "s", **params}, now=NOW)
    assert caught.value.field == field
    assert caught.value.status == 400


def test_the_edges_of_the_supported_range_are_accepted() -> None:
    low = query.parse_range({"period": "day", "date": "1970-01-01"}, now=NOW)
    high = query.parse_range(
        {"period": "12mo", "date": "9998-12-31", "timezone": "Pacific/Kiritimati"}, now=NOW
    )
    assert low.first == query.MIN_DAY
    assert high.last == query.MAX_DAY
    assert high.end > high.start
    far = stats_days.make_range(query.MIN_DAY, query.MIN_DAY, "America/Adak")
    assert stats_days.split(far.start, far.end).edges  # no overflow at the epoch's edge


@pytest.mark.parametrize(
    ("params", "code", "field"),
    [
        ({"site_id": "a\x00b"}, InvalidText, "site_id"),
        ({"site_id": "é" * 65}, TooLong, "site_id"),  # 130 bytes in 65 characters
        ({"site_id": "s", "filters": "event:page==/\x00"}, InvalidText, "filters"),
        ({"site_id": "s", "filters": "event:name!=a\x00"}, InvalidText, "filters"),
        ({"site_id": "s", "filters": "event:page==/" + "界" * 683}, TooLong, "filters"),
        ({"site_id": "s", "filters": "event:name==" + "é" * 33}, TooLong, "filters"),
        ({"site_id": "s", "filters": ";".join(["event:page==/"] * 11)}, TooManyFilters, "filters"),
        ({"site_id": "s", "filters": ";" * 100_000}, TooManyFilters, "filters"),
    ],
)
def test_text_postgres_cannot_hold_or_longer_than_stored_is_refused(
    params: dict[str, str], code: type[BadRequest], field: str
) -> None:
    with pytest.raises(code) as caught:
        query.parse_stats(params, now=NOW)
    assert caught.value.field == field
    assert caught.value.code != BadRequest.code or code is BadRequest


def test_text_at_its_limits_is_accepted() -> None:
    request = query.parse_stats(
        {
            "site_id": "é" * 64,
            "filters": ";".join(["event:page==/" + "é" * 1023, "event:name==" + "x" * 64] * 5),
        },
        now=NOW,
    )
    assert len(request.filters) == query.MAX_FILTERS


@pytest.mark.parametrize("raw", ["²", "¹⁰", "٣", "1" * 5000, "-1", "+5", " 5", "1e3", "1001"])
def test_paging_numbers_are_ascii_and_bounded(raw: str) -> None:
    with pytest.raises(BadRequest) as caught:
        query.parse_breakdown({"site_id": "s", "limit": raw}, now=NOW)
    assert caught.value.field == "limit"
    with pytest.raises(BadRequest) as caught:
        query.parse_breakdown({"site_id": "s", "page": raw + "0" * 7}, now=NOW)
    assert caught.value.field == "page"


@pytest.mark.parametrize(
    ("params", "code", "field"),
    [
        ({"site_id": "s\x00", "date": "2025-11-12"}, InvalidText, "site_id"),
        ({"site_id": "s" * 129, "date": "2025-11-12"}, TooLong, "site_id"),
        ({"site_id": "s", "date": "0001-01-01", "timezone": "Asia/Tokyo"}, OutOfRange, "date"),
        ({"site_id": "s", "date": "9999-12-31", "timezone": "America/Lima"}, OutOfRange, "date"),
    ],
)
def test_base_stats_has_the_same_limits(
    params: dict[str, str], code: type[BadRequest], field: str
) -> None:
    with pytest.raises(code) as caught:
        parse_stats_query(params)
    assert caught.value.field == field


def _request(*filters: Filter) -> StatsRequest:
    r = stats_days.make_range(dt.date(2025, 11, 1), dt.date(2025, 11, 3), "UTC")
    return StatsRequest("s", r, ("views", "visitors"), filters)


def _aggregate_sql(request: StatsRequest) -> tuple[str, dict[str, Any]]:
    plan = stats_plan.plan_aggregate(request, 0)
    statement, params = stats_sql.aggregate_sql(plan.answer, "s", "UTC", request.filters)
    return statement.as_string(None), params


def test_composed_statements_are_cached_by_shape_not_by_value() -> None:
    stats_sql.CACHE.clear()
    statements = set()
    for i in range(50):
        request = _request(
            Filter("path", False, f"/page-{i}" * 100),
            Filter("event_type", True, f"type-{i}"),
        )
        statement, params = _aggregate_sql(request)
        assert params["f0"] == f"/page-{i}" * 100
        assert params["f1"] == f"type-{i}"
        statements.add(statement)
    assert len(statements) == 1
    assert len(stats_sql.CACHE) == 1
    assert "/page-" not in next(iter(statements))


def test_the_statement_cache_is_bounded() -> None:
    cache = stats_sql.ShapeCache(size=3)
    for i in range(10):
        cache.get(i, lambda: stats_sql.filter_clause(()))
    assert len(cache) == 3


def test_a_page_view_filter_keeps_its_own_cheaper_shape() -> None:
    only_views = _request(Filter("event_type", False, "page_view"))
    signups = _request(Filter("event_type", False, "signup"))
    with_path = _request(Filter("event_type", False, "page_view"), Filter("path", False, "/a"))
    other_path = _request(Filter("event_type", False, "click"), Filter("path", False, "/a"))
    assert stats_sql.statement_shape(only_views.filters) != stats_sql.statement_shape(
        signups.filters
    )
    a, _ = _aggregate_sql(with_path)
    b, _ = _aggregate_sql(other_path)
    assert "event_type = 'page_view'" in a  # page-view rows only
    assert "event_type = 'page_view'" not in b.split("FROM (")[1]


def test_breakdown_caches_are_keyed_by_shape() -> None:
    stats_sql.CACHE.clear()
    for i in range(20):
        stats = _request(Filter("path", True, f"/x{i}"))
        request = BreakdownRequest(stats, "path", 10, 1)
        plan = stats_plan.plan_breakdown(request, dt.date(2026, 1, 1))
        stats_sql_breakdown.breakdown_sql(plan.answer, request)
        assert isinstance(plan.then, stats_plan_parts.ValueVisitors)
        stats_sql_breakdown.value_visitors_sql(plan.then, request, ["a"])
    assert len(stats_sql.CACHE) == 2
