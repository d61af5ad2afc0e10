"""Calendar arithmetic the stats reader and the consumer's sealing agree on."""

from __future__ import annotations

import datetime as dt


def next_month(day: dt.date) -> dt.date:
    """The first day of the month after `day`'s."""
    return (day.replace(day=28) + dt.timedelta(days=4)).replace(day=1)


def one_whole_month(first: dt.date, end: dt.date) -> bool:
    """Whether the days [first, end) are exactly one calendar month."""
    return first.day == 1 and next_month(first) == end
