"""Visit questions without a database: what is accepted or refused, which visit table answers
each part of a range, the SQL's bound values, and how the metrics are rounded."""

from __future__ import annotations

import datetime as dt

import pytest

from ingest import stats_visits
from ingest.errors import BadRequest
from ingest.stats_params import from_visits, parse_breakdown, parse_stats, parse_timeseries
from ingest.stats_visits import (
    Buckets,
    DimensionBuckets,
    DimensionDays,
    VisitRows,
    VisitSums,
    visit_values,
)
from ingest.stats_visits_page import ranks_on_sums, visit_page_sql
from ingest.stats_visits_rank import Window

NOW = dt.datetime(2025, 11, 20, 12, 0, tzinfo=dt.UTC)
D = dt.date


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def params(**more: str) -> dict[str, str]:
    return {"site_id": "s", "period": "custom", "date": "2025-11-11,2025-11-13", **more}


def test_visit_properties_parse_to_their_dimensions() -> None:
    for name in ("source", "referrer", "utm_medium", "utm_term", "entry_page", "exit_page"):
        request = parse_breakdown(params(property=f"visit:{name}"), now=NOW)
        assert request.dimension == name
        assert request.stats.metrics == ("visitors", "visits")  # the default
        assert from_visits(request.stats, request.dimension)
    request = parse_stats(params(filters="visit:utm_campaign!=spring"), now=NOW)
    assert [(f.dimension, f.negated, f.value) for f in request.filters] == [
        ("utm_campaign", True, "spring")
    ]


def test_context_breakdowns_are_read_from_visits_only_when_a_visit_metric_is_asked() -> None:
    plain = parse_breakdown(params(property="visit:browser"), now=NOW)
    assert not from_visits(plain.stats, plain.dimension)
    visits = parse_breakdown(params(property="visit:browser", metrics="visits,visitors"), now=NOW)
    assert from_visits(visits.stats, visits.dimension)


def test_visit_metrics_beside_event_metrics_keep_the_event_rollups_for_the_others() -> None:
    request = parse_stats(params(metrics="views,visits,bounce_rate"), now=NOW)
    assert request.metrics == ("views", "visits", "bounce_rate")
    assert not from_visits(request, None)
    filtered = parse_stats(params(metrics="views,visits", filters="visit:source==Google"), now=NOW)
    assert from_visits(filtered, None)  # views are the matching visits' page views


@pytest.mark.parametrize(
    ("query", "field", "named"),
    [
        ({"metrics": "visits", "filters": "event:page==/a"}, "filters", "event:page"),
        ({"metrics": "bounce_rate", "filters": "event:name==x"}, "filters", "event:name"),
        ({"filters": "visit:source==Google;event:props:k==v"}, "filters", "event:props"),
        ({"metrics": "events", "filters": "visit:entry_page==/"}, "metrics", "events"),
        ({"metrics": "visits,sessions"}, "metrics", "views_per_visit"),
    ],
)
def test_what_visits_cannot_answer_names_the_parameter(
    query: dict[str, str], field: str, named: str
) -> None:
    with pytest.raises(BadRequest) as raised:
        parse_stats(params(**query), now=NOW)
    assert raised.value.field == field and named in str(raised.value)


@pytest.mark.parametrize(
    ("query", "field", "named"),
    [
        ({"property": "event:page", "metrics": "visits"}, "metrics", "event:page"),
        ({"property": "event:props:k", "metrics": "visit_duration"}, "metrics", "event:props"),
        ({"property": "event:name", "filters": "visit:utm_source==x"}, "filters", "event:name"),
        ({"property": "visit:source", "metrics": "visits,events"}, "metrics", "events"),
        ({"property": "visit:os", "metrics": "visits", "filters": "event:page==/"}, "filters",
         "event:page"),
        ({"property": "visit:campaign"}, "property", "visit:utm_campaign"),
    ],
)  # fmt: skip
def test_what_a_visit_breakdown_cannot_answer_names_the_parameter(
    query: dict[str, str], field: str, named: str
) -> None:
    with pytest.raises(BadRequest) as raised:
        parse_breakdown(params(**query), now=NOW)
    assert raised.value.field == field and named in str(raised.value)


def test_a_filter_value_of_a_visit_dimension_has_a_byte_limit() -> None:
    with pytest.raises(BadRequest) as raised:
        parse_stats(params(filters="visit:entry_page==/" + "x" * 2048), now=NOW)
    assert raised.value.field == "filters" and raised.value.code == "too_long"


