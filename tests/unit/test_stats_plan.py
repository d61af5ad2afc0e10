"""Which sources answer a request: one test per choice of the planner, no database."""

from __future__ import annotations

import datetime as dt

from ingest import (
    stats_days,
    stats_plan,
    stats_plan_parts,
    stats_sql,
    stats_sql_breakdown,
    stats_sql_context,
)
from ingest.stats_params import BreakdownRequest, Filter, StatsRequest, TimeseriesRequest
from ingest.stats_plan_parts import (
    Days,
    Edges,
    ExactVisitors,
    IfKept,
    IfSealed,
    Instants,
    LocalDays,
    LocalMonths,
    Months,
    PerValue,
    Plan,
    Statement,
    ValueVisitors,
    Watermark,
)

TODAY = dt.date(2026, 1, 15)
D = dt.date


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def stats(
    first: str, last: str, zone: str = "UTC", *filters: Filter, metrics: str = "vv"
) -> StatsRequest:
    days = stats_days.make_range(D.fromisoformat(first), D.fromisoformat(last), zone)
    chosen = {"vv": ("views", "visitors"), "v": ("views",), "visitors": ("visitors", "views")}
    return StatsRequest("s", days, chosen[metrics], filters)  # type: ignore[arg-type]


def aggregate(request: StatsRequest) -> Plan:
    return stats_plan.plan_aggregate(request, 1000)


def test_a_utc_month_reads_daily_rollups_and_may_count_visitors_exactly() -> None:
    plan = aggregate(stats("2025-11-01", "2025-11-30"))
    november = Days("daily_stats", D(2025, 11, 1), D(2025, 12, 1))
    assert plan.answer.parts == (november,)
    exact_set = Days("daily_visitor_ids", D(2025, 11, 1), D(2025, 12, 1))
    assert plan.then == ExactVisitors(exact_set, 1000)
    assert stats_plan_parts.tables(plan) == {"daily_stats", "daily_visitor_ids"}
    print(plan)  # printable: the test's output shows the tree


def test_a_utc_day_reads_one_daily_row() -> None:
    plan = aggregate(stats("2025-11-12", "2025-11-12"))
    assert plan.answer.parts == (Days("daily_stats", D(2025, 11, 12), D(2025, 11, 13)),)


def test_a_kept_zones_day_reads_its_local_rollup_else_15_minute_edges() -> None:
    plan = aggregate(stats("2025-11-12", "2025-11-12", "Asia/Kolkata"))
    edge = (utc("2025-11-11 18:30"), utc("2025-11-12 18:30"))
    [choice] = plan.answer.parts
    assert choice == IfKept(
        "Asia/Kolkata",
        (LocalDays("local_daily_stats", "Asia/Kolkata", D(2025, 11, 12), D(2025, 11, 13)),),
        (
            Edges("hourly_stats", ((utc("2025-11-11 19:00"), utc("2025-11-12 18:00")),)),
            Edges(
                "quarter_hour_stats",
                ((edge[0], utc("2025-11-11 19:00")), (utc("2025-11-12 18:00"), edge[1])),
            ),
        ),
    )
    assert plan.then is None  # edges: no exact count
    sql, _ = stats_sql.aggregate_sql(plan.answer, "s", "Asia/Kolkata", ())
    text = sql.as_string(None)
    assert "site_zones" in text and "NOT (SELECT EXISTS" in text  # one statement, both branches


def test_an_unkept_45_minute_zones_day_has_two_15_minute_edges_around_no_whole_day() -> None:
    plan = aggregate(stats("2025-11-12", "2025-11-12", "Asia/Kathmandu"))
    [choice] = plan.answer.parts
    assert isinstance(choice, IfKept)
    # whole UTC hours from hourly rows, the 45 minutes before them and 15 after in quarters
    assert choice.otherwise == (
        Edges("hourly_stats", ((utc("2025-11-11 19:00"), utc("2025-11-12 18:00")),)),
        Edges(
            "quarter_hour_stats",
            (
                (utc("2025-11-11 18:15"), utc("2025-11-11 19:00")),
                (utc("2025-11-12 18:00"), utc("2025-11-12 18:15")),
            ),
        ),
    )
    week = aggregate(stats("2025-11-10", "2025-11-16", "Asia/Kathmandu"))
    [choice] = week.answer.parts
    assert isinstance(choice, IfKept)
    assert [type(p) for p in choice.otherwise] == [Days, Edges, Edges]
    assert choice.otherwise[1:] == (
        Edges(
            "hourly_stats",
            (
                (utc("2025-11-09 19:00"), utc("2025-11-10 00:00")),
                (utc("2025-11-16 00:00"), utc("2025-11-16 18:00")),
            ),
        ),
        Edges(
            "quarter_hour_stats",
            (
                (utc("2025-11-09 18:15"), utc("2025-11-09 19:00")),
                (utc("2025-11-16 18:00"), utc("2025-11-16 18:15")),
            ),
        ),
    )


