"""Ranking a visit breakdown by visitors without merging every value's sketch. Pure.

The exact sums of daily_visit_dimensions (visits, bounces, duration, page views) rank a
page cheaply; visitors need the values' sketches merged, one per (day, value), which is the
whole cost of a breakdown by a dimension of many values (entry and exit pages). A visitor
counted under a value has at least one visit with it, so a value's visitors are at most its
visits; the visitors shown are held to that bound (`shown_visitors`: a sketch that only
grows, or an estimate above it, cannot exceed it). Candidates are therefore taken in order
of visits (most first, ties by value), their sketches merged a batch at a time, and the
search stops once no value not yet merged could beat the last one shown (`settled`), or
after `need + MAX_EXTRA_VISITOR_CANDIDATES` candidates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from ingest.stats_visits import VisitSums

# Candidates merged beyond the rows the page needs (page times limit): the bound on the sketches
# a breakdown sorted by visitors merges, past which the page ranks the values with the most
# visits only (docs/api.md, Visits).
MAX_EXTRA_VISITOR_CANDIDATES = 1000

Ranked = tuple[str, VisitSums]


def shown_visitors(sums: VisitSums) -> int:
    """The visitors a value shows: its sketch's estimate, rounded, at most its visits."""
    return min(round(sums.visitors or 0), sums.visits)


def rank_key(row: Ranked) -> tuple[int, str]:
    """Most visitors first, ties by value ascending (code point order, as the C collation
    of the database sorts the other breakdowns)."""
    return (-shown_visitors(row[1]), row[0])


class Window(NamedTuple):
    """Candidates [offset, offset + limit) in order of the sort's key, the visitors of the
    first `merge` of them merged."""

    limit: int
    offset: int
    merge: int


def page_window(limit: int, offset: int, with_visitors: bool) -> Window:
    """A page ranked on exact sums: its own rows, their visitors if asked."""
    return Window(limit, offset, limit if with_visitors else 0)


class VisitorSearch:
    """The candidates of a page sorted by visitors: which rows to read next, until `settled`.

    Candidates come in order of visits from windows of the ranking (`Window`); the first
    rows of each window have their visitors merged, later ones by value (`add_visitors`).
    At most `need + MAX_EXTRA_VISITOR_CANDIDATES` candidates are read and merged."""

    def __init__(self, need: int) -> None:
        self.need = need
        self.cap = need + MAX_EXTRA_VISITOR_CANDIDATES
        self.candidates: list[Ranked] = []
        self.merged = 0
        self.more = True

    def _window(self, merge: int) -> Window:
        # Visits rank candidates cheaply: read a few times the rows needed, merge fewer.
        limit = min(4 * self.need + 40, self.cap - len(self.candidates))
        return Window(limit, len(self.candidates), min(merge, limit))

    def first(self) -> Window:
        """The first window: the candidates' sums, the visitors of an eighth more than the
        page needs. Further merges cost a statement of lookups, not another ranking."""
        return self._window(self.need + self.need // 8 + 5)

    def add_window(self, window: Window, rows: Sequence[Ranked]) -> None:
        self.candidates += rows
        self.merged += min(window.merge, len(rows))
        self.more = len(rows) == window.limit and len(self.candidates) < self.cap

    def add_visitors(self, visitors: dict[str, float]) -> None:
        """The merged visitors of the next candidates, as named by `next`."""
        for i in range(self.merged, min(self.merged + len(visitors), len(self.candidates))):
            value, sums = self.candidates[i]
            self.candidates[i] = (value, sums._replace(visitors=visitors.get(value) or 0))
        self.merged = min(self.merged + len(visitors), len(self.candidates))

    def next(self) -> Window | list[str] | None:
        """What to read next: a window of further candidates, the values whose visitors to
        merge, or nothing (the page is settled, or the bound reached)."""
        exhausted = self.merged == len(self.candidates) and not self.more
        if settled(self.candidates[: self.merged], self.need, exhausted):
            return None
        batch = min(max(self.need // 4, 10), self.cap - self.merged)
        if batch <= 0:
            return None
        if self.merged < len(self.candidates):
            return [value for value, _ in self.candidates[self.merged : self.merged + batch]]
        return self._window(batch)

    def page(self, offset: int, limit: int) -> list[Ranked]:
        """Rows [offset, offset + limit) of the merged candidates ranked by visitors."""
        return sorted(self.candidates[: self.merged], key=rank_key)[offset : offset + limit]


def settled(merged: Sequence[Ranked], need: int, exhausted: bool) -> bool:
    """Whether the first `need` values by visitors are among the candidates `merged` (taken
    in order of visits, most first, ties by value): every value is merged (`exhausted`), or
    the last merged one bounds every other, since a value's visitors shown are at most its
    visits, and ties go to the smaller value."""
    if exhausted or not merged:
        return exhausted
    if len(merged) < need:
        return False
    last_value, last_sums = merged[-1]
    kth_value, kth_sums = sorted(merged, key=rank_key)[need - 1]
    bound, kth_visitors = last_sums.visits, shown_visitors(kth_sums)
    return bound < kth_visitors or (bound == kth_visitors and last_value >= kth_value)