def test_unfiltered_visit_totals_read_15_minute_buckets_in_any_zone() -> None:
    request = parse_stats(params(metrics="visits", timezone="Asia/Kolkata"), now=NOW)
    assert stats_visits.plan_visit_totals(request) == (
        Buckets(utc("2025-11-10 18:30"), utc("2025-11-13 18:30")),
    )


EDGES = (
    (utc("2025-11-10 18:30"), utc("2025-11-11 00:00")),
    (utc("2025-11-13 00:00"), utc("2025-11-13 18:30")),
)


def test_one_visit_filter_reads_its_dimension_rows_of_whole_utc_days_and_buckets_at_the_edges() -> (
    None
):
    request = parse_stats(
        params(metrics="visits", timezone="Asia/Kolkata", filters="visit:source!=Google"), now=NOW
    )
    parts = stats_visits.plan_visit_totals(request)
    assert parts == (
        DimensionDays("source", D(2025, 11, 11), D(2025, 11, 13), filtered=True),
        DimensionBuckets("source", EDGES, filtered=True),
    )
    assert stats_visits.raw_read(parts)  # source's values are the emitter's
    query, bound = stats_visits.visit_totals_sql(request, parts)
    text = query.as_string(None)
    assert "Google" not in text and bound["f0"] == "Google"  # values are bound
    assert text.count("value <> %(f0)s") == 2 and "FROM visits" not in text
    assert bound["p0_dimension"] == bound["p1_dimension"] == "source"
    assert "(bucket >= %(p1_a1)s AND bucket < %(p1_b1)s)" in text
    assert (bound["p1_a1"], bound["p1_b1"]) == EDGES[1]


def test_only_the_buckets_of_dimensions_clients_write_are_raw_reads() -> None:
    for dimension, raw in (("entry_page", True), ("utm_term", True), ("country", False)):
        request = parse_breakdown(
            params(property=f"visit:{dimension}", timezone="Asia/Kolkata"), now=NOW
        )
        assert stats_visits.raw_read(stats_visits.plan_visit_breakdown(request)) == raw
    utc = parse_breakdown(params(property="visit:entry_page"), now=NOW)
    assert not stats_visits.raw_read(stats_visits.plan_visit_breakdown(utc))


def test_one_visit_filter_within_a_day_of_another_zone_reads_buckets_only() -> None:
    request = parse_stats(
        params(
            metrics="visits",
            timezone="Europe/Berlin",
            period="day",
            date="2025-11-13",
            filters="visit:os==iOS",
        ),
        now=NOW,
    )
    assert stats_visits.plan_visit_totals(request) == (
        DimensionBuckets("os", ((utc("2025-11-12 23:00"), utc("2025-11-13 23:00")),), True),
    )


def test_a_utc_range_with_one_filter_reads_no_visits_rows() -> None:
    request = parse_stats(params(metrics="visits", filters="visit:exit_page==/a"), now=NOW)
    parts = stats_visits.plan_visit_totals(request)
    assert parts == (DimensionDays("exit_page", D(2025, 11, 11), D(2025, 11, 14), filtered=True),)
    assert not stats_visits.raw_read(parts)


def test_two_filters_read_visits_over_the_whole_range() -> None:
    request = parse_stats(
        params(metrics="visits", filters="visit:source==Google;visit:device==mobile"), now=NOW
    )
    assert stats_visits.plan_visit_totals(request) == (
        VisitRows(((utc("2025-11-11 00:00"), utc("2025-11-14 00:00")),)),
    )


def test_series_read_buckets_unfiltered_and_dimension_days_only_for_utc_days() -> None:
    daily = parse_timeseries(params(metrics="visits", filters="visit:os==iOS"), now=NOW)
    assert stats_visits.plan_visit_series(daily) == (
        DimensionDays("os", D(2025, 11, 11), D(2025, 11, 14), filtered=True),
    )
    hourly = parse_timeseries(
        params(metrics="visits", filters="visit:os==iOS", interval="hour"), now=NOW
    )
    assert stats_visits.plan_visit_series(hourly) == (
        VisitRows(((utc("2025-11-11 00:00"), utc("2025-11-14 00:00")),)),
    )
    unfiltered = parse_timeseries(params(metrics="visits", timezone="America/New_York"), now=NOW)
    assert stats_visits.plan_visit_series(unfiltered) == (
        Buckets(utc("2025-11-11 05:00"), utc("2025-11-14 05:00")),
    )


