"""Placing events in visits (consumer/sessions.py): the rule, and that in-order events give
exactly a plain sessionization sorted by time however they are split into batches."""

from __future__ import annotations

import datetime as dt
import itertools
import random

import pytest

from consumer.sessions import Origin, Visit, place, sessionize

T0 = dt.datetime(2025, 11, 12, 23, 0, tzinfo=dt.UTC)
TIMEOUT = dt.timedelta(minutes=30)
NONE: Origin = (None,) * 11


def at(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=round(minutes * 60, 3))


def hit(
    minutes: float, path: str = "/", page_view: bool = True, origin: Origin = NONE
) -> tuple[dt.datetime, bool, str, Origin]:
    return (at(minutes), page_view, path, origin)


def visit(first: float, last: float, entry: str = "/", exit: str = "/", events: int = 2) -> Visit:
    return Visit(at(first), at(last), entry, exit, NONE, events, events)


def spans(placed: list[tuple[dt.datetime | None, Visit]]) -> list[tuple[float, float, int]]:
    minute = dt.timedelta(minutes=1)
    return [
        (round((v.started_at - T0) / minute, 6), round((v.last_at - T0) / minute, 6), v.events)
        for _, v in placed
    ]


def test_a_gap_up_to_the_timeout_continues_the_visit_and_a_longer_one_ends_it() -> None:
    placed = place([], [hit(0), hit(30), hit(60.01)], TIMEOUT)
    assert spans(placed) == [(0, 30, 2), (60.01, 60.01, 1)]
    assert [was for was, _ in placed] == [None, None]


def test_entry_exit_duration_and_bounce() -> None:
    (_, one), (_, two) = place(
        [], [hit(0, "/a"), hit(1.5, "/b", page_view=False), hit(40, "/c")], TIMEOUT
    )
    assert (one.entry_page, one.exit_page, one.page_views, one.events) == ("/a", "/b", 1, 2)
    assert one.duration_s == 90 and not one.bounced
    assert two.bounced and two.duration_s == 0
    (_, click), *_ = place([], [hit(0, page_view=False)], TIMEOUT)
    assert not click.bounced  # one event, but not a page view


def test_the_origin_is_the_first_events() -> None:
    first = ("news.example", "News", "news", None, None, None, None, "Firefox", "Linux", "desktop",
             "FR")  # fmt: skip
    (_, v), *_ = place([], [hit(0, origin=first), hit(1, origin=NONE)], TIMEOUT)
    assert v.origin == first


def test_a_stored_visit_is_continued_and_reported_by_its_stored_start() -> None:
    stored = visit(0, 10, exit="/x")
    placed = place([stored], [hit(39, "/y")], TIMEOUT)
    assert placed[0][0] is not None and placed[0][0].started_at == at(0)
    assert spans(placed) == [(0, 39, 3)] and placed[0][1].exit_page == "/y"


def test_an_event_inside_a_visit_joins_it_without_moving_its_ends() -> None:
    placed = place([visit(0, 20, "/in", "/out")], [hit(5, "/mid")], TIMEOUT)
    assert spans(placed) == [(0, 20, 3)]
    assert (placed[0][1].entry_page, placed[0][1].exit_page) == ("/in", "/out")


def test_an_event_at_a_visits_start_joins_it_without_moving_its_entry() -> None:
    placed = place([visit(0, 20, "/in", "/out")], [hit(0, "/same-instant")], TIMEOUT)
    assert placed[0][1].entry_page == "/in"


def test_a_late_event_within_the_timeout_before_a_visit_moves_its_start() -> None:
    late = ("ads.example", None, "ads", "cpc", None, None, None, None, None, None, None)
    placed = place([visit(0, 10, "/in")], [hit(-25, "/earlier", origin=late)], TIMEOUT)
    assert placed[0][0] == visit(0, 10, "/in")  # as stored: the row to replace
    assert spans(placed) == [(-25, 10, 3)]
    assert placed[0][1].entry_page == "/earlier" and placed[0][1].origin == late


def test_an_event_older_than_that_starts_a_visit_of_its_own() -> None:
    placed = place([visit(0, 10)], [hit(-31)], TIMEOUT)
    assert spans(placed) == [(-31, -31, 1)]
    assert placed[0][0] is None


def test_two_stored_visits_are_never_merged() -> None:
    # 15 minutes after the first and 15 before the second: it joins the later one.
    early, later = visit(0, 10), visit(40, 50)
    placed = place([early, later], [hit(25)], TIMEOUT)
    assert placed[0][0] is not None and placed[0][0].started_at == at(40)
    assert spans(placed) == [(25, 50, 3)]
    assert early.last_at == at(10)


def test_a_late_event_continues_the_visit_before_it_when_none_follows_close() -> None:
    placed = place([visit(0, 10), visit(100, 110)], [hit(35)], TIMEOUT)
    assert spans(placed) == [(0, 35, 3)]


def plain(times: list[float]) -> list[tuple[float, float, int]]:
    """Sessionization of all events at once, sorted: the oracle."""
    visits: list[list[float]] = []
    for t in sorted(times):
        if visits and t - visits[-1][1] <= 30:
            visits[-1][1] = t
            visits[-1][2] += 1
        else:
            visits.append([t, t, 1])
    return [(a, b, int(n)) for a, b, n in visits]


@pytest.mark.parametrize("seed", range(20))
def test_in_order_events_in_any_batches_give_a_plain_sessionization(seed: int) -> None:
    rng = random.Random(seed)
    times = sorted(round(rng.expovariate(1 / 20), 2) for _ in range(60))
    times = [round(sum(times[: i + 1]), 2) for i in range(len(times))]  # gaps around 20 min
    stored: list[Visit] = []
    rest = list(times)
    while rest:
        size = rng.randrange(1, 8)
        batch, rest = rest[:size], rest[size:]
        for was, v in place(stored, [hit(t) for t in batch], TIMEOUT):
            if was is None:
                stored.append(v)
        stored.sort(key=lambda v: v.started_at)
    assert spans([(None, v) for v in stored]) == plain(times)


@pytest.mark.parametrize("seed", range(20))
def test_out_of_order_batches_keep_every_event_once_in_visits_that_never_overlap(
    seed: int,
) -> None:
    rng = random.Random(seed)
    times = [round(rng.uniform(0, 600), 1) for _ in range(80)]
    stored: list[Visit] = []
    while times:
        size = rng.randrange(1, 10)
        batch, times = sorted(times[:size]), times[size:]
        for was, v in place(stored, [hit(t) for t in batch], TIMEOUT):
            if was is None:
                stored.append(v)
        stored.sort(key=lambda v: v.started_at)
    assert sum(v.events for v in stored) == 80
    for earlier, later in itertools.pairwise(stored):
        assert earlier.last_at < later.started_at


def test_sessionize_groups_rows_by_site_and_visitor() -> None:
    def row(site: str, visitor: str, minutes: float) -> tuple[object, ...]:
        return (site, visitor, at(minutes), True, "/", *NONE)

    stored = [("s1", "u", at(0), at(5), "/", "/", *NONE, 2, 2)]
    events = [row("s1", "u", 10), row("s1", "v", 10), row("s2", "u", 10)]
    changes = sessionize(events, stored, TIMEOUT)
    assert [
        (c.site_id, c.visitor, c.was and c.was.started_at, c.visit.events) for c in changes
    ] == [
        ("s1", "u", at(0), 3),
        ("s1", "v", None, 1),
        ("s2", "u", None, 1),  # the same visitor on another site: a visit of its own
    ]
