"""A steady stream of events with known ids, produced as the API would, plus the checks
that end every fault case: each accepted event stored exactly once, rollups exact, visits
those of a plain sessionization of the stored events.

Each visitor's events are sent in the order of their times, as a site's events arrive in
practice, so the visits the consumer builds must not depend on how they were batched,
replayed after a kill or moved between replicas."""

from __future__ import annotations

import asyncio
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import psycopg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from core.events import (
    SCHEMA_EVENT_BATCH_V1,
    SCHEMA_EVENT_V1,
    SCHEMA_HEADER,
    EventRecord,
    encode_record,
    encode_records,
)
from tests.support import make_record

# Event times advance by 1-29 s an event: a visitor (one of 120) sees a gap of about half
# an hour on average, so visits both continue and end, and a backlog spans several UTC days,
# so batches cross day partitions. The steady stream runs concurrently with a backlog's
# preload, on a clock of its own weeks later: each sender keeps its own events in order, and
# no visit can join events of both.
BASE_TIME = datetime(2025, 11, 12, 0, 0, tzinfo=UTC)
STREAM_BASE_TIME = BASE_TIME + timedelta(days=60)
MAX_STEP_S = 30


@dataclass
class EventStream:
    """Produces events at about `rate_per_s`; remembers what it tried and what was acked."""

    bootstrap: str
    topic: str
    rate_per_s: int = 400
    # Every this many events, one already-sent event is sent again (a client retry).
    resend_every: int = 50
    attempted: set[uuid.UUID] = field(default_factory=set)
    acked: set[uuid.UUID] = field(default_factory=set)
    resent: int = 0
    failed_sends: int = 0
    _sent: list[EventRecord] = field(default_factory=list)
    _rng: random.Random = field(default_factory=lambda: random.Random(7))
    _clock: datetime = BASE_TIME
    _stream_clock: datetime = STREAM_BASE_TIME
    _task: asyncio.Task[None] | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _producer: AIOKafkaProducer | None = None

    def record(self, streamed: bool = False) -> EventRecord:
        """The next event of the backlog's clock (or, `streamed`, the steady stream's)."""
        rng = self._rng
        step = timedelta(seconds=rng.randrange(1, MAX_STEP_S))
        if streamed:
            self._stream_clock += step
            timestamp = self._stream_clock
        else:
            self._clock += step
            timestamp = self._clock
        return make_record(
            site_id=f"site-{rng.randrange(3)}",
            event_type=rng.choice(["page_view", "page_view", "page_view", "click"]),
            path=f"/p{rng.randrange(12)}",
            user_id=f"u{rng.randrange(40)}",
            timestamp=timestamp,
            received_at=timestamp + timedelta(seconds=1),
        )

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            enable_idempotence=True,
            request_timeout_ms=5000,
            linger_ms=5,
        )
        await self._producer.start()
        self._task = asyncio.create_task(self._run(), name="event-stream")

    async def preload(self, events: int, per_message: int = 100) -> None:
        """A backlog sent as batch messages (quickly), before the steady stream."""
        assert self._producer is not None
        futures = []
        chunks = []
        for _ in range(events // per_message):
            drawn = [self.record() for _ in range(per_message)]
            # One message per site, keyed by it: a site's events stay on its partition, in
            # order, as the API sends them.
            for site in sorted({r.site_id for r in drawn}):
                chunk = [r for r in drawn if r.site_id == site]
                chunks.append(chunk)
                futures.append(
                    await self._producer.send(
                        self.topic,
                        encode_records(chunk),
                        key=site.encode(),
                        headers=[(SCHEMA_HEADER, SCHEMA_EVENT_BATCH_V1)],
                    )
                )
                self.attempted.update(r.event_id for r in chunk)
        await asyncio.gather(*futures)
        for chunk in chunks:
            self.acked.update(r.event_id for r in chunk)
            self._sent.extend(chunk[:2])

    async def send_raw(self, value: bytes, schema: bytes) -> tuple[int, int]:
        """Sends one message as is; returns its (partition, offset)."""
        assert self._producer is not None
        meta = await (
            await self._producer.send(
                self.topic, value, key=b"site-0", headers=[(SCHEMA_HEADER, schema)]
            )
        )
        return int(meta.partition), int(meta.offset)

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await asyncio.wait_for(self._task, timeout=60)
        if self._producer is not None:
            await self._producer.stop()

    async def _run(self) -> None:
        assert self._producer is not None
        tick_s = 0.05
        per_tick = max(1, int(self.rate_per_s * tick_s))
        count = 0
        while not self._stop.is_set():
            records = []
            for _ in range(per_tick):
                count += 1
                if self._sent and count % self.resend_every == 0:
                    records.append(self._rng.choice(self._sent))
                    self.resent += 1
                else:
                    records.append(self.record(streamed=True))
            await self._send(records)
            await asyncio.sleep(tick_s)

    async def _send(self, records: list[EventRecord]) -> None:
        assert self._producer is not None
        self.attempted.update(r.event_id for r in records)
        try:
            futures = [
                await self._producer.send(
                    self.topic,
                    encode_record(r),
                    key=r.site_id.encode(),
                    headers=[(SCHEMA_HEADER, SCHEMA_EVENT_V1)],
                )
                for r in records
            ]
            results = await asyncio.gather(*futures, return_exceptions=True)
        except KafkaError:
            self.failed_sends += len(records)
            return
        for record, result in zip(records, results, strict=True):
            if isinstance(result, BaseException):
                self.failed_sends += 1
            else:
                self.acked.add(record.event_id)
                self._sent.append(record)


def stored_ids(database_url: str) -> list[uuid.UUID]:
    with psycopg.connect(database_url) as conn:
        return [row[0] for row in conn.execute("SELECT event_id FROM events").fetchall()]


def stored_offsets(database_url: str, group: str, topic: str) -> dict[int, int]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT partition, next_offset FROM consumer_offsets "
            "WHERE group_id = %s AND topic = %s",
            (group, topic),
        ).fetchall()
    return {int(p): int(o) for p, o in rows}
