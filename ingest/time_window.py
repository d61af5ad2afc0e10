"""Which UTC days an accepted event may fall on: the past-time window, and retention.

An event is dated by its corrected time (events.event_time). Its UTC day must be on or after
`today - MAX_PAST_DAYS + 1` (today counts as one day of the window), and, when retention is
on, on or after the day after the first day retention keeps (`today - RETENTION_DAYS + 2`;
consumer/retention.py keeps from `today - RETENTION_DAYS + 1`). That first kept day is dropped
at the next UTC midnight, minutes after an event for it could be accepted: the day of margin
gives a consumer that lags at least a day to store what was accepted, rather than turn it
into a dead letter. Times ahead of the receipt are clamped to it beyond
`MAX_FUTURE_S`, so accepted events fall on at most MAX_PAST_DAYS + 1 days (the window and
tomorrow, for a clock up to MAX_FUTURE_S ahead around midnight): that bounds the day
partitions any request can make the consumer create.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from core.events import TIMESTAMP_EXPIRED, TIMESTAMP_TOO_OLD, InvalidEvent
from core.settings import MAX_PAST_DAYS_LIMIT

# Days between the first day retention keeps and the first day the API accepts under it.
RETENTION_MARGIN_DAYS = 1


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), UTC)


class TimeWindow:
    """Refuses events dated before the window; the bounds are computed once per UTC day."""

    def __init__(self, max_past_days: int, retention_days: int = 0) -> None:
        if not 1 <= max_past_days <= MAX_PAST_DAYS_LIMIT:
            raise ValueError(f"max_past_days must be 1-{MAX_PAST_DAYS_LIMIT}, got {max_past_days}")
        if retention_days == 1:  # with the margin, no day of the past would be accepted
            raise ValueError("retention_days must be 0 (keep all) or at least 2, got 1")
        self.max_past_days = max_past_days
        self.retention_days = max(retention_days, 0)
        # The UTC day the bounds below were computed for, as [start, end) instants.
        self._day_start = datetime.max.replace(tzinfo=UTC)
        self._day_end = datetime.min.replace(tzinfo=UTC)
        self._first_allowed = self._day_start
        self._first_retained = self._day_start

    def first_allowed_day(self, today: date) -> date:
        """The first day MAX_PAST_DAYS accepts."""
        return today - timedelta(days=self.max_past_days - 1)

    def first_kept_day(self, today: date) -> date | None:
        """The first day retention keeps (consumer.retention.first_kept_day), or None when
        it keeps everything."""
        if not self.retention_days:
            return None
        return today - timedelta(days=self.retention_days - 1)

    def first_retained_day(self, today: date) -> date | None:
        """The first day accepted under retention: a day after the first day it keeps, or
        None when it keeps everything."""
        kept = self.first_kept_day(today)
        return None if kept is None else kept + timedelta(days=RETENTION_MARGIN_DAYS)

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
        retained = self.first_retained_day(today)
        self._first_retained = (
            _midnight(retained) if retained is not None else datetime.min.replace(tzinfo=UTC)
        )
        self._first_allowed = max(_midnight(self.first_allowed_day(today)), self._first_retained)

    def _refusal(self, timestamp: datetime) -> InvalidEvent:
        day = timestamp.astimezone(UTC).date()
        if timestamp < self._first_retained:
            first_kept = self._first_retained.date() - timedelta(days=RETENTION_MARGIN_DAYS)
            return InvalidEvent(
                f"`timestamp` falls on {day} (UTC), a day retention has deleted or is about "
                f"to delete: RETENTION_DAYS={self.retention_days} keeps days from {first_kept} "
                f"on, and events are accepted from {self._first_retained.date()} on (a day of "
                "margin, so that a consumer that lags still stores them); the event cannot be "
                "stored",
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
