"""The import spans' one read per epoch (ingest/stats_imported.py, `_covers`): the order in
which reads end. The statement's rows are given here by the test, as reads ending when it
says; what PostgreSQL answers is covered by tests/integration/test_exports.py."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

from ingest import stats_imported
from ingest.stats_answers import ANSWER_EPOCH
from ingest.stats_params import parse_stats

NOW = dt.datetime(2025, 11, 12, 12, 0, tzinfo=dt.UTC)
DAY = dt.date(2025, 11, 10)


class Reads:
    """The spans statement's reads in the order they start, each ending when released."""

    def __init__(self) -> None:
        self.started: list[tuple[asyncio.Event, list[Any]]] = []

    async def fetch(self, pool: object, query: str, params: dict[str, Any]) -> list[Any]:
        assert query == stats_imported.STATEMENTS["import_spans"]
        release: asyncio.Event = asyncio.Event()
        rows: list[Any] = []
        self.started.append((release, rows))
        await release.wait()
        return rows

    def end(self, index: int, rows: list[Any]) -> None:
        release, held = self.started[index]
        held.extend(rows)
        release.set()


async def _asks(pool: object, epoch: str) -> bool:
    ANSWER_EPOCH.set(epoch)
    request = parse_stats({"site_id": "s", "date": str(DAY), "period": "day"}, now=NOW)
    return await stats_imported._covers(pool, request)  # type: ignore[arg-type]


async def _turns() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_read_for_an_older_epoch_ending_last_does_not_answer_the_newer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reads = Reads()
    monkeypatch.setattr(stats_imported, "fetch", reads.fetch)
    pool = type("Pool", (), {})()
    older = asyncio.create_task(_asks(pool, "e1"))
    await _turns()
    newer = [asyncio.create_task(_asks(pool, "e2")) for _ in range(3)]
    await _turns()
    assert len(reads.started) == 2  # one read per epoch, shared by its questions
    reads.end(1, [("s", DAY, DAY)])  # the newer epoch's read (the import is in it) ends first
    await _turns()
    reads.end(0, [])  # then the older one's, from before the import
    assert await older is False
    assert await asyncio.gather(*newer) == [True, True, True]
    spans = stats_imported._SPANS[pool]
    assert spans.epoch == "e2" and "s" in spans.spans
    assert await _asks(pool, "e2") is True and len(reads.started) == 2


async def test_a_failed_read_fails_its_questions_and_the_next_one_reads_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started = 0

    async def failing(pool: object, query: str, params: dict[str, Any]) -> list[Any]:
        nonlocal started
        started += 1
        await asyncio.sleep(0)
        raise ConnectionError("the database went away")

    monkeypatch.setattr(stats_imported, "fetch", failing)
    pool = type("Pool", (), {})()
    results = await asyncio.gather(*(_asks(pool, "e1") for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    assert started == 1
    await _turns()
    assert stats_imported._SPANS[pool].reading is None  # the task (and its traceback) let go
    with pytest.raises(ConnectionError):
        await _asks(pool, "e1")
    assert started == 2
