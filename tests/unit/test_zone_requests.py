"""The API's count of requests per zone (ingest/zone_requests.py) and the consumer's settings
for keeping them: pure logic."""

from __future__ import annotations

import pytest

from consumer.settings import ConsumerSettings
from core.config import ConfigError
from ingest import zone_requests
from ingest.zone_requests import ZoneRequests


def test_requests_are_counted_per_site_and_zone_but_utc() -> None:
    noted = ZoneRequests()
    for site, zone in [("a", "Asia/Kolkata"), ("a", "Asia/Kolkata"), ("b", "Asia/Kolkata")]:
        noted.note(site, zone)
    noted.note("a", "UTC")
    assert noted._pending == {("a", "Asia/Kolkata"): 2, ("b", "Asia/Kolkata"): 1}


def test_a_minute_counts_a_bounded_number_of_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zone_requests, "MAX_PENDING", 3)
    noted = ZoneRequests()
    for i in range(10):
        noted.note(f"site-{i}", "Asia/Kolkata")
    noted.note("site-0", "Asia/Kolkata")  # pairs already counted still count
    assert noted._pending == {
        ("site-0", "Asia/Kolkata"): 2,
        ("site-1", "Asia/Kolkata"): 1,
        ("site-2", "Asia/Kolkata"): 1,
    }


def test_zone_keeping_settings() -> None:
    default = ConsumerSettings.from_env({})
    assert (default.auto_zones_per_site, default.auto_zones_max) == (1, 100)
    assert default.auto_zones_idle_days == 30
    off = ConsumerSettings.from_env({"AUTO_ZONES_PER_SITE": "0", "AUTO_ZONES_MAX": "5"})
    assert (off.auto_zones_per_site, off.auto_zones_max) == (0, 5)
    with pytest.raises(ConfigError, match="AUTO_ZONES_IDLE_DAYS"):
        ConsumerSettings.from_env({"AUTO_ZONES_IDLE_DAYS": "0"})


def test_pairs_the_table_cannot_hold_are_not_counted() -> None:
    noted = ZoneRequests()
    for site in ["a\x00", "é" * 65, "\ud800"]:
        noted.note(site, "Asia/Kolkata")
    noted.note("a", "Asia/Kolkata\x00")
    noted.note("é" * 64, "Asia/Kolkata")
    assert noted._pending == {("é" * 64, "Asia/Kolkata"): 1}