def test_event_types_across_a_sealed_watermark_read_sealed_months_then_daily_rows() -> None:
    request = stats(
        "2025-10-20", "2025-12-31", "UTC", Filter("event_type", False, "signup"), metrics="v"
    )
    plan = aggregate(request)
    assert plan.answer.form == "filtered totals"
    assert plan.answer.parts == (
        Days("daily_event_types", D(2025, 10, 20), D(2025, 11, 1)),
        Watermark(
            "sealed_monthly_event_types",
            "daily_event_types",
            "UTC",
            D(2025, 11, 1),
            D(2026, 1, 1),
            D(2026, 1, 1),
        ),
    )
    text = stats_sql.aggregate_sql(plan.answer, "s", "UTC", request.filters)[0].as_string(None)
    assert "sealed_days" in text  # the watermark is read by the statement itself


def test_event_type_breakdown_merges_visitors_in_its_one_statement() -> None:
    request = BreakdownRequest(stats("2025-11-01", "2025-11-30"), "event_type", 10, 1)
    plan = stats_plan.plan_breakdown(request, TODAY)
    assert plan.answer.form == "ranking"
    assert plan.then is None
    assert stats_plan_parts.tables(plan) == {"daily_event_types", "sealed_monthly_event_types"}


def test_hourly_timeseries_reads_hourly_rollups_in_a_whole_hour_zone() -> None:
    request = TimeseriesRequest(stats("2025-11-12", "2025-11-13", "Europe/Berlin"), "hour")
    plan = stats_plan.plan_timeseries(request)
    r = request.stats.range
    assert plan.answer.parts == (Instants("hourly_stats", r.start, r.end),)


def test_hourly_timeseries_reads_15_minute_rollups_in_a_half_hour_zone() -> None:
    request = TimeseriesRequest(stats("2025-11-12", "2025-11-13", "Asia/Kolkata"), "hour")
    plan = stats_plan.plan_timeseries(request)
    r = request.stats.range
    assert plan.answer.parts == (Instants("quarter_hour_stats", r.start, r.end),)


def test_daily_timeseries_of_utc_days_is_exact_and_of_a_zone_tries_its_rollups() -> None:
    plan = stats_plan.plan_timeseries(TimeseriesRequest(stats("2025-11-01", "2025-11-30"), "day"))
    assert plan.exact and plan.answer.parts == (
        Days("daily_stats", D(2025, 11, 1), D(2025, 12, 1)),
    )
    zone = stats_plan.plan_timeseries(
        TimeseriesRequest(stats("2025-11-01", "2025-11-30", "Asia/Kolkata"), "day")
    )
    [choice] = zone.answer.parts
    assert isinstance(choice, IfKept) and not zone.exact
    # hourly rows, and 15-minute rows only in the hours where a local day starts: Kolkata's
    # days start at 18:30 UTC the day before, Nov 1 to Dec 1
    starts = tuple(
        dt.datetime.combine(D(2025, 10, 31) + dt.timedelta(days=i), dt.time(18, 30), dt.UTC)
        for i in range(31)
    )
    assert choice.otherwise[0] == Instants(
        "hourly_stats", *_instants("Asia/Kolkata"), quarters_at_edges=True, period_starts=starts
    )
    query, params = stats_sql.series_sql(zone.answer, "s", "Asia/Kolkata", "day", ())
    text = query.as_string(None)
    assert "hourly_stats" in text and "quarter_hour_stats" in text
    [hours] = [v for k, v in params.items() if k.endswith("_hours")]
    [quarters] = [v for k, v in params.items() if k.endswith("_quarters")]
    assert hours == [t.replace(minute=0) for t in starts]
    assert quarters[:4] == [starts[0].replace(minute=m) for m in (0, 15, 30, 45)]
    assert len(quarters) == 4 * len(hours)
    berlin = stats_plan.plan_timeseries(
        TimeseriesRequest(stats("2025-11-01", "2025-11-30", "Europe/Berlin"), "day")
    )
    [choice] = berlin.answer.parts
    assert isinstance(choice, IfKept)
    assert choice.otherwise == (Instants("hourly_stats", *_instants("Europe/Berlin")),)


