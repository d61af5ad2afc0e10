"""Ranking a visit breakdown by visitors from candidates taken in order of visits
(ingest/stats_visits_rank.py), and Plausible's `pageviews` name: pure logic, driven here by
a list of values standing in for the statements' rows."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from ingest.errors import BadRequest
from ingest.stats_params import parse_breakdown, parse_stats, parse_timeseries, views_named
from ingest.stats_response import with_views_named
from ingest.stats_visits import VisitSums
from ingest.stats_visits_rank import (
    MAX_EXTRA_VISITOR_CANDIDATES,
    Ranked,
    VisitorSearch,
    Window,
    page_window,
    settled,
    shown_visitors,
)

NOW = dt.datetime(2025, 11, 20, 12, 0, tzinfo=dt.UTC)


def of(visits: int, visitors: float) -> VisitSums:
    return VisitSums(visits, 0, 0, visits, visitors)


def test_visitors_shown_are_the_rounded_estimate_at_most_the_visits() -> None:
    assert shown_visitors(of(10, 7.4)) == 7
    assert shown_visitors(of(10, 12.2)) == 10  # an estimate above the visits
    assert shown_visitors(of(3, 0)) == 0


def test_a_page_ranked_on_sums_merges_visitors_only_when_asked() -> None:
    assert page_window(10, 20, True) == Window(10, 20, 10)
    assert page_window(10, 20, False) == Window(10, 20, 0)


def test_settled_once_the_last_candidate_cannot_beat_the_last_row_shown() -> None:
    merged: list[Ranked] = [("/a", of(9, 8)), ("/b", of(8, 2)), ("/c", of(5, 5))]
    # The second by visitors is /c (5): anything not merged has at most 5 visits, and with 5
    # it sorts after /c (ties by value), so it cannot beat /c.
    assert settled(merged, 2, exhausted=False)
    # /b's 8 visits could hide 8 visitors elsewhere: a value after /b with 6 visits might.
    assert not settled(merged[:2], 2, exhausted=False)
    # A later value with /c's visits sorts after /c only if its name does.
    assert not settled([("/z", of(9, 9)), ("/c", of(5, 5)), ("/a", of(5, 1))], 2, False)
    assert settled([("/a", of(9, 9)), ("/b", of(5, 5)), ("/c", of(5, 1))], 2, False)
    assert not settled(merged[:1], 2, exhausted=False)  # fewer than the page needs
    assert settled(merged[:1], 2, exhausted=True)
    assert settled([], 2, exhausted=True) and not settled([], 2, exhausted=False)


def run(values: dict[str, VisitSums], offset: int, limit: int) -> tuple[list[Ranked], int]:
    """The search against `values` as the statements would answer it; the page and the
    number of sketches merged."""
    by_visits = sorted(values.items(), key=lambda kv: (-kv[1].visits, kv[0]))
    search = VisitorSearch(offset + limit)
    step: Window | list[str] | None = search.first()
    merges = 0
    while step is not None:
        if isinstance(step, Window):
            rows = by_visits[step.offset : step.offset + step.limit]
            blank = [(value, sums._replace(visitors=0)) for value, sums in rows]
            search.add_window(step, rows[: step.merge] + blank[step.merge :])
            merges += min(step.merge, len(rows))
        else:
            search.add_visitors({value: values[value].visitors for value in step})
            merges += len(step)
        step = search.next()
    return search.page(offset, limit), merges


def exact(values: dict[str, VisitSums], offset: int, limit: int) -> list[Ranked]:
    ranked = sorted(values.items(), key=lambda kv: (-shown_visitors(kv[1]), kv[0]))
    return ranked[offset : offset + limit]


@pytest.mark.parametrize("seed", range(40))
def test_the_search_finds_the_page_a_full_ranking_would(seed: int) -> None:
    rng = random.Random(seed)
    values = {}
    for i in range(rng.randint(0, 400)):
        visitors = rng.choice([rng.randint(1, 5), rng.randint(1, 300)])
        visits = visitors + rng.choice([0, rng.randint(0, 3), rng.randint(0, 2000)])
        estimate = visitors * rng.uniform(0.97, 1.03)  # a sketch's error, either way
        values[f"/{rng.choice('abc')}{i}"] = of(visits, estimate)
    for offset, limit in ((0, 1), (0, 10), (0, 100), (20, 10), (90, 30)):
        page, merges = run(values, offset, limit)
        assert page == exact(values, offset, limit), (offset, limit)
        assert merges <= offset + limit + MAX_EXTRA_VISITOR_CANDIDATES


def test_values_visited_by_few_returning_visitors_make_the_search_read_further() -> None:
    """Fifty values of one visitor each with many visits rank first by visits; the value
    with the most visitors comes after them, beyond the first window."""
    values = {f"/bot/{i:02}": of(100 + i, 1) for i in range(50)}
    values["/real"] = of(40, 40)
    values.update({f"/small/{i}": of(3, 3) for i in range(30)})
    page, merges = run(values, 0, 2)
    assert page == [("/real", of(40, 40)), ("/small/0", of(3, 3))]
    assert merges < len(values)  # the small values after /real stay unmerged but one


def test_the_search_stops_at_its_bound() -> None:
    """Past need + MAX_EXTRA_VISITOR_CANDIDATES candidates the page ranks those merged."""
    many = MAX_EXTRA_VISITOR_CANDIDATES + 50
    values = {f"/bot/{i:05}": of(10_000 - i, 1) for i in range(many)}
    values["/real"] = of(5, 5)
    page, merges = run(values, 0, 1)
    assert merges == 1 + MAX_EXTRA_VISITOR_CANDIDATES
    assert page == [("/bot/00000", of(10_000, 1))]


def test_pageviews_is_read_as_views_in_every_metric_list() -> None:
    base = {"site_id": "s", "period": "day", "date": "2025-11-12"}
    assert parse_stats({**base, "metrics": "pageviews,visitors"}, now=NOW).metrics == (
        "views",
        "visitors",
    )
    series = parse_timeseries({**base, "metrics": "visits,pageviews"}, now=NOW)
    assert series.stats.metrics == ("visits", "views")
    breakdown = parse_breakdown(
        {**base, "property": "visit:source", "metrics": "pageviews,views"}, now=NOW
    )
    assert breakdown.stats.metrics == ("views",)
    with pytest.raises(BadRequest) as refused:
        parse_stats({**base, "metrics": "pageview"}, now=NOW)
    assert refused.value.field == "metrics" and "pageviews" in str(refused.value)


def test_the_answer_names_page_views_as_the_metric_list_does() -> None:
    assert views_named({"metrics": "visitors, pageviews"}) == "pageviews"
    assert views_named({"metrics": "views,pageviews"}) == "views"
    assert views_named({}) == "views"
    totals = {"results": {"visitors": {"value": 1}, "views": {"value": 2}}}
    assert with_views_named(totals, "pageviews")["results"] == {
        "visitors": {"value": 1},
        "pageviews": {"value": 2},
    }
    rows = {"results": [{"source": "Google", "views": 3}, {"source": "x", "views": 1}]}
    assert with_views_named(rows, "pageviews")["results"] == [
        {"source": "Google", "pageviews": 3},
        {"source": "x", "pageviews": 1},
    ]
    assert with_views_named(rows, "views") is rows
