"""Grouping a batch's new events into visits: pure logic, no database object.

A visit is one visitor's (an event's `user_id`'s) run of events on one site with no gap
longer than the timeout (VISIT_TIMEOUT_SECONDS). Its entry page, source, referrer, UTM
values, browser, OS, device and country are those of its first event; its exit page is the
path of its last; it counts its events and page views, and lasts from its first event to its
last. The stored `visits` rows are the only state. Visitors whose new events all come after
their latest stored visit (in practice, all of them) are placed in SQL by the same rule
(`visits.place_in_order`, a plain sessionization); the others, with a late event, are placed
here, from the stored visits their events can reach (consumer/sessions_store.py).

Placement rule. Each visitor's new events are placed one at a time in order of event time
(ties by event id, in the query that reads them). For an event at time t, with P the visit
that started last at or before t and N the one that starts first after t (stored ones and
those this batch made):

1. t is inside P (t <= P's last event): it joins P;
2. else N starts within the timeout after t: it joins N, which then starts at t (its entry
   page and origin become the event's);
3. else P's last event is within the timeout before t: it joins P, which then ends at t;
4. else it starts a visit of its own.

Events arrive in order per partition in practice: each comes after every stored event of its
visitor, so only rules 3 and 4 apply and the visits are exactly those of a plain
sessionization sorted by time. A late or out-of-order event joins the visit around it or
just after or before it, and two visits are never merged: an event within the timeout of
two of them joins one (the later, by rule 2), and they stay apart. A visit's start only
moves to an instant no visit holds (rule 1 comes first), so visits never overlap. At equal
times the stored visit wins: an event at the very instant a visit starts joins it without
moving its entry page.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from itertools import groupby
from typing import Any

# Where a visit came from, on what and from where (its first event's): referrer_host,
# referrer_source, utm_source, utm_medium, utm_campaign, utm_content, utm_term, browser, os,
# device, country.
ORIGIN_FIELDS = (
    "referrer_host", "referrer_source", "utm_source", "utm_medium", "utm_campaign",
    "utm_content", "utm_term", "browser", "os", "device", "country",
)  # fmt: skip
Origin = tuple[str | None, ...]

# An event as read for placement: (site_id, visitor, event_time, is a page view, path,
# *origin), sorted by site, visitor, time.
EventRow = tuple[Any, ...]
# A stored visit as read: (site_id, visitor, started_at, last_at, entry_page, exit_page,
# *origin, page_views, events), sorted by site, visitor, start.
VisitRow = tuple[Any, ...]

ONE_SECOND = dt.timedelta(seconds=1)


@dataclass(slots=True)
class Visit:
    started_at: dt.datetime
    last_at: dt.datetime
    entry_page: str
    exit_page: str
    origin: Origin
    page_views: int
    events: int

    @property
    def duration_s(self) -> int:
        """Whole seconds from its first event to its last."""
        return (self.last_at - self.started_at) // ONE_SECOND

    @property
    def bounced(self) -> bool:
        """A bounce: exactly one event, and that a page view."""
        return self.events == 1 and self.page_views == 1


@dataclass(frozen=True, slots=True)
class Change:
    """A visit this batch made or changed: as stored before (None if new), and now."""

    site_id: str
    visitor: str
    was: Visit | None
    visit: Visit


def place(
    stored: Sequence[Visit],
    events: Iterable[tuple[dt.datetime, bool, str, Origin]],
    timeout: dt.timedelta,
) -> list[tuple[Visit | None, Visit]]:
    """One visitor's events (time, page view?, path, origin), in time order, placed among
    their `stored` visits (in order of start, none overlapping) by the module's rule. Returns
    each visit made or changed, as stored (None for a new one) and now."""
    visits = list(stored)
    starts = [v.started_at for v in visits]
    touched: dict[int, Visit | None] = {}  # id(visit) -> as stored
    for time, page_view, path, origin in events:
        after = bisect.bisect_right(starts, time)  # index of N; P is the one before it
        before = visits[after - 1] if after else None
        if before is not None and time <= before.last_at + timeout:
            rule = 1 if time <= before.last_at else 3
        else:
            rule = 4
        if rule != 1 and after < len(visits) and visits[after].started_at - time <= timeout:
            rule = 2
        if rule == 4:
            visit = Visit(time, time, path, path, origin, 0, 0)
            visits.insert(after, visit)
            starts.insert(after, time)
            touched[id(visit)] = None
        else:
            visit = visits[after] if rule == 2 else before  # type: ignore[assignment]
            if id(visit) not in touched:
                touched[id(visit)] = replace(visit)
            if rule == 2:
                visit.started_at = starts[after] = time
                visit.entry_page = path
                visit.origin = origin
            elif time >= visit.last_at:
                visit.last_at = time
                visit.exit_page = path
        visit.events += 1
        visit.page_views += page_view
    return [(touched[id(v)], v) for v in visits if id(v) in touched]


def visit_of(row: VisitRow) -> Visit:
    """A stored visit from its row (VisitRow's layout)."""
    started_at, last_at, entry_page, exit_page = row[2:6]
    *origin, page_views, events = row[6:]
    return Visit(started_at, last_at, entry_page, exit_page, tuple(origin), page_views, events)


def sessionize(
    events: Sequence[EventRow], stored: Iterable[VisitRow], timeout: dt.timedelta
) -> list[Change]:
    """Every visit a batch's `events` make or change, given the `stored` visits they can
    reach (both in the row layouts above, sorted by site and visitor)."""
    known: dict[tuple[str, str], list[Visit]] = {}
    for key, rows in groupby(stored, key=lambda r: (r[0], r[1])):
        known[key] = [visit_of(r) for r in rows]
    changes = []
    for (site_id, visitor), rows in groupby(events, key=lambda r: (r[0], r[1])):
        hits = ((r[2], r[3], r[4], r[5:]) for r in rows)
        placed = place(known.get((site_id, visitor), ()), hits, timeout)
        changes += [Change(site_id, visitor, was, v) for was, v in placed]
    return changes
