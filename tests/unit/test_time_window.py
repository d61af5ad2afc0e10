"""The past-time window and retention, with injected clocks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from consumer.retention import first_kept_day as retention_first_kept_day
from core.config import ConfigError
from core.events import InvalidEvent
from ingest.settings import Settings
from ingest.time_window import MAX_PAST_DAYS_LIMIT, TimeWindow

NOON = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def refusal(window: TimeWindow, timestamp: datetime, received_at: datetime = NOON) -> str:
    with pytest.raises(InvalidEvent) as caught:
        window.check(timestamp, received_at)
    assert caught.value.field == "timestamp"
    return caught.value.code


def test_today_and_the_days_before_it_within_the_window_are_accepted() -> None:
    window = TimeWindow(max_past_days=31)
    first = datetime(2026, 2, 8, tzinfo=UTC)  # 2026-03-10 minus 30 days
    for timestamp in (NOON, NOON - timedelta(days=30), first):
        window.check(timestamp, NOON)
    assert window.first_allowed_day(NOON.date()) == first.date()
    assert refusal(window, first - timedelta(microseconds=1)) == "timestamp_too_old"
    assert refusal(window, datetime(1000, 1, 1, tzinfo=UTC)) == "timestamp_too_old"


def test_a_window_of_one_day_is_today_only() -> None:
    window = TimeWindow(max_past_days=1)
    window.check(datetime(2026, 3, 10, tzinfo=UTC), NOON)
    assert refusal(window, datetime(2026, 3, 9, 23, 59, 59, tzinfo=UTC)) == "timestamp_too_old"


def test_the_window_moves_at_utc_midnight() -> None:
    window = TimeWindow(max_past_days=2)
    yesterday = datetime(2026, 3, 9, 0, 0, tzinfo=UTC)
    window.check(yesterday, NOON)
    next_day = datetime(2026, 3, 11, 0, 0, 1, tzinfo=UTC)
    assert refusal(window, yesterday, next_day) == "timestamp_too_old"
    window.check(yesterday, NOON)  # and back, for a request received before midnight


def test_days_are_utc_days_whatever_the_offset_of_the_timestamp() -> None:
    window = TimeWindow(max_past_days=1)
    # The 9th in New York, already the 10th in UTC: today.
    window.check(datetime(2026, 3, 9, 23, 0, tzinfo=timezone(timedelta(hours=-5))), NOON)
    # The 10th in Kiritimati, still the 9th in UTC: yesterday.
    late = datetime(2026, 3, 10, 9, 0, tzinfo=timezone(timedelta(hours=14)))
    assert refusal(window, late) == "timestamp_too_old"


def test_days_retention_dropped_are_expired_not_too_old() -> None:
    window = TimeWindow(max_past_days=31, retention_days=7)
    first_kept = datetime(2026, 3, 4, tzinfo=UTC)  # today and the 6 days before
    assert window.first_kept_day(NOON.date()) == first_kept.date()
    assert refusal(window, first_kept - timedelta(seconds=1)) == "timestamp_expired"
    assert refusal(window, NOON - timedelta(days=100)) == "timestamp_expired"


def test_the_first_day_retention_keeps_is_refused_a_day_of_margin() -> None:
    """At 23:59 the first kept day is dropped by the next run of retention, minutes later:
    an event for it would become a dead letter if the consumer lagged. The API accepts from
    the day after, which stays kept for at least another whole day."""
    window = TimeWindow(max_past_days=31, retention_days=7)
    late = datetime(2026, 3, 10, 23, 59, 59, tzinfo=UTC)
    first_kept = datetime(2026, 3, 4, tzinfo=UTC)
    first_accepted = datetime(2026, 3, 5, tzinfo=UTC)
    for received in (NOON, late):
        assert window.first_retained_day(received.date()) == first_accepted.date()
        assert refusal(window, first_kept, received) == "timestamp_expired"
        assert refusal(window, first_accepted - timedelta(microseconds=1), received) == (
            "timestamp_expired"
        )
        window.check(first_accepted, received)
    # What was accepted at 23:59:59 is still kept by retention a whole day later.
    next_day = late.date() + timedelta(days=1)
    assert retention_first_kept_day(7, next_day) == first_accepted.date()
    assert window.first_kept_day(NOON.date()) == retention_first_kept_day(7, NOON.date())
    # At the next midnight the edge moves with today.
    assert refusal(window, first_accepted, late + timedelta(seconds=1)) == "timestamp_expired"


def test_retention_of_one_day_would_accept_no_past_day() -> None:
    with pytest.raises(ValueError):
        TimeWindow(max_past_days=31, retention_days=1)
    with pytest.raises(ConfigError, match="RETENTION_DAYS must be 0"):
        Settings.from_env({"RETENTION_DAYS": "1"})
    assert Settings.from_env({"RETENTION_DAYS": "2"}).retention_days == 2
    window = TimeWindow(max_past_days=31, retention_days=2)
    window.check(NOON.replace(hour=0), NOON)  # keeps yesterday and today: accepts today
    assert refusal(window, NOON - timedelta(days=1)) == "timestamp_expired"


def test_retention_longer_than_the_window_leaves_the_window_in_charge() -> None:
    window = TimeWindow(max_past_days=3, retention_days=30)
    assert refusal(window, NOON - timedelta(days=10)) == "timestamp_too_old"
    assert refusal(window, NOON - timedelta(days=40)) == "timestamp_expired"
    assert TimeWindow(max_past_days=3).first_kept_day(NOON.date()) is None


def test_messages_name_the_window_and_the_setting() -> None:
    window = TimeWindow(max_past_days=31, retention_days=7)
    with pytest.raises(InvalidEvent) as too_old:
        TimeWindow(max_past_days=2).check(NOON - timedelta(days=5), NOON)
    assert "MAX_PAST_DAYS" in too_old.value.message and "2026-03-09" in too_old.value.message
    with pytest.raises(InvalidEvent) as expired:
        window.check(NOON - timedelta(days=10), NOON)
    message = expired.value.message
    assert "RETENTION_DAYS=7" in message and "2026-03-04" in message and "2026-03-05" in message


def test_the_window_is_capped() -> None:
    with pytest.raises(ValueError):
        TimeWindow(max_past_days=MAX_PAST_DAYS_LIMIT + 1)
    with pytest.raises(ValueError):
        TimeWindow(max_past_days=0)
    assert Settings.from_env({}).max_past_days == 31
    assert Settings.from_env({"MAX_PAST_DAYS": "3660"}).max_past_days == 3660
    with pytest.raises(ConfigError, match="MAX_PAST_DAYS"):
        Settings.from_env({"MAX_PAST_DAYS": "100000"})
    with pytest.raises(ConfigError, match="MAX_PAST_DAYS"):
        Settings.from_env({"MAX_PAST_DAYS": "0"})


def test_cors_origins_are_trimmed_and_empty_entries_dropped() -> None:
    raw = " https://a.example , https://b.example,, "
    settings = Settings.from_env({"CORS_ALLOW_ORIGINS": raw})
    assert settings.cors_allow_origins == ["https://a.example", "https://b.example"]
    assert Settings.from_env({}).cors_allow_origins == ["*"]
