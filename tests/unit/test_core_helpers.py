"""The calendar and time-zone helpers both processes use (core/calendar.py, core/timezones.py)."""

from __future__ import annotations

import datetime as dt

import pytest

from core.calendar import next_month, one_whole_month
from core.timezones import UnknownTimeZone, check_timezone
from ingest.errors import BadRequest
from ingest.stats_params import parse_timezone


def test_next_month_and_whole_months() -> None:
    assert next_month(dt.date(2025, 1, 31)) == dt.date(2025, 2, 1)
    assert next_month(dt.date(2024, 12, 1)) == dt.date(2025, 1, 1)
    assert one_whole_month(dt.date(2024, 2, 1), dt.date(2024, 3, 1))
    assert not one_whole_month(dt.date(2024, 2, 2), dt.date(2024, 3, 2))
    assert not one_whole_month(dt.date(2024, 2, 1), dt.date(2024, 2, 29))


def test_an_unknown_zone_is_a_value_error_and_a_400_on_the_api() -> None:
    assert check_timezone("Asia/Kolkata") == "Asia/Kolkata"
    with pytest.raises(UnknownTimeZone, match="not a known IANA time zone: 'Mars/Olympus'"):
        check_timezone("Mars/Olympus")
    assert issubclass(UnknownTimeZone, ValueError)
    with pytest.raises(BadRequest) as caught:
        parse_timezone({"timezone": "Mars/Olympus"})
    assert caught.value.field == "timezone"
    assert caught.value.message.startswith("`timezone` is not a known IANA time zone")
    assert parse_timezone({}) == "UTC"
