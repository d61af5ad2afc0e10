"""Parsing `GET /stats` parameters, and the byte-exact response shape."""

from __future__ import annotations

import datetime as dt

import msgspec
import pytest

from ingest.errors import BadRequest
from ingest.stats_legacy import DailyStats, PathViews, parse_stats_query


def test_valid_query() -> None:
    query = parse_stats_query({"site_id": "site-abc-123", "date": "2025-11-12"})
    assert query.site_id == "site-abc-123"
    assert query.day == dt.date(2025, 11, 12)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"date": "2025-11-12"}, "site_id"),
        ({"site_id": "", "date": "2025-11-12"}, "site_id"),
        ({"site_id": "s"}, "date"),
        ({"site_id": "s", "date": "2025-02-30"}, "date"),
        ({"site_id": "s", "date": "2025-13-01"}, "date"),
        ({"site_id": "s", "date": "12/11/2025"}, "date"),
        ({"site_id": "s", "date": "2025-11-12T00:00:00"}, "date"),
    ],
)
def test_missing_or_impossible_parameters_are_named(params: dict[str, str], field: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_stats_query(params)
    assert caught.value.field == field
    assert f"`{field}`" in caught.value.message


def test_response_bytes_match_the_original_service() -> None:
    stats = DailyStats(
        site_id="site-abc-123",
        date="2025-11-12",
        total_views=1,
        unique_users=1,
        top_paths=[PathViews("/pricing", 1)],
    )
    assert msgspec.json.encode(stats) == (
        b'{"site_id":"site-abc-123","date":"2025-11-12","total_views":1,'
        b'"unique_users":1,"top_paths":[{"path":"/pricing","views":1}]}'
    )
