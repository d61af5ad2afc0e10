"""Step 2c: whether a plan is costly, and why. Pure.

Most plans read a few hundred rollup rows whatever the zone and range (ingest/stats_plan.py,
docs/decisions/0024-every-zone-bounded.md). A few still read much more, and at a rate they
would take every connection of the pool and every core of the database from the others:

- raw events: any part read from `events` (the range's partial UTC days where no sub-day
  rollup holds the answer, or the whole range for filters no rollup holds);
- every path's sub-day rows (`hourly_paths`, `quarter_hour_paths` read for a ranking, not
  probed for the paths of a page nor filtered) over more than MAX_PATH_QUARTERS hours and
  quarter hours;
- more than MAX_SKETCHES_PER_VALUE sketches merged per value of a page (its visitors).

A costly plan takes one of a process's few slots for them, waiting its turn in a bounded
queue (ingest/stats_run.py, CostlyPlans); the others never wait on them.
"""

from __future__ import annotations

from ingest.stats_days import QUARTER
from ingest.stats_plan_parts import (
    Days,
    Edges,
    IfKept,
    IfSealed,
    LocalDays,
    Part,
    PerValue,
    Plan,
    ValueVisitors,
    Watermark,
    leaves,
    tables,
)

# The quarter hours at the two edges of any range in any zone (at most a UTC day each): what
# the dashboard's default questions (this month, the last 30 days) read in a zone other than
# UTC. Only a plan past that bound is costly, so those questions never queue behind one.
MAX_PATH_QUARTERS = 2 * 96
# A month of daily sketches per value, and the edges' quarter hours, for the same reason.
MAX_SKETCHES_PER_VALUE = 31 + 2 * 96
# The forms that group every path's rows (the others filter or sum them).
RANKINGS = ("pages", "pages by visitors", "ranking")


def _quarters(leaf: Edges) -> int:
    return sum(-(-(b - a) // QUARTER) for a, b in leaf.spans)


def _periods(leaf: Edges) -> int:
    """Rows per path of a sub-day table over the leaf's spans: hours or quarter hours."""
    return -(-_quarters(leaf) // 4) if leaf.table == "hourly_paths" else _quarters(leaf)


def _sketches(parts: tuple[Part, ...]) -> int:
    """How many sketches a value's visitors merge from `parts` (a watermark's sealed months one
    each; the days after the watermark are not known here and not counted)."""
    count = 0
    for leaf in leaves(parts):
        if isinstance(leaf, Days | LocalDays):
            count += (leaf.end - leaf.first).days
        elif isinstance(leaf, Edges):
            count += _periods(leaf)
        elif isinstance(leaf, Watermark):
            count += 1
    return count


def costly(plan: Plan) -> str | None:
    """Why `plan` is costly (a few words, for the refusal's message), or None."""
    if "events" in tables(plan):
        return "it reads raw events"
    path_periods = sum(
        _periods(leaf)
        for leaf in leaves(plan.answer.parts)
        if isinstance(leaf, Edges) and leaf.table in ("hourly_paths", "quarter_hour_paths")
    )
    if plan.answer.form in RANKINGS and path_periods > MAX_PATH_QUARTERS:
        return "it ranks every path's sub-day rows"
    per_value = _per_value(plan.answer.parts)
    if isinstance(plan.then, ValueVisitors):
        per_value.append(plan.then.parts)
    if any(_sketches(parts) > MAX_SKETCHES_PER_VALUE for parts in per_value):
        return "it merges many sketches per value"
    return None


def _per_value(parts: tuple[Part, ...]) -> list[tuple[Part, ...]]:
    """The parts of every PerValue among `parts`, branches included."""
    found: list[tuple[Part, ...]] = []
    for part in parts:
        if isinstance(part, PerValue):
            found.append(part.parts)
        elif isinstance(part, IfKept | IfSealed):
            found += _per_value(part.kept) + _per_value(part.otherwise)
    return found
