"""The body-read deadline: slow reads end in BodyTimeout, others pass untouched."""

from __future__ import annotations

import asyncio

import pytest

from ingest.body_deadline import BodyDeadlines
from ingest.errors import BodyTimeout


async def _slow() -> bytes:
    await asyncio.Event().wait()  # a client that never sends the rest
    return b""


async def _quick() -> bytes:
    await asyncio.sleep(0)
    return b"{}"


async def test_a_read_past_the_deadline_raises_body_timeout() -> None:
    deadlines = BodyDeadlines(0.05)
    with pytest.raises(BodyTimeout) as caught:
        await deadlines.read(_slow())
    assert caught.value.status == 408
    assert caught.value.code == "body_timeout"
    assert "BODY_READ_TIMEOUT_S" in caught.value.message
    assert deadlines.pending() == 0
    # The task is not left cancelled: it goes on (to answer 408).
    await asyncio.sleep(0)


async def test_reads_in_time_are_untouched_and_forgotten() -> None:
    deadlines = BodyDeadlines(0.05)
    assert await asyncio.gather(*(deadlines.read(_quick()) for _ in range(10))) == [b"{}"] * 10
    assert deadlines.pending() == 0


async def test_only_the_slow_reads_of_many_time_out() -> None:
    deadlines = BodyDeadlines(0.05)

    async def one(slow: bool) -> str:
        try:
            await deadlines.read(_slow() if slow else _quick())
        except BodyTimeout:
            return "timeout"
        return "read"

    results = await asyncio.gather(*(one(i % 2 == 0) for i in range(6)))
    assert results == ["timeout", "read"] * 3


async def test_other_cancellations_pass_through() -> None:
    deadlines = BodyDeadlines(60)
    task = asyncio.create_task(deadlines.read(_slow()))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert deadlines.pending() == 0
