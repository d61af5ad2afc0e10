"""Which branches a statement holds once the facts last seen are known: one test per choice,
no database (ingest/stats_expect.py)."""

from __future__ import annotations

import datetime as dt

from ingest import stats_days, stats_plan, stats_sql, stats_sql_breakdown
from ingest.stats_expect import Facts, FactsCache, expect, has_choices, held
from ingest.stats_params import BreakdownRequest, StatsRequest, TimeseriesRequest
from ingest.stats_plan_parts import IfKept, IfSealed, LocalMonths, Months, Statement

TODAY = dt.date(2026, 1, 15)
D = dt.date
KEPT_SEALED = Facts(kept=True, sealed_before=D(2026, 1, 13))
KEPT_OPEN = Facts(kept=True, sealed_before=D(2025, 11, 13))
NOT_KEPT = Facts(kept=False, sealed_before=D(2026, 1, 13))


def stats(first: str, last: str, zone: str, metrics: tuple[str, ...]) -> StatsRequest:
    days = stats_days.make_range(D.fromisoformat(first), D.fromisoformat(last), zone)
    return StatsRequest("s", days, metrics)  # type: ignore[arg-type]


def month_pages(
    zone: str = "Asia/Kolkata", metrics: tuple[str, ...] = ("views",)
) -> BreakdownRequest:
    return BreakdownRequest(stats("2025-11-01", "2025-11-30", zone, metrics), "path", 10, 1)


def pages_text(statement: Statement, request: BreakdownRequest) -> str:
    return stats_sql_breakdown.breakdown_sql(statement, request)[0].as_string(None)


def test_facts_say_a_month_is_sealed_when_the_watermark_reaches_its_end() -> None:
    december = D(2025, 12, 1)
    assert Facts(True, december).sealed(december)
    assert not Facts(True, D(2025, 11, 30)).sealed(december)
    assert not Facts(True, None).sealed(december)  # '-infinity': nothing sealed yet


def test_a_kept_and_sealed_month_of_pages_holds_only_its_sealed_rows_still_gated() -> None:
    request = month_pages()
    planned = stats_plan.plan_breakdown(request, TODAY).answer
    sent = expect(planned, KEPT_SEALED)
    [choice] = sent.parts
    assert isinstance(choice, IfKept) and choice.expected is True
    [sealed] = choice.kept
    assert isinstance(sealed, IfSealed) and sealed.expected is True
    text = pages_text(sent, request)
    assert "sealed_monthly_paths" in text
    for other in ("local_monthly_paths", "daily_paths", "quarter_hour_paths"):
        assert other not in text
    assert "UNION ALL" not in text  # one branch, no union to plan
    assert "FROM site_zones" in text and "sealed_before >=" in text  # the gates stay in SQL
    assert text.startswith("SELECT f.kept, f.sealed_before, r.*")  # and the facts come back
    assert len(text) < len(pages_text(planned, request)) / 2


def test_a_kept_month_not_yet_sealed_reads_the_zones_monthly_rows() -> None:
    request = month_pages()
    sent = expect(stats_plan.plan_breakdown(request, TODAY).answer, KEPT_OPEN)
    text = pages_text(sent, request)
    assert "local_monthly_paths" in text and "sealed_monthly_paths" not in text


def test_a_zone_the_site_does_not_keep_reads_only_the_utc_pieces() -> None:
    request = month_pages()
    sent = expect(stats_plan.plan_breakdown(request, TODAY).answer, NOT_KEPT)
    text = pages_text(sent, request)
    assert "local_" not in text and "sealed_monthly_paths" not in text
    # the UTC month, plus and minus the quarter hours around it
    assert "monthly_paths" in text and "quarter_hour_paths" in text
    assert "NOT (SELECT EXISTS" in text  # gated on the zone not being kept


def test_pages_by_visitors_in_a_kept_zone_hold_one_ranking() -> None:
    request = month_pages(metrics=("visitors", "views"))
    planned = stats_plan.plan_breakdown(request, TODAY).answer
    assert planned.form == "pages by visitors"
    kept = pages_text(expect(planned, KEPT_SEALED), request)
    assert "local_daily_paths" in kept and "daily_details" not in kept
    general = pages_text(expect(planned, NOT_KEPT), request)
    assert "local_daily_paths" not in general and "daily_details" in general


def test_totals_and_a_daily_series_in_a_kept_zone_hold_the_local_rows_only() -> None:
    request = stats("2025-11-01", "2025-11-30", "Asia/Kolkata", ("views", "visitors"))
    planned = stats_plan.plan_aggregate(request, 1000).answer
    text = stats_sql.aggregate_sql(expect(planned, KEPT_SEALED), "s", "Asia/Kolkata", ())[0]
    assert "local_daily_stats" in text.as_string(None)
    assert "quarter_hour_stats" not in text.as_string(None)
    series = stats_plan.plan_timeseries(TimeseriesRequest(request, "day")).answer
    text = stats_sql.series_sql(expect(series, NOT_KEPT), "s", "Asia/Kolkata", "day", ())[0]
    assert "quarter_hour_stats" in text.as_string(None)
    assert "local_daily_stats" not in text.as_string(None)
    assert text.as_string(None).rstrip().endswith("ORDER BY 3")  # by period, after the facts


def test_the_expected_statement_is_a_shape_of_its_own_with_the_same_placeholders() -> None:
    request = month_pages()
    planned = stats_plan.plan_breakdown(request, TODAY).answer
    sent = expect(planned, KEPT_SEALED)
    query, params = stats_sql_breakdown.breakdown_sql(sent, request)
    full, _ = stats_sql_breakdown.breakdown_sql(planned, request)
    assert query is not full
    for name in ("p1_end", "p2_first"):  # IfSealed (p0 IfKept has none), its sealed month
        assert any(key.startswith(name) for key in params)
        assert f"%({name}" in query.as_string(None)


