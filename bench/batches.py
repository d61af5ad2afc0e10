"""Consumer batches committed beside a stats measurement (`python -m bench stats
--batches-per-s N --batches-site other|same`): data arriving while the questions are asked.

Each batch is a few events written by the consumer's own Writer in its own transaction, as a
replica commits them: of another site (the measured site's kept answers stay valid) or of the
measured site itself (each batch changes what its answers read, so every question is computed
again after it). The events are dated now, outside the bench's month: the answers' numbers do
not move, their versions do.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

from consumer.batch import to_row
from consumer.write import Writer
from core.events import EventRecord

OTHER_SITE = "bench-other-site"
EVENTS_PER_BATCH = 20


def _record(site: str, i: int) -> EventRecord:
    now = datetime.now(UTC)
    return EventRecord(
        event_id=uuid.uuid4(),
        site_id=site,
        event_type="page_view",
        path=f"/arriving-{i % 10}",
        user_id=f"arriving-{i % 50}",
        timestamp=now,
        received_at=now,
    )


async def _commit(database_url: str, site: str, per_s: float, stop: threading.Event) -> int:
    """Commits a batch every 1/per_s seconds until `stop`; returns how many it committed."""
    writer = Writer(database_url, "bench-stats-batches", f"bench-stats-batches-{uuid.uuid4()}")
    committed, sent = 0, 0
    try:
        while not stop.is_set():
            rows = [to_row(_record(site, sent + i)) for i in range(EVENTS_PER_BATCH)]
            previous = {0: sent} if sent else {}
            sent += len(rows)
            await writer.write(rows, {0: sent}, previous)
            committed += 1
            await asyncio.sleep(1 / per_s)
    finally:
        await writer.close()
    return committed


@contextlib.contextmanager
def batches_beside(database_url: str, site: str, per_s: float) -> Iterator[None]:
    """Commits batches of `site` `per_s` times a second while the block runs (none if 0),
    and says how many once it ends."""
    if per_s <= 0:
        yield
        return
    stop = threading.Event()
    done: list[int] = []
    thread = threading.Thread(
        target=lambda: done.append(asyncio.run(_commit(database_url, site, per_s, stop))),
        name="bench-batches",
        daemon=True,
    )
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)
        print(f"stats bench: {done[0] if done else '?'} batches of {site} committed beside")
