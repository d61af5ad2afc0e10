"""Bisection of a rejected batch down to its culprit rows, with a fake probe."""

from __future__ import annotations

import math
import random

import pytest

from consumer.isolation import bisect


class FakeStore:
    """Refuses any subset holding a poison row; keeps the others, as a savepoint would."""

    def __init__(self, poison: set[int]) -> None:
        self.poison = poison
        self.stored: list[int] = []
        self.probes = 0

    async def probe(self, rows: list[int]) -> str | None:
        self.probes += 1
        bad = sorted(self.poison.intersection(rows))
        if bad:
            return f"row {bad[0]} refused"
        self.stored += rows
        return None


async def test_no_culprit_is_one_probe() -> None:
    store = FakeStore(set())
    assert await bisect(range(100), store.probe) == []
    assert store.probes == 1
    assert store.stored == list(range(100))


async def test_an_empty_batch_makes_no_probe() -> None:
    store = FakeStore(set())
    assert await bisect([], store.probe) == []
    assert store.probes == 0


@pytest.mark.parametrize("count", [1, 2, 3, 7, 100, 1000, 80_000, 160_000])  # a batch; two absorbed
@pytest.mark.parametrize("culprits", [1, 2, 5])
async def test_every_other_row_is_stored_once_and_probes_are_bounded(
    count: int, culprits: int
) -> None:
    rng = random.Random(count * 31 + culprits)
    poison = set(rng.sample(range(count), min(culprits, count)))
    store = FakeStore(poison)
    found = await bisect(list(range(count)), store.probe)
    assert [row for row, _ in found] == sorted(poison)
    assert all(reason == f"row {row} refused" for row, reason in found)
    assert sorted(store.stored) == sorted(set(range(count)) - poison)
    assert len(store.stored) == len(set(store.stored))
    k = len(poison)
    assert store.probes <= 1 + 2 * k * math.ceil(math.log2(max(count, 2)))


async def test_all_rows_poison() -> None:
    store = FakeStore(set(range(8)))
    found = await bisect(list(range(8)), store.probe)
    assert [row for row, _ in found] == list(range(8))
    assert store.stored == []


async def test_what_a_probe_raises_ends_the_pass() -> None:
    class Gone(Exception):
        pass

    calls = 0

    async def probe(rows: list[int]) -> str | None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise Gone
        return "refused" if 5 in rows else None

    with pytest.raises(Gone):
        await bisect(list(range(10)), probe)
