"""Which UTC days an accepted event may fall on: the past-time window, and retention.

An event is dated by its corrected time (events.event_time). Its UTC day must be on or after
`today - MAX_PAST_DAYS + 1` (today counts as one day of the window), and, when retention is
on, on or after the first day retention keeps (`today - RETENTION_DAYS + 1`, as
consumer/retention.py keeps). Times ahead of the receipt are clamped to it beyond
`MAX_FUTURE_S`, so accepted events fall on at most MAX_PAST_DAYS + 1 days (the window and
tomorrow, for a clock up to MAX_FUTURE_S ahead around midnight): that bounds the day
partitions any request can make the consumer create.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from core.events import TIMESTAMP_EXPIRED, TIMESTAMP_TOO_OLD, InvalidEvent
from core.settings import MAX_PAST_DAYS_LIMIT


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), UTC)


class TimeWindow:
    """Refuses events dated before the window; the bounds are computed once per UTC day."""

    def __init__(self, max_past_days: int, retention_days: int = 0) -> None:
        if not 1 <= max_past_days <= MAX_PAST_DAYS_LIMIT:
            raise ValueError(f"max_past_days must be 1-{MAX_PAST_DAYS_LIMIT}, got {max_past_days}")
        self.max_past_days = max_past_days
        self.retention_days = max(retention_days, 0)
        # The UTC day the bounds below were computed for, as [start, end) instants.
        self._day_start = datetime.max.replace(tzinfo=UTC)
        self._day_end = datetime.min.replace(tzinfo=UTC)
        self._first_allowed = self._day_start
        self._first_kept = self._day_start

    def first_allowed_day(self, today: date) -> date:
        """The first day MAX_PAST_DAYS accepts."""
        return today - timedelta(days=self.max_past_days - 1)

    def first_kept_day(self, today: date) -> date | None:
        """The first day retention keeps, or None when it keeps everything."""
        if not self.retention_days:
            return None
        return today - timedelta(days=self.retention_days - 1)

    def check(self, timestamp: datetime, received_at: datetime) -> None:
        """Raises InvalidEvent (timestamp_expired or timestamp_too_old) when `timestamp`, an
        aware time, falls on a UTC day before the window of the day `received_at` is in."""
        if not self._day_start <= received_at < self._day_end:
            self._move_to(received_at)
        if timestamp < self._first_allowed:
            raise self._refusal(timestamp)

    def _move_to(self, received_at: datetime) -> None:
        today = received_at.astimezone(UTC).date()
        self._day_start = _midnight(today)
        self._day_end = _midnight(today + timedelta(days=1))
        kept = self.first_kept_day(today)
        self._first_kept = _midnight(kept) if kept is not None else datetime.min.replace(tzinfo=UTC)
        self._first_allowed = max(_midnight(self.first_allowed_day(today)), self._first_kept)

    def _refusal(self, timestamp: datetime) -> InvalidEvent:
        day = timestamp.astimezone(UTC).date()
        if timestamp < self._first_kept:
            return InvalidEvent(
                f"`timestamp` falls on {day} (UTC), a day retention has already deleted: "
                f"only days from {self._first_kept.date()} on are kept "
                f"(RETENTION_DAYS={self.retention_days}); the event cannot be stored",
                "timestamp",
                code=TIMESTAMP_EXPIRED,
            )
        return InvalidEvent(
            f"`timestamp` falls on {day} (UTC), before the {self.max_past_days} days accepted "
            f"(from {self._first_allowed.date()} on, MAX_PAST_DAYS); send events sooner, or "
            "ask the operator to widen the window",
            "timestamp",
            code=TIMESTAMP_TOO_OLD,
        )
