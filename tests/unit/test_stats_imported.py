"""The imported layer's arithmetic: counts add, visit ratios are recomputed from sums, and
breakdown rows merge by value and are ranked again."""

from __future__ import annotations

from typing import Any

import pytest

from ingest.errors import BadRequest
from ingest.stats_imported import Sums, merge_values, parse_with_imported, rank, ratios


def test_ratios_round_as_plausible() -> None:
    assert ratios(Sums(visits=8, bounces=3, duration=20, visit_views=13)) == {
        "bounce_rate": 38,  # 37.5 rounds up
        "visit_duration": 3,  # 2.5 rounds up
        "views_per_visit": 1.63,  # 1.625
    }
    assert ratios(Sums()) == {"bounce_rate": 0, "visit_duration": 0, "views_per_visit": 0.0}


def test_counts_add_and_ratios_come_from_both_sums() -> None:
    values: dict[str, Any] = {"visitors": 10, "visits": 4, "bounce_rate": 50, "views": 9}
    native = Sums(visits=4, bounces=2, duration=40, visit_views=9)
    imported = Sums(views=6, visitors=5, events=7, visits=6, bounces=0, duration=60, visit_views=6)
    metrics = ("visitors", "visits", "bounce_rate", "views", "visit_duration")
    merge_values(values, metrics, imported, native)
    assert values == {
        "visitors": 15,
        "visits": 10,
        "bounce_rate": 20,
        "views": 15,
        "visit_duration": 10,
    }


def test_without_native_sums_ratios_stay_native() -> None:
    values: dict[str, Any] = {"views": 1, "bounce_rate": 100}
    merge_values(values, ("views", "bounce_rate"), Sums(views=2, visits=1), None)
    assert values == {"views": 3, "bounce_rate": 100}


def test_breakdown_rows_merge_by_value_and_rank_again() -> None:
    native = [
        {"path": "/a", "views": 10, "visitors": 5},
        {"path": "/b", "views": 8, "visitors": 4},
    ]
    imported = {"/b": Sums(views=5, visitors=2), "/c": Sums(views=9, visitors=9)}
    ranked = rank(native, imported, "path", ("views", "visitors"), {})
    assert ranked == [
        {"path": "/b", "views": 13, "visitors": 6},
        {"path": "/a", "views": 10, "visitors": 5},
        {"path": "/c", "views": 9, "visitors": 9},
    ]
    by_visitors = rank(native, imported, "path", ("visitors", "views"), {})
    assert [r["path"] for r in by_visitors] == ["/c", "/b", "/a"]


def test_the_parameter() -> None:
    assert parse_with_imported({}) is True
    assert parse_with_imported({"with_imported": "false"}) is False
    with pytest.raises(BadRequest) as caught:
        parse_with_imported({"with_imported": "no"})
    assert caught.value.field == "with_imported"