def test_a_statement_holds_when_its_snapshot_selects_the_branches_it_holds() -> None:
    planned = stats_plan.plan_breakdown(month_pages(), TODAY).answer
    sent = expect(planned, KEPT_SEALED)
    assert held(sent, planned, KEPT_SEALED)
    assert not held(sent, planned, NOT_KEPT)  # the zone was removed meanwhile
    assert not held(sent, planned, KEPT_OPEN)
    assert held(planned, planned, NOT_KEPT)  # every branch: always
    assert held(expect(planned, NOT_KEPT), planned, Facts(False, None))  # seal not read


def test_only_statements_with_choices_report_facts() -> None:
    utc = month_pages("UTC")
    planned = stats_plan.plan_breakdown(utc, TODAY).answer
    assert has_choices(planned.parts)  # an ended UTC month: sealed or not
    filtered = stats("2025-11-01", "2025-11-30", "UTC", ("views",))
    plain = stats_plan.plan_aggregate(filtered, 1000).answer
    assert not has_choices(plain.parts)
    text = stats_sql.aggregate_sql(plain, "s", "UTC", ())[0].as_string(None)
    assert "f.kept" not in text


def test_a_utc_month_that_has_not_ended_is_never_sealed_and_asks_nothing() -> None:
    request = month_pages("UTC")
    ended = stats_plan.plan_breakdown(request, TODAY).answer
    assert isinstance(ended.parts[0], IfSealed)
    current = stats_plan.plan_breakdown(request, D(2025, 11, 20)).answer
    assert current.parts == (Months("monthly_paths", D(2025, 11, 1), D(2025, 12, 1)),)
    assert not has_choices(current.parts)
    # the day the month ends it still has not ended before today
    assert not has_choices(stats_plan.plan_breakdown(request, D(2025, 12, 1)).answer.parts)


def test_the_expectation_reaches_choices_inside_choices() -> None:
    planned = stats_plan.plan_breakdown(month_pages(), TODAY).answer
    [choice] = expect(planned, KEPT_OPEN).parts
    assert isinstance(choice, IfKept)
    [sealed] = choice.kept
    assert isinstance(sealed, IfSealed) and sealed.expected is False
    month = sealed.otherwise[0]
    assert isinstance(month, LocalMonths) and month.table == "local_monthly_paths"


def test_the_facts_cache_is_bounded_and_forgets_the_least_recently_used() -> None:
    cache = FactsCache(size=2)
    cache.put("a", "Asia/Kolkata", KEPT_SEALED)
    cache.put("b", "Asia/Kolkata", NOT_KEPT)
    assert cache.get("a", "Asia/Kolkata") == KEPT_SEALED  # now the most recent
    cache.put("c", "Asia/Kolkata", NOT_KEPT)
    assert len(cache) == 2
    assert cache.get("b", "Asia/Kolkata") is None
    assert cache.get("a", "UTC") is None  # per zone
    cache.put("a", "Asia/Kolkata", NOT_KEPT)
    assert cache.get("a", "Asia/Kolkata") == NOT_KEPT  # every answer refreshes it


def test_a_pair_never_seen_is_guessed_unkept_with_the_seal_last_seen() -> None:
    cache = FactsCache()
    assert cache.guess("a", "Asia/Kolkata") is None  # nothing seen: every branch is sent
    cache.put("a", "Asia/Kolkata", KEPT_OPEN)
    cache.put("b", "Europe/Berlin", KEPT_SEALED)
    assert cache.guess("a", "Asia/Kolkata") == KEPT_OPEN  # what was seen wins
    # One seal for every site (the latest seen), and a zone not asked before is not kept.
    assert cache.guess("c", "Asia/Kathmandu") == Facts(False, KEPT_SEALED.sealed_before)
    cache.clear()
    assert cache.guess("c", "Asia/Kathmandu") is None


def test_seeded_facts_never_replace_reported_ones_nor_evict_them() -> None:
    cache = FactsCache(size=2)
    cache.put("a", "Asia/Kolkata", NOT_KEPT)
    cache.seed("a", "Asia/Kolkata", KEPT_SEALED)  # reported: kept as reported
    cache.seed("b", "Asia/Kolkata", KEPT_SEALED)  # the least recently used
    cache.seed("c", "Asia/Kolkata", KEPT_SEALED)  # full: left out
    assert cache.get("a", "Asia/Kolkata") == NOT_KEPT
    assert cache.get("c", "Asia/Kolkata") is None
    cache.put("d", "Asia/Kolkata", NOT_KEPT)  # evicts the seeded pair first
    assert cache.get("b", "Asia/Kolkata") is None
    assert cache.get("a", "Asia/Kolkata") == NOT_KEPT


def test_a_page_limit_is_written_as_a_number_so_a_generic_plan_can_be_chosen() -> None:
    request = month_pages()
    sent = expect(stats_plan.plan_breakdown(request, TODAY).answer, KEPT_SEALED)
    text = pages_text(sent, request)
    assert "LIMIT 10)" in text and "%(limit)s" not in text and "OFFSET" not in text
    second = BreakdownRequest(request.stats, "path", 10, 2)
    query, params = stats_sql_breakdown.breakdown_sql(sent, second)
    assert "LIMIT 10 OFFSET %(offset)s" in query.as_string(None) and params["offset"] == 10