def test_a_sub_day_series_not_asked_for_visitors_merges_no_sketch() -> None:
    asked = (("Asia/Kolkata", "day"), ("Europe/Berlin", "day"), ("Asia/Kolkata", "hour"))
    for zone, interval in asked:
        for metrics, merged in (("v", False), ("vv", True)):
            request = stats("2025-11-01", "2025-11-30", zone, metrics=metrics)
            plan = stats_plan.plan_timeseries(TimeseriesRequest(request, interval))  # type: ignore[arg-type]
            query, _ = stats_sql.series_sql(plan.answer, "s", zone, interval, ())
            assert ("hll_union_agg" in query.as_string(None)) is merged, (zone, interval, metrics)


def _instants(zone: str) -> tuple[dt.datetime, dt.datetime]:
    r = stats_days.make_range(D(2025, 11, 1), D(2025, 11, 30), zone)
    return r.start, r.end


def test_a_filtered_breakdown_reads_detail_rows_and_quarter_hours_of_other_types() -> None:
    request = BreakdownRequest(
        stats("2025-11-01", "2025-11-30", "Asia/Kolkata", Filter("path", False, "/a")),
        "event_type",
        10,
        1,
    )
    plan = stats_plan.plan_breakdown(request, TODAY)
    assert plan.answer.form == "ranking"
    days, quarters, hours, others = plan.answer.parts
    assert days == Days("daily_details", D(2025, 11, 1), D(2025, 11, 30))
    # page views: the edges' half-hour remainders (+05:30), then their whole hours (the two
    # tables in the order batches lock them)
    assert isinstance(hours, Edges) and hours.table == "hourly_paths"
    assert isinstance(quarters, Edges) and quarters.table == "quarter_hour_paths"
    assert isinstance(others, Edges) and others.table == "quarter_hour_event_paths"
    assert others.other_types and others.per_path
    assert stats_days.by_hours(others.spans) == (hours.spans, quarters.spans)


def test_a_page_breakdown_of_a_utc_month_is_one_row_per_path_sealed_or_not() -> None:
    request = BreakdownRequest(stats("2025-11-01", "2025-11-30"), "path", 10, 1)
    plan = stats_plan.plan_breakdown(request, TODAY)
    nov = (D(2025, 11, 1), D(2025, 12, 1))
    assert plan.answer.parts == (
        IfSealed(
            D(2025, 12, 1),
            (Months("sealed_monthly_paths", *nov),),
            (Months("monthly_paths", *nov),),
        ),
    )
    assert isinstance(plan.then, ValueVisitors)  # for the unsealed branch's paths
    text = stats_sql_breakdown.breakdown_sql(plan.answer, request)[0].as_string(None)
    assert "GROUP BY" not in text


