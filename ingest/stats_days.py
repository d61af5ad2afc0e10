"""Calendar arithmetic of stats ranges. Pure.

A request covers whole local days [first, last] in an IANA time zone, that is the UTC
interval [start, end) from the first local midnight to the one after the last day. Rollups
are kept per UTC day (and per day of the zones a site keeps), so the planner
(ingest/stats_plan.py) reads that interval as the UTC days lying wholly inside it plus at most
two edges (`split`), and the whole months among those days (`whole_months`).
"""

from __future__ import annotations

import datetime as dt
import functools
import zoneinfo

import msgspec

from core.calendar import next_month

ONE_DAY = dt.timedelta(days=1)
# The epoch: no analytics event predates it.
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class DateRange(msgspec.Struct, frozen=True):
    """Local days [first, last] in `timezone`, and the UTC instants [start, end) they span.

    `read_to`, when set, is where the rollups are read to instead of `end` (readable_end): it
    differs from `end` only by instants no event can be dated at."""

    first: dt.date
    last: dt.date
    timezone: str
    start: dt.datetime
    end: dt.datetime
    read_to: dt.datetime | None = None

    @property
    def read_end(self) -> dt.datetime:
        """The end of the instants the planner reads: `read_to`, else `end`."""
        return self.end if self.read_to is None else self.read_to

    @property
    def utc_days(self) -> tuple[dt.date, dt.date]:
        """The first and last UTC day the instants [start, end) touch."""
        last_instant = self.end - dt.timedelta(microseconds=1)
        return self.start.astimezone(dt.UTC).date(), last_instant.astimezone(dt.UTC).date()

    @property
    def utc_aligned(self) -> bool:
        """True when every local midnight in the range is a UTC midnight."""
        return _alignment(self.timezone, self.first, self.last)[0]

    @property
    def hour_aligned(self) -> bool:
        """True when every local hour in the range is a UTC hour: every local midnight falls on a
        whole UTC hour (an offset that is not whole hours would last until the next midnight)."""
        return _alignment(self.timezone, self.first, self.last)[1]

    @property
    def midnights(self) -> tuple[dt.datetime, ...]:
        """The UTC instants the local days first..last+1 start at."""
        return local_midnights(self.timezone, self.first, self.last)


# Cached: each request asks several times, and the same ranges come back (a dashboard's).
@functools.lru_cache(maxsize=4096)
def local_midnights(timezone: str, first: dt.date, last: dt.date) -> tuple[dt.datetime, ...]:
    """The UTC instants the local days first..last+1 start at in `timezone`."""
    zone = zoneinfo.ZoneInfo(timezone)
    return tuple(
        local_midnight(first + dt.timedelta(days=d), zone).astimezone(dt.UTC)
        for d in range((last - first).days + 2)
    )


@functools.lru_cache(maxsize=4096)
def _alignment(timezone: str, first: dt.date, last: dt.date) -> tuple[bool, bool]:
    """(utc_aligned, hour_aligned) of the local days [first, last] in `timezone`."""
    if timezone == "UTC":
        return True, True
    midnights = local_midnights(timezone, first, last)
    return (
        all(m.time() == dt.time(0) for m in midnights),
        all(m.minute == m.second == 0 for m in midnights),
    )


