"""Step 2b: which branch of each choice a statement holds. Pure.

A plan's choices (`IfKept`, `IfSealed`, ingest/stats_plan_parts.py) depend on data: whether
the site keeps the zone, how far sealed_days reaches. A statement holding every branch, each
gated in SQL, is always right but costs PostgreSQL about six times its execution in planning
on the first executions of each pooled connection (docs/decisions, record 20). So the statement
sent holds only the branch the facts last seen for this (site, zone) select, still gated in
SQL, and reports the facts of its own snapshot; when they disagree with the expectation, the
gated branch has read nothing it should not have, and the caller asks again with every branch
(ingest/stats_run.py). The facts are a guess that every answer refreshes, never a source of
truth, so they need no expiry.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt

from ingest.stats_plan_parts import IfKept, IfSealed, Part, PerValue, Statement


@dataclasses.dataclass(frozen=True)
class Facts:
    """What a statement's snapshot said: whether the site keeps the request's zone, and the
    first day not sealed (None: no day is)."""

    kept: bool
    sealed_before: dt.date | None

    def sealed(self, month_end: dt.date) -> bool:
        return self.sealed_before is not None and self.sealed_before >= month_end


def has_choices(parts: tuple[Part, ...]) -> bool:
    """Whether any part's source depends on data (then the statement reports its facts)."""
    for part in parts:
        if isinstance(part, IfKept | IfSealed):
            return True
        if isinstance(part, PerValue) and has_choices(part.parts):
            return True
    return False


def _expect(parts: tuple[Part, ...], facts: Facts) -> tuple[Part, ...]:
    """The parts with each choice's expectation; a branch left out keeps its choices as
    they are, so that facts it does not read cannot make a statement differ."""
    out: list[Part] = []
    for part in parts:
        if isinstance(part, IfKept | IfSealed):
            holds = facts.kept if isinstance(part, IfKept) else facts.sealed(part.month_end)
            yes, no = part.kept, part.otherwise
            if holds:
                yes = _expect(yes, facts)
            else:
                no = _expect(no, facts)
            if isinstance(part, IfKept):
                out.append(IfKept(part.timezone, yes, no, expected=holds))
            else:
                out.append(IfSealed(part.month_end, yes, no, expected=holds))
        elif isinstance(part, PerValue):
            out.append(PerValue(_expect(part.parts, facts)))
        else:
            out.append(part)
    return tuple(out)


def expect(statement: Statement, facts: Facts) -> Statement:
    """The statement holding, of each choice, only the branch `facts` select (the branches'
    gates stay in its SQL)."""
    return Statement(statement.form, _expect(statement.parts, facts))


def held(sent: Statement, planned: Statement, seen: Facts) -> bool:
    """Whether the branches `sent` holds are the ones its snapshot's facts select: its rows
    are then the answer. A statement holding every branch always holds the right one."""
    return sent == planned or sent == expect(planned, seen)


# Sites times zones in use; an attacker's random site ids only evict guesses.
MAX_REMEMBERED = 4096


class FactsCache:
    """The facts last seen per (site, zone), the least recently used dropped past `size`."""

    def __init__(self, size: int = MAX_REMEMBERED) -> None:
        self.size = size
        self._entries: collections.OrderedDict[tuple[str, str], Facts] = collections.OrderedDict()
        self._latest: Facts | None = None

    def guess(self, site_id: str, timezone: str) -> Facts | None:
        """The facts last seen for (site, zone); for a pair never seen, the database's seal
        last seen by any statement (sealed_days is one row for every site) and the zone not
        kept (the pairs site_zones held when the process first warmed a stats connection
        are seeded: ingest/stats_warm.py; a zone kept since, or left out, costs its first
        question a second statement). None until some statement has reported facts: every
        branch is sent."""
        found = self.get(site_id, timezone)
        if found is not None or self._latest is None:
            return found
        return Facts(kept=False, sealed_before=self._latest.sealed_before)

    def get(self, site_id: str, timezone: str) -> Facts | None:
        found = self._entries.get((site_id, timezone))
        if found is not None:
            self._entries.move_to_end((site_id, timezone))
        return found

    def seed(self, site_id: str, timezone: str, facts: Facts) -> None:
        """Records `facts` for a pair not in the cache, as the least recently used, and only
        while the cache has room: what requests taught stays, and is dropped last."""
        key = (site_id, timezone)
        if key not in self._entries and len(self._entries) < self.size:
            self._entries[key] = facts
            self._entries.move_to_end(key, last=False)

    def put(self, site_id: str, timezone: str, facts: Facts) -> None:
        self._latest = facts
        self._entries[(site_id, timezone)] = facts
        self._entries.move_to_end((site_id, timezone))
        if len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self._latest = None


FACTS = FactsCache()