def test_a_page_breakdown_in_a_kept_zone_is_one_statement_with_every_fallback() -> None:
    request = BreakdownRequest(stats("2025-11-01", "2025-11-30", "Asia/Kolkata"), "path", 10, 1)
    plan = stats_plan.plan_breakdown(request, TODAY)
    [choice] = plan.answer.parts
    assert isinstance(choice, IfKept)
    [sealed] = choice.kept
    assert isinstance(sealed, IfSealed)
    assert sealed.sealed == (
        LocalMonths("sealed_monthly_paths", "Asia/Kolkata", D(2025, 11, 1), D(2025, 12, 1)),
    )
    month, visitors = sealed.otherwise
    assert month == LocalMonths(
        "local_monthly_paths", "Asia/Kolkata", D(2025, 11, 1), D(2025, 12, 1)
    )
    assert isinstance(visitors, PerValue)
    # not kept: the UTC month, plus the hours and quarter hours before it, minus those after
    assert choice.otherwise == (
        Months("monthly_paths", D(2025, 11, 1), D(2025, 12, 1)),
        Edges("quarter_hour_paths", ((utc("2025-10-31 18:30"), utc("2025-10-31 19:00")),)),
        Edges("hourly_paths", ((utc("2025-10-31 19:00"), utc("2025-11-01 00:00")),)),
        Edges(
            "quarter_hour_paths", ((utc("2025-11-30 18:30"), utc("2025-11-30 19:00")),), taken=True
        ),
        Edges("hourly_paths", ((utc("2025-11-30 19:00"), utc("2025-12-01 00:00")),), taken=True),
    )
    # a month that has not ended before today is never sealed: no question asked
    recent = stats_plan.plan_breakdown(request, D(2025, 12, 1))
    [choice] = recent.answer.parts
    assert isinstance(choice, IfKept) and not isinstance(choice.kept[0], IfSealed)
    text = stats_sql_breakdown.breakdown_sql(plan.answer, request)[0].as_string(None)
    assert text.count("UNION ALL") >= 2  # the branches of one statement


def test_a_30d_range_reads_whole_months_days_around_them_and_the_edges() -> None:
    request = BreakdownRequest(
        stats("2025-10-14", "2025-11-12", "Asia/Kolkata", Filter("event_type", False, "x")),
        "path",
        10,
        1,
    )
    plan = stats_plan.plan_breakdown(request, TODAY)
    assert [type(p) for p in plan.answer.parts] == [Days, Edges]
    pages = BreakdownRequest(stats("2025-10-14", "2025-11-12"), "path", 10, 1)
    plan = stats_plan.plan_breakdown(pages, TODAY)
    # October minus its first 13 days, plus 12 days of November: 25 days' rows, not 30
    assert plan.answer.parts == (
        Months("monthly_paths", D(2025, 10, 1), D(2025, 11, 1)),
        Days("daily_paths", D(2025, 11, 1), D(2025, 11, 13)),
        Days("daily_paths", D(2025, 10, 1), D(2025, 10, 14), taken=True),
    )
    dashboard = BreakdownRequest(stats("2025-11-07", "2025-12-06"), "path", 10, 1)
    plan = stats_plan.plan_breakdown(dashboard, TODAY)
    assert plan.answer.parts == (
        Months("monthly_paths", D(2025, 11, 1), D(2025, 12, 1)),
        Days("daily_paths", D(2025, 12, 1), D(2025, 12, 7)),
        Days("daily_paths", D(2025, 11, 1), D(2025, 11, 7), taken=True),
    )
    centred = BreakdownRequest(stats("2025-10-16", "2025-11-14"), "path", 10, 1)
    plan = stats_plan.plan_breakdown(centred, TODAY)
    assert plan.answer.parts == (Days("daily_paths", D(2025, 10, 16), D(2025, 11, 15)),)
    months = BreakdownRequest(stats("2025-09-14", "2025-12-12"), "path", 10, 1)
    plan = stats_plan.plan_breakdown(months, TODAY)
    assert plan.answer.parts == (
        Months("monthly_paths", D(2025, 9, 1), D(2025, 12, 1)),
        Days("daily_paths", D(2025, 12, 1), D(2025, 12, 13)),
        Days("daily_paths", D(2025, 9, 1), D(2025, 9, 14), taken=True),
    )


def test_filter_values_are_bound_not_inlined() -> None:
    evil = "x'; DROP TABLE events; --"
    request = stats("2025-11-01", "2025-11-03", "UTC", Filter("path", False, evil))
    plan = aggregate(request)
    statement, params = stats_sql.aggregate_sql(plan.answer, "s", "UTC", request.filters)
    assert evil in params.values()
    assert "DROP TABLE" not in statement.as_string(None)


