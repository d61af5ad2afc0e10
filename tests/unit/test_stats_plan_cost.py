"""Which plans are costly (they queue for a few slots), and the queue itself: no database."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from ingest import stats_days, stats_plan, stats_plan_parts
from ingest.stats_params import BreakdownRequest, Filter, StatsRequest, TimeseriesRequest
from ingest.stats_plan_cost import costly
from ingest.stats_plan_parts import Edges
from ingest.stats_run import CostlyBusy, CostlyPlans

TODAY = dt.date(2026, 1, 15)
NOVEMBER = (dt.date(2025, 11, 1), dt.date(2025, 11, 30))
ALL = ("views", "visitors", "events")


def stats(zone: str, *filters: Filter, metrics: tuple[str, ...] = ALL) -> StatsRequest:
    return StatsRequest("s", stats_days.make_range(*NOVEMBER, zone), metrics, filters)  # type: ignore[arg-type]


def breakdown(zone: str, dimension: str, *filters: Filter) -> stats_plan_parts.Plan:
    metrics = ("events", "visitors") if dimension == "event_type" else ("views", "visitors")
    request = BreakdownRequest(stats(zone, *filters, metrics=metrics), dimension, 10, 1)  # type: ignore[arg-type]
    return stats_plan.plan_breakdown(request, TODAY)


PAGE_B = Filter("path", False, "/b")


def test_a_path_filter_without_events_reads_rollups_only_in_every_zone() -> None:
    for zone in ("UTC", "Europe/Berlin", "Asia/Kathmandu"):
        plan = stats_plan.plan_aggregate(stats(zone, PAGE_B, metrics=("visitors", "views")), 0)
        assert "events" not in stats_plan_parts.tables(plan), zone
        assert costly(plan) is None, zone


def test_a_path_filter_counting_events_reads_other_types_of_its_path_at_the_edges() -> None:
    plan = stats_plan.plan_aggregate(stats("Europe/Berlin", PAGE_B), 0)
    others = [p for p in plan.answer.parts if isinstance(p, Edges) and p.other_types]
    assert [(p.table, p.per_path) for p in others] == [("quarter_hour_event_paths", True)]
    # one local hour before the UTC month, 23 after its last whole UTC day
    assert sum(((b - a) for a, b in others[0].spans), dt.timedelta()) == dt.timedelta(hours=24)
    assert "events" not in stats_plan_parts.tables(plan)
    assert costly(plan) is None
    assert costly(stats_plan.plan_aggregate(stats("UTC", PAGE_B), 0)) is None


def test_event_types_read_their_edges_from_rollups_in_any_zone() -> None:
    # page views from hourly and quarter-hour rows, the other types from their quarter hours
    plan = breakdown("Asia/Kathmandu", "event_type")
    tables = [p.table for p in plan.answer.parts]  # type: ignore[union-attr]
    assert tables == [
        "daily_event_types",
        "hourly_stats",
        "quarter_hour_stats",
        "quarter_hour_event_types",
    ]
    others = plan.answer.parts[-1]  # type: ignore[union-attr]
    assert isinstance(others, Edges) and others.other_types and not others.per_path
    for zone in ("UTC", "Europe/Berlin", "Asia/Kathmandu"):
        assert costly(breakdown(zone, "event_type")) is None
        one_type = stats_plan.plan_aggregate(stats(zone, Filter("event_type", False, "x")), 0)
        assert "events" not in stats_plan_parts.tables(one_type)
        assert costly(one_type) is None


def test_only_page_views_read_no_raw_events_whatever_the_zone() -> None:
    views = Filter("event_type", False, "page_view")
    plan = stats_plan.plan_aggregate(stats("Asia/Kathmandu", views), 0)
    assert "events" not in stats_plan_parts.tables(plan)
    assert "hourly_stats" in stats_plan_parts.tables(plan)
    one_type = stats_plan.plan_aggregate(
        stats("Asia/Kathmandu", Filter("event_type", False, "x")), 0
    )
    assert "hourly_stats" not in stats_plan_parts.tables(one_type)  # no page view passes


def test_the_dashboards_top_pages_are_not_costly_in_any_zone() -> None:
    # The edges of a month or of 30 days read at most a UTC day of quarter hours each side:
    # within the bound, so a dashboard in any zone never queues behind costly plans.
    for zone in ("UTC", "Asia/Kathmandu", "Europe/Berlin"):
        assert costly(breakdown(zone, "path")) is None


def test_totals_and_series_of_any_zone_are_not_costly_unless_filtered_raw() -> None:
    for zone in ("UTC", "Europe/Berlin", "Asia/Kathmandu"):
        assert costly(stats_plan.plan_aggregate(stats(zone), 0)) is None
        series = TimeseriesRequest(stats(zone), "day")
        assert costly(stats_plan.plan_timeseries(series)) is None
    country = Filter("country", False, "DE")
    raw = stats_plan.plan_aggregate(stats("UTC", country, Filter("device", False, "x")), 0)
    assert costly(raw) == "it reads raw events"


async def test_costly_plans_queue_first_come_first_served_then_refuse() -> None:
    plans = CostlyPlans(limit=1, wait_s=60, max_waiting=1)
    order: list[str] = []
    release = asyncio.Event()

    async def hold(name: str) -> None:
        async with plans.slot("r"):
            order.append(name)
            await release.wait()

    first = asyncio.create_task(hold("first"))
    await asyncio.sleep(0)
    second = asyncio.create_task(hold("second"))
    for _ in range(10):  # the second task reaches the queue within a few turns
        if plans.waiting:
            break
        await asyncio.sleep(0)
    assert plans.waiting == 1
    with pytest.raises(CostlyBusy):  # the queue is full: refused at once
        async with plans.slot("r"):
            pass
    release.set()
    await asyncio.gather(first, second)
    assert order == ["first", "second"]
    assert plans.waiting == 0


async def test_a_costly_plan_waits_at_most_its_longest() -> None:
    plans = CostlyPlans(limit=1, wait_s=0.01, max_waiting=8)
    async with plans.slot("r"):
        with pytest.raises(CostlyBusy) as refused:
            async with plans.slot("it reads raw events"):
                pass
    assert refused.value.reason == "it reads raw events" and refused.value.limit == 1
    async with plans.slot("r"):  # the slot is free again
        pass


async def test_a_client_holds_every_costly_slot_but_one() -> None:
    plans = CostlyPlans(limit=2, wait_s=60, max_waiting=8)  # one slot a client
    release = asyncio.Event()
    running: list[str] = []

    async def hold(name: str, client: str) -> None:
        async with plans.slot("r", client):
            running.append(name)
            await release.wait()

    tasks = [asyncio.create_task(hold("a1", "a")), asyncio.create_task(hold("a2", "a"))]
    for _ in range(10):
        await asyncio.sleep(0)
    assert running == ["a1"]  # a slot is free, but the client's next waits for its first
    tasks.append(asyncio.create_task(hold("b1", "b")))
    for _ in range(10):
        await asyncio.sleep(0)
    assert running == ["a1", "b1"]  # another client takes the free slot at once
    release.set()
    await asyncio.gather(*tasks)
    assert running == ["a1", "b1", "a2"]
    assert plans.waiting == 0 and not plans._clients


async def test_with_three_slots_a_client_runs_two_at_once() -> None:
    plans = CostlyPlans(limit=3, wait_s=60, max_waiting=8)
    release = asyncio.Event()
    running: list[str] = []

    async def hold(name: str, client: str) -> None:
        async with plans.slot("r", client):
            running.append(name)
            await release.wait()

    tasks = [asyncio.create_task(hold(f"a{i}", "a")) for i in range(3)]
    for _ in range(10):
        await asyncio.sleep(0)
    assert running == ["a0", "a1"]
    tasks.append(asyncio.create_task(hold("b0", "b")))
    for _ in range(10):
        await asyncio.sleep(0)
    assert running == ["a0", "a1", "b0"]
    release.set()
    await asyncio.gather(*tasks)
    assert sorted(running) == ["a0", "a1", "a2", "b0"]