def test_a_breakdown_reads_its_dimension_rows_and_edges_or_with_filters_visits() -> None:
    request = parse_breakdown(params(property="visit:utm_medium", timezone="Asia/Kolkata"), now=NOW)
    parts = stats_visits.plan_visit_breakdown(request)
    assert parts == (
        DimensionDays("utm_medium", D(2025, 11, 11), D(2025, 11, 13)),
        DimensionBuckets("utm_medium", EDGES),
    )
    assert ranks_on_sums(parts) and stats_visits.raw_read(parts)
    # Sorted by visitors: candidates by visits, sketches merged for the first `merge` only,
    # each value's by primary-key lookups of its days and its edges' buckets.
    query, bound = visit_page_sql(request, parts, "visitors", Window(40, 0, 20))
    text = query.as_string(None)
    assert "ORDER BY visits DESC, value LIMIT %(limit)s" in text and "FROM visits" not in text
    assert "CASE WHEN g.n <= %(merge)s" in text and "x.day = ANY(%(p0_days)s)" in text
    # The edges' sketches merged once, for the values whose visitors are merged.
    assert "value IN (SELECT value FROM page WHERE n <= %(merge)s) GROUP BY value" in text
    assert text.count("FROM quarter_hour_visit_dimensions") == 2  # the sums, the sketches
    assert bound["p0_days"] == [D(2025, 11, 11), D(2025, 11, 12)]
    assert (bound["limit"], bound["offset"], bound["merge"]) == (40, 0, 20)
    filtered = parse_breakdown(
        params(property="visit:utm_medium", filters="visit:country==NL"), now=NOW
    )
    filtered_parts = stats_visits.plan_visit_breakdown(filtered)
    assert filtered_parts == (VisitRows(((utc("2025-11-11 00:00"), utc("2025-11-14 00:00")),)),)
    assert not ranks_on_sums(filtered_parts)
    query, _ = stats_visits.visit_breakdown_sql(filtered, filtered_parts)
    text = query.as_string(None)
    assert "ORDER BY least(round(coalesce(hll_cardinality(hll_union_agg(visitors)), 0)), " in text
    assert "LIMIT 100" in text and "OFFSET" not in text


def test_a_breakdown_reads_the_whole_months_of_its_range_from_their_sealed_rows() -> None:
    # 2025-10-20 to 2026-01-05: November and December whole, the other days daily.
    ranged = {"site_id": "s", "period": "custom", "date": "2025-10-20,2026-01-05"}
    request = parse_breakdown({**ranged, "property": "visit:entry_page"}, now=NOW)
    [part] = stats_visits.plan_visit_breakdown(request)
    assert part == DimensionDays(
        "entry_page", D(2025, 10, 20), D(2026, 1, 6), months=(D(2025, 11, 1), D(2026, 1, 1))
    )
    query, bound = visit_page_sql(request, (part,), "visitors", Window(40, 0, 20))
    text = query.as_string(None)
    # Which months are sealed is the statement's to say (sealed_days in its snapshot): the
    # daily rows of those months are left out of the days looked up, the others read.
    assert text.count("FROM sealed_monthly_visit_dimensions") == 2  # ranking, sketches
    assert "x.month >= %(p0_mfrom)s AND x.month < least(%(p0_mto)s, (SELECT" in text
    assert "x.day = ANY(ARRAY(SELECT d FROM unnest(%(p0_days)s::date[]) d" in text
    assert (bound["p0_mfrom"], bound["p0_mto"]) == (D(2025, 11, 1), D(2026, 1, 1))
    assert len(bound["p0_days"]) == 78
    # Less than a whole month: the daily rows only.
    short = parse_breakdown(params(property="visit:entry_page"), now=NOW)
    [part] = stats_visits.plan_visit_breakdown(short)
    assert isinstance(part, DimensionDays) and part.months is None
    query, bound = visit_page_sql(short, (part,), "visitors", Window(40, 0, 20))
    assert "sealed_monthly" not in query.as_string(None) and "p0_mfrom" not in bound


def test_metrics_round_half_up_as_plausible_does() -> None:
    values = visit_values(VisitSums(visits=8, bounces=1, duration=20, page_views=5, visitors=3.0))
    assert values == {
        "visits": 8,
        "bounce_rate": 13,  # 12.5 %
        "visit_duration": 3,  # 2.5 s
        "views_per_visit": 0.63,  # 0.625
        "views": 5,
        "visitors": 3,
    }
    none = visit_values(VisitSums(0, 0, 0, 0, 0))
    assert none["bounce_rate"] == none["visit_duration"] == 0 and none["views_per_visit"] == 0.0


def test_a_visit_filter_without_metrics_gets_the_defaults_but_events() -> None:
    request = parse_stats(params(filters="visit:source==Google"), now=NOW)
    assert request.metrics == ("views", "visitors")