def test_one_day_or_month_is_asked_as_an_equality_so_the_top_index_serves_the_order() -> None:
    import datetime as dt

    from ingest import stats_sources
    from ingest.stats_plan_parts import LocalDays, Months

    one_month = Months("sealed_monthly_paths", dt.date(2025, 11, 1), dt.date(2025, 12, 1))
    two_months = Months("monthly_paths", dt.date(2025, 10, 1), dt.date(2025, 12, 1))
    one_day = LocalDays(
        "local_daily_paths", "Asia/Kolkata", dt.date(2025, 11, 12), dt.date(2025, 11, 13)
    )
    assert stats_sources.single_unit(one_month) and stats_sources.single_unit(one_day)
    assert not stats_sources.single_unit(two_months)
    text = stats_sources.rows("pages", one_month, "p0_").as_string(None)
    assert '"month" = %(p0_first)s' in text
    text = stats_sources.rows("pages", two_months, "p0_").as_string(None)
    assert '"month" >= %(p0_first)s AND "month" < %(p0_end)s' in text
    assert stats_sources.shape((one_month,)) != stats_sources.shape((two_months,))


def test_a_context_breakdown_reads_daily_and_quarter_hour_dimensions() -> None:
    request = BreakdownRequest(stats("2025-11-12", "2025-11-12", "Asia/Kolkata"), "browser", 10, 1)
    plan = stats_plan.plan_breakdown(request, TODAY)
    assert plan.answer.form == "context ranking"
    # Kolkata's 12 November is 11 Nov 18:30 to 12 Nov 18:30 UTC: no whole UTC day, one span
    # of 15-minute rows.
    assert plan.answer.parts == (
        Edges("quarter_hour_dimensions", ((utc("2025-11-11 18:30"), utc("2025-11-12 18:30")),)),
    )
    assert "events" not in stats_plan_parts.tables(plan)
    text = stats_sql_context.context_ranking_sql(plan.answer, request)[0].as_string(None)
    assert "FROM quarter_hour_dimensions" in text and "FROM events" not in text
    assert '"bucket" >= %(p0_a0)s' in text and "dimension = %(dimension)s" in text
    # under a context filter the edges stay raw: another statement, cached apart
    nl = BreakdownRequest(
        stats("2025-11-12", "2025-11-12", "Asia/Kolkata", Filter("country", False, "NL")),
        "browser",
        10,
        1,
    )
    filtered = stats_sql_context.context_ranking_sql(
        stats_plan.plan_breakdown(nl, TODAY).answer, nl
    )[0].as_string(None)
    assert "FROM events" in filtered and "quarter_hour_dimensions" not in filtered
    utc_day = BreakdownRequest(stats("2025-11-12", "2025-11-12"), "country", 10, 1)
    assert stats_plan.plan_breakdown(utc_day, TODAY).answer.parts == (
        Days("daily_dimensions", D(2025, 11, 12), D(2025, 11, 13)),
    )


def test_one_context_filter_reads_its_value_s_daily_dimensions_rows() -> None:
    nl = Filter("country", False, "NL")
    month = Days("daily_dimensions", D(2025, 11, 1), D(2025, 12, 1))
    request = stats("2025-11-01", "2025-11-30", "UTC", nl)
    assert aggregate(request) == Plan(Statement("context totals", (month,)))
    series = stats_plan.plan_timeseries(TimeseriesRequest(request, "day"))
    assert series == Plan(Statement("context series", (month,)))
    kolkata = stats("2025-11-12", "2025-11-13", "Asia/Kolkata", nl)
    assert aggregate(kolkata).answer.parts == (
        Days("daily_dimensions", D(2025, 11, 12), D(2025, 11, 13)),
        Edges(
            "events",
            (
                (utc("2025-11-11 18:30"), utc("2025-11-12 00:00")),
                (utc("2025-11-13 00:00"), utc("2025-11-13 18:30")),
            ),
        ),
    )
    # Series by hour, or by local day: raw events.
    by_hour = stats_plan.plan_timeseries(TimeseriesRequest(request, "hour"))
    assert by_hour.answer.form == "raw series"
    by_local_day = stats_plan.plan_timeseries(TimeseriesRequest(kolkata, "day"))
    assert by_local_day.answer.form == "raw series"
    query, params = stats_sql_context.context_totals_sql(aggregate(kolkata).answer, kolkata)
    text = query.as_string(None)
    assert "dimension = 'country' AND value = %(f0)s" in text and 'coalesce("country"' in text
    assert params["f0"] == "NL" and "NL" not in text