def local_midnight(day: dt.date, zone: zoneinfo.ZoneInfo) -> dt.datetime:
    """The first instant of `day` in `zone`, as UTC (where midnight does not exist because
    of a daylight-saving jump, the instant the day actually starts)."""
    naive = dt.datetime.combine(day, dt.time(0))
    aware = naive.replace(tzinfo=zone)
    utc = aware.astimezone(dt.UTC)
    if utc.astimezone(zone).replace(tzinfo=None) == naive:
        return utc
    # Midnight falls in a gap: the day starts at the transition, which lies between the
    # instants midnight would be with the offsets after (fold=1) and before (fold=0) it.
    low, high = aware.replace(fold=1).astimezone(dt.UTC), utc
    while high - low > dt.timedelta(seconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(zone).date() >= day:
            high = middle
        else:
            low = middle
    return high.replace(microsecond=0)


def make_range(
    first: dt.date, last: dt.date, timezone: str, horizon: dt.datetime | None = None
) -> DateRange:
    """The range of local days [first, last]; with `horizon` (data_horizon), read only as
    far as events can be dated (readable_end)."""
    zone = zoneinfo.ZoneInfo(timezone)
    start = local_midnight(first, zone)
    end = local_midnight(last + ONE_DAY, zone)
    read_to = None if horizon is None else readable_end(start, end, horizon)
    return DateRange(
        first=first,
        last=last,
        timezone=timezone,
        start=start,
        end=end,
        read_to=None if read_to == end else read_to,
    )


# Added to MAX_FUTURE_S in data_horizon: the clocks of the API processes that accepted the
# events and of the one asking may differ by this much.
HORIZON_SLACK = dt.timedelta(minutes=15)
# Past this, the horizon lies after the end of any range that holds today (Kiritimati's ends
# some 38 hours after a UTC midnight): larger values change nothing, and cannot overflow.
_FURTHEST_AHEAD_S = 7 * 86400


def data_horizon(now: dt.datetime, max_future_s: float) -> dt.datetime:
    """The instant no accepted event is dated at or after: the API clamps a timestamp more
    than MAX_FUTURE_S ahead of its receipt to the receipt time (ingest/accept.py). It holds
    while every API process accepts with the same MAX_FUTURE_S (or a smaller one) and their
    clocks agree within HORIZON_SLACK (docs/decisions/0038-ranges-read-to-the-horizon.md)."""
    ahead = min(max(max_future_s, 0.0), _FURTHEST_AHEAD_S)
    return now + dt.timedelta(seconds=ahead) + HORIZON_SLACK


def readable_end(start: dt.datetime, end: dt.datetime, horizon: dt.datetime) -> dt.datetime:
    """Where to read [start, end) to, given that no event is dated at or after `horizon`.

    A range that ends inside a UTC day (any zone but UTC) has that day's part as an edge:
    sub-day rows, up to 96 quarter hours of every value for today's range. When the range
    ends at or after the horizon, what the whole UTC day holds beyond the range's end was
    dated past the horizon, that is nothing: the day is read whole instead (one daily row a
    value), the next UTC midnight. Otherwise (a range that ends before the horizon, or within
    the hour or so before a local midnight): `end`. Only the instants [end, next midnight)
    are added; an event dated there would be counted in the range."""
    floor = dt.datetime.combine(end.astimezone(dt.UTC).date(), dt.time(0), dt.UTC)
    if floor == end or floor <= start or end < horizon:
        return end
    return floor + ONE_DAY


def whole_months(day_from: dt.date, day_to: dt.date) -> tuple[dt.date, dt.date]:
    """The whole months [month_from, month_to) inside days [day_from, day_to), as their first
    days; both equal day_to when there is none."""
    month_from = day_from if day_from.day == 1 else next_month(day_from)
    month_to = day_to.replace(day=1)
    if month_from >= month_to:
        return day_to, day_to
    return month_from, month_to


Span = tuple[dt.datetime, dt.datetime]


class Pieces(msgspec.Struct, frozen=True):
    """A UTC interval as whole UTC days [day_from, day_to) plus up to two edges."""

    day_from: dt.date
    day_to: dt.date
    edges: tuple[Span, ...]

    @property
    def has_days(self) -> bool:
        return self.day_from < self.day_to


def split(start: dt.datetime, end: dt.datetime) -> Pieces:
    """[start, end) as whole UTC days plus edges before and after them."""
    last_full_end = end.astimezone(dt.UTC).date()
    first_full = start.astimezone(dt.UTC).date()
    if start.astimezone(dt.UTC).time() != dt.time(0):
        first_full += ONE_DAY
    if first_full >= last_full_end:
        return Pieces(first_full, first_full, ((start, end),))
    edges = []
    day_start = dt.datetime.combine(first_full, dt.time(0), dt.UTC)
    day_end = dt.datetime.combine(last_full_end, dt.time(0), dt.UTC)
    if start < day_start:
        edges.append((start, day_start))
    if day_end < end:
        edges.append((day_end, end))
    return Pieces(first_full, last_full_end, tuple(edges))


def utc_days(start: dt.datetime, end: dt.datetime) -> tuple[dt.date, dt.date]:
    """The first and last UTC day that [start, end) touches (day partitions of `events`)."""
    last = end.astimezone(dt.UTC) - dt.timedelta(microseconds=1)
    return start.astimezone(dt.UTC).date(), max(start.astimezone(dt.UTC), last).date()


class Cover(msgspec.Struct, frozen=True):
    """A UTC interval as a signed sum of rollup rows: whole UTC months [month_from, month_to)
    (none when equal), plus and minus ranges of UTC days, plus and minus sub-day spans. Only
    exact sums may be read this way (page views, events), never sketches."""

    month_from: dt.date
    month_to: dt.date
    add_days: tuple[tuple[dt.date, dt.date], ...]
    take_days: tuple[tuple[dt.date, dt.date], ...]
    add_spans: tuple[Span, ...]
    take_spans: tuple[Span, ...]

    @property
    def has_months(self) -> bool:
        return self.month_from < self.month_to


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0), dt.UTC)


