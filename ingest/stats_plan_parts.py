"""The plan's tree (ingest/stats_plan.py decides it): which source answers each part of a
stats request's range. Small frozen dataclasses, printable, compared in tests.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

from ingest.stats_days import Span


@dataclass(frozen=True)
class Days:
    """Rows of a daily rollup keyed by UTC day, days [first, end) (of page views only: the
    page-view rows of daily_details, which answer a page breakdown). `taken`: their page
    views are taken away from the other parts' sums (stats_days.Cover)."""

    table: str
    first: dt.date
    end: dt.date
    page_views_only: bool = False
    taken: bool = False


@dataclass(frozen=True)
class Months:
    """Rows of a monthly rollup keyed by UTC month, months starting in [first, end)."""

    table: str
    first: dt.date
    end: dt.date
    taken: bool = False


@dataclass(frozen=True)
class Watermark:
    """Months [first, end) from `sealed` up to the seal watermark (sealed_days.sealed_before,
    read by the statement), then the days from there to `day_end` from `daily`."""

    sealed: str
    daily: str
    timezone: str
    first: dt.date
    end: dt.date
    day_end: dt.date

    @property
    def table(self) -> str:
        return self.sealed


@dataclass(frozen=True)
class Edges:
    """Rows of a sub-day rollup (`bucket`, `hour`) or raw events (`event_time`) inside the
    spans; raw events are counted per (event type, path), or per event type only, and only
    those of other types than page views when `other_types` (sub-day rollups answer the page
    views). `taken` as in Days."""

    table: str
    spans: tuple[Span, ...]
    per_path: bool = True
    taken: bool = False
    other_types: bool = False


@dataclass(frozen=True)
class Instants:
    """The whole range [start, end) from a sub-day table, grouped by local period.
    `quarters_at_edges` (hourly_stats only): the hours that lie in one local period, and the
    15-minute rows (quarter_hour_stats) of the hours that hold a period's start, as a zone
    whose offset is not whole hours needs: about a tenth of the rows and sketches of reading
    every 15 minutes. `visitors` False (a series not asked for them): no sketch is merged,
    the visitors column is NULL. `period_starts` (with quarters_at_edges): the UTC instants
    the local periods start at, computed here so that the statement finds those hours by
    their keys instead of converting every row's time to the zone."""

    table: str
    start: dt.datetime
    end: dt.datetime
    quarters_at_edges: bool = False
    visitors: bool = True
    period_starts: tuple[dt.datetime, ...] = ()


@dataclass(frozen=True)
class LocalDays:
    """Rows of a kept zone's daily rollup, local days [first, end)."""

    table: str
    timezone: str
    first: dt.date
    end: dt.date


@dataclass(frozen=True)
class LocalMonths:
    """Rows of a kept zone's monthly rollup, local months starting in [first, end)."""

    table: str
    timezone: str
    first: dt.date
    end: dt.date


@dataclass(frozen=True)
class IfKept:
    """`kept` when the site keeps rollups of `timezone`, else `otherwise` (resolved in the
    statement: EXISTS on site_zones). `expected` (ingest/stats_expect.py) renders only the
    branch it names, still gated."""

    timezone: str
    kept: tuple[Part, ...]
    otherwise: tuple[Part, ...]
    expected: bool | None = None


@dataclass(frozen=True)
class IfSealed:
    """`sealed` when every day before `month_end` is sealed, else `otherwise` (resolved in the
    statement: sealed_days.sealed_before). `expected` as in IfKept."""

    month_end: dt.date
    sealed: tuple[Part, ...]
    otherwise: tuple[Part, ...]
    expected: bool | None = None

    @property
    def kept(self) -> tuple[Part, ...]:
        """The branch taken when the condition holds (IfKept's name for it)."""
        return self.sealed


def rendered_branches(part: IfKept | IfSealed) -> tuple[tuple[Part, ...], tuple[Part, ...]]:
    """The branches a statement holds (when the condition holds, when it does not): both,
    or only the expected one and nothing in the other's place."""
    if part.expected is None:
        return part.kept, part.otherwise
    return (part.kept, ()) if part.expected else ((), part.otherwise)


@dataclass(frozen=True)
class PerValue:
    """Each value of the page's visitors, from `parts`, in the same statement."""

    parts: tuple[Part, ...]


Part = (
    PerValue
    | Days
    | Months
    | Watermark
    | Edges
    | Instants
    | LocalDays
    | LocalMonths
    | IfKept
    | IfSealed
)

Form = Literal[
    "totals",  # one row: views, events, sketched visitors, exact visitors' row count
    "filtered totals",  # the same from (event type, path) rows, filters applied
    "series",  # (period, views, events, visitors) per local day or hour
    "filtered series",
    "pages",  # a page of paths by views from each branch's parts (summed per path unless one
    # part holds one row per path: a day, a month)
    "pages by visitors",
    "ranking",  # a page of event types or paths, filters applied
    "context ranking",  # a page of one context dimension's values (daily_dimensions, edges;
    # with one context filter, daily_dimension_pairs)
    "context totals",  # one context filter's value: daily_dimensions and raw edges
    "context series",  # the same per UTC day, whole UTC days only
    # Raw events over the whole range, filters applied: what a filter on a context dimension
    # needs (no rollup holds context per event type or path), bounded by statement_timeout.
    "raw totals",
    "raw series",
    "raw ranking",
    # A page of custom property values (one key, or every key): whole UTC days from
    # daily_props (event-type filters apply to its rows), the range's edges from raw events.
    "props ranking",
    # The same from raw events over the whole range, any filters applied.
    "raw props ranking",
]


@dataclass(frozen=True)
class Statement:
    form: Form
    parts: tuple[Part, ...]


@dataclass(frozen=True)
class ExactVisitors:
    """A second statement counting distinct visitors in `parts` (daily_visitor_ids), asked only when
    the first statement's estimate of the rows it reads is at most `max_rows`; a single day's
    count comes with the first statement."""

    days: Days
    max_rows: int

    @property
    def parts(self) -> tuple[Part, ...]:
        return (self.days,)


@dataclass(frozen=True)
class ValueVisitors:
    """A second statement merging the visitors of the page's values from `parts`, for the
    values the first statement's answering branch leaves without visitors."""

    parts: tuple[Part, ...]


@dataclass(frozen=True)
class Plan:
    answer: Statement
    then: ExactVisitors | ValueVisitors | None = None
    exact: bool = False  # the answer's visitors are exact counts (daily series of UTC days)


def leaves(parts: tuple[Part, ...]) -> list[Part]:
    """Every part that reads a table, branches included, in the order they are rendered."""
    found: list[Part] = []
    for part in parts:
        if isinstance(part, PerValue):
            found += leaves(part.parts)
        elif isinstance(part, IfKept):
            found += leaves(part.kept) + leaves(part.otherwise)
        elif isinstance(part, IfSealed):
            found += leaves(part.sealed) + leaves(part.otherwise)
        else:
            found.append(part)
    return found


def tables(plan: Plan) -> set[str]:
    """Every table a plan may read, follow-up included."""
    parts = plan.answer.parts + (plan.then.parts if plan.then else ())
    names: set[str] = set()
    for leaf in leaves(parts):
        assert not isinstance(leaf, IfKept | IfSealed | PerValue)
        names.add(leaf.table)
        if isinstance(leaf, Instants) and leaf.quarters_at_edges:
            names.add("quarter_hour_stats")
        if isinstance(leaf, Watermark):
            names.add(leaf.sealed)
            names.add(leaf.daily)
    return names