def test_other_context_filters_read_raw_events_for_every_question() -> None:
    nl = Filter("country", False, "NL")
    request = stats("2025-11-01", "2025-11-30", "UTC", nl, Filter("device", True, "mobile"))
    raw = (Instants("events", utc("2025-11-01 00:00"), utc("2025-12-01 00:00")),)
    assert aggregate(request).answer.form == "raw totals"
    assert aggregate(request).answer.parts == raw
    series = stats_plan.plan_timeseries(TimeseriesRequest(request, "day"))
    assert (series.answer.form, series.answer.parts) == ("raw series", raw)
    request = stats("2025-11-01", "2025-11-30", "UTC", nl)
    pages = stats_plan.plan_breakdown(BreakdownRequest(request, "path", 10, 1), TODAY)
    assert (pages.answer.form, pages.answer.parts, pages.then) == ("raw ranking", raw, None)
    # A context breakdown with any filter: no rollup holds context per event type or path.
    signups = stats("2025-11-01", "2025-11-30", "UTC", Filter("event_type", False, "signup"))
    by_os = stats_plan.plan_breakdown(BreakdownRequest(signups, "os", 10, 1), TODAY)
    assert by_os.answer.form == "raw ranking"


def test_a_context_breakdown_with_one_context_filter_reads_the_pairs_rollup() -> None:
    nl, not_mobile = Filter("country", False, "NL"), Filter("device", True, "mobile")
    month = (D(2025, 11, 1), D(2025, 12, 1))
    for f in (nl, not_mobile):
        request = BreakdownRequest(stats("2025-11-01", "2025-11-30", "UTC", f), "browser", 10, 1)
        plan = stats_plan.plan_breakdown(request, TODAY)
        assert plan.answer == Statement("context ranking", (Days("daily_dimension_pairs", *month),))
    # On the breakdown's own dimension: its own rows of daily_dimensions; raw edges as ever.
    same = BreakdownRequest(stats("2025-11-12", "2025-11-12", "Asia/Kolkata", nl), "country", 10, 1)
    assert stats_plan.plan_breakdown(same, TODAY).answer.parts == (
        Edges("events", ((utc("2025-11-11 18:30"), utc("2025-11-12 18:30")),)),
    )
    same_utc = BreakdownRequest(stats("2025-11-01", "2025-11-30", "UTC", nl), "country", 10, 1)
    assert stats_plan.plan_breakdown(same_utc, TODAY).answer.parts == (
        Days("daily_dimensions", *month),
    )
    # Two filters, or one a pair cannot answer: raw events.
    for filters in ((nl, not_mobile), (Filter("event_type", False, "signup"),)):
        request = BreakdownRequest(stats("2025-11-01", "2025-11-30", "UTC", *filters), "os", 10, 1)
        assert stats_plan.plan_breakdown(request, TODAY).answer.form == "raw ranking"


def test_the_pairs_statement_reads_the_filter_s_rows_with_its_value_bound() -> None:
    f = Filter("country", True, "NL")
    request = BreakdownRequest(stats("2025-11-01", "2025-11-30", "UTC", f), "browser", 10, 1)
    plan = stats_plan.plan_breakdown(request, TODAY)
    query, params = stats_sql_context.context_ranking_sql(plan.answer, request)
    text = query.as_string(None)
    # The pair (browser, country) is kept in that order: the country is its second value.
    assert 'SELECT "value_a", page_views, events, visitors FROM daily_dimension_pairs' in text
    assert "dimension_a = 'browser' AND dimension_b = 'country'" in text
    assert '"value_b" <> %(f0)s' in text
    assert "NL" not in text and params["f0"] == "NL"
    on_device = Filter("device", False, "tablet")
    by_country = BreakdownRequest(
        stats("2025-11-01", "2025-11-30", "UTC", on_device), "country", 10, 1
    )
    plan = stats_plan.plan_breakdown(by_country, TODAY)
    text = stats_sql_context.context_ranking_sql(plan.answer, by_country)[0].as_string(None)
    assert 'SELECT "value_b", page_views' in text and '"value_a" = %(f0)s' in text
    assert "dimension_a = 'device' AND dimension_b = 'country'" in text