def _round_start(start: dt.datetime) -> tuple[dt.date, tuple[Span, ...], tuple[Span, ...]]:
    """The UTC midnight nearest `start`, and the span added (it rounds up) or taken away (it
    rounds down) to make up the difference."""
    floor = _midnight(start.date())
    if start == floor:
        return start.date(), (), ()
    ceil = floor + ONE_DAY
    if ceil - start <= start - floor:
        return ceil.date(), ((start, ceil),), ()
    return floor.date(), (), ((floor, start),)


def _round_end(end: dt.datetime) -> tuple[dt.date, tuple[Span, ...], tuple[Span, ...]]:
    floor = _midnight(end.date())
    if end == floor:
        return end.date(), (), ()
    ceil = floor + ONE_DAY
    if end - floor <= ceil - end:
        return floor.date(), ((floor, end),), ()
    return ceil.date(), (), ((end, ceil),)


def _nearest_month_start(day: dt.date, *, at_end: bool) -> tuple[dt.date, int]:
    """The first day of a month nearest `day`, and the signed days to add (positive) or take
    away (negative) between them, for the range's first day (at_end False) or its end."""
    floor = day.replace(day=1)
    if floor == day:
        return day, 0
    ceil = next_month(floor)
    inside, outside = ((day - floor).days, (ceil - day).days)
    if at_end:  # [floor, day) is in the range, [day, ceil) is not
        return (floor, inside) if inside <= outside else (ceil, -outside)
    # [day, ceil) is in the range, [floor, day) is not
    return (ceil, outside) if outside <= inside else (floor, -inside)


def _months_between(first: dt.date, end: dt.date) -> int:
    """How many months start in [first, end) (both first days of months)."""
    return max(0, (end.year - first.year) * 12 + end.month - first.month)


def cover(start: dt.datetime, end: dt.datetime) -> Cover | None:
    """[start, end) as whole UTC months plus or minus the fewest days, and whole UTC days plus
    or minus the shortest spans: a rolling 30 days reads one or two months and at most about
    15 days either side, a local month in any zone one month and at most 12 hours either
    side. None when the interval holds no whole UTC day (`split` is then as cheap)."""
    pieces = split(start, end)
    if not pieces.has_days:
        return None
    start, end = start.astimezone(dt.UTC), end.astimezone(dt.UTC)
    day_from, add_head, take_head = _round_start(start)
    day_to, add_tail, take_tail = _round_end(end)
    add_spans, take_spans = add_head + add_tail, take_head + take_tail
    month_from, head = _nearest_month_start(day_from, at_end=False)
    month_to, tail = _nearest_month_start(day_to, at_end=True)
    months = _months_between(month_from, month_to)
    if not months or abs(head) + abs(tail) + months >= (day_to - day_from).days:
        return Cover(day_to, day_to, ((day_from, day_to),), (), add_spans, take_spans)
    add_days: list[tuple[dt.date, dt.date]] = []
    take_days: list[tuple[dt.date, dt.date]] = []
    if head > 0:
        add_days.append((day_from, month_from))
    elif head < 0:
        take_days.append((month_from, day_from))
    if tail > 0:
        add_days.append((month_to, day_to))
    elif tail < 0:
        take_days.append((day_to, month_to))
    return Cover(month_from, month_to, tuple(add_days), tuple(take_days), add_spans, take_spans)


ONE_HOUR = dt.timedelta(hours=1)
QUARTER = dt.timedelta(minutes=15)


def hour_floor(t: dt.datetime) -> dt.datetime:
    return t.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)


def by_hours(spans: tuple[Span, ...]) -> tuple[tuple[Span, ...], tuple[Span, ...]]:
    """The spans as (whole UTC hours, the 15-minute remainders at their ends): hourly rows
    answer the first, quarter-hour rows only the second (at most 3 + 3 a span)."""
    hours: list[Span] = []
    quarters: list[Span] = []
    for a, b in spans:
        first = hour_floor(a)
        if first < a:
            first += ONE_HOUR
        last = hour_floor(b)
        if first >= last:
            quarters.append((a, b))
            continue
        hours.append((first, last))
        if a < first:
            quarters.append((a, first))
        if last < b:
            quarters.append((last, b))
    return tuple(hours), tuple(quarters)