def props(request: StatsRequest, key: str | None = "plan") -> BreakdownRequest:
    return BreakdownRequest(request, "props", 10, 1, key)


def test_a_property_breakdown_of_utc_days_reads_daily_props_only() -> None:
    plan = stats_plan.plan_breakdown(props(stats("2025-11-01", "2025-11-30")), TODAY)
    assert plan.answer.form == "props ranking"
    assert plan.answer.parts == (Days("daily_props", D(2025, 11, 1), D(2025, 12, 1)),)
    assert plan.then is None


def test_a_property_breakdown_in_another_zone_adds_raw_edges() -> None:
    request = props(stats("2025-11-11", "2025-11-13", "America/St_Johns"))
    plan = stats_plan.plan_breakdown(request, TODAY)
    # St John's 11 to 13 November is 11 Nov 03:30 to 14 Nov 03:30 UTC.
    assert plan.answer.parts == (
        Days("daily_props", D(2025, 11, 12), D(2025, 11, 14)),
        Edges(
            "events",
            (
                (utc("2025-11-11 03:30"), utc("2025-11-12 00:00")),
                (utc("2025-11-14 00:00"), utc("2025-11-14 03:30")),
            ),
        ),
    )


def test_a_property_breakdown_of_an_event_type_reads_its_daily_props_rows() -> None:
    for negated in (False, True):
        request = stats("2025-11-12", "2025-11-12", "UTC", Filter("event_type", negated, "signup"))
        plan = stats_plan.plan_breakdown(props(request), TODAY)
        assert plan.answer.form == "props ranking"
        assert stats_plan_parts.tables(plan) == {"daily_props"}
        text = stats_sql_context.props_ranking_sql(plan.answer, props(request))[0]
        assert '"event_type" ' in text.as_string(None)  # applied to daily_props rows


def test_a_property_breakdown_with_any_other_filter_reads_raw_events() -> None:
    raw = (Instants("events", utc("2025-11-12 00:00"), utc("2025-11-13 00:00")),)
    for other in (
        Filter("path", False, "/a"),
        Filter("country", False, "NL"),
        Filter("props", True, "ads", "source"),
    ):
        request = stats("2025-11-12", "2025-11-12", "UTC", other)
        plan = stats_plan.plan_breakdown(props(request), TODAY)
        assert (plan.answer.form, plan.answer.parts) == ("raw props ranking", raw)


def test_every_key_is_one_statement_without_a_key_condition() -> None:
    request = props(stats("2025-11-12", "2025-11-12"), key=None)
    plan = stats_plan.plan_breakdown(request, TODAY)
    query, params = stats_sql_context.props_ranking_sql(plan.answer, request)
    assert "%(key)s" not in query.as_string(None) and params["key"] is None
    one_key = props(stats("2025-11-12", "2025-11-12"))
    query, params = stats_sql_context.props_ranking_sql(plan.answer, one_key)
    assert "key = %(key)s" in query.as_string(None) and params["key"] == "plan"


def test_a_property_filter_reads_raw_events_for_every_question() -> None:
    pro = Filter("props", False, "pro", "plan")
    request = stats("2025-11-01", "2025-11-30", "UTC", pro)
    assert aggregate(request).answer.form == "raw totals"
    series = stats_plan.plan_timeseries(TimeseriesRequest(request, "day"))
    assert series.answer.form == "raw series"
    for dimension in ("path", "event_type", "browser"):
        plan = stats_plan.plan_breakdown(BreakdownRequest(request, dimension, 10, 1), TODAY)  # type: ignore[arg-type]
        assert plan.answer.form == "raw ranking"


def test_a_property_filters_key_and_value_are_bound_so_one_text_serves_every_key() -> None:
    def statement(key: str, value: str) -> tuple[str, dict[str, object]]:
        request = stats("2025-11-01", "2025-11-30", "UTC", Filter("props", False, value, key))
        query, params = stats_sql_context.raw_totals_sql(aggregate(request).answer, request)
        return query.as_string(None), params

    text, params = statement("plan", "pro")
    assert "coalesce(props ->> %(f0k)s, '(none)') = %(f0)s" in text
    assert (params["f0k"], params["f0"]) == ("plan", "pro")
    assert statement("x' OR TRUE --", "y")[0] == text
