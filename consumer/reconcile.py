"""Reconcile: is every event the API accepted in a window of the events topic accounted for?

`python -m consumer.reconcile [--since 2026-12-06T08:00Z] [--until ...] [--show 20]`

Each event in the window (by Kafka message time) is one of:
- stored: its row is in `events` (site, event id, day);
- dead-lettered: the dead-letter topic holds it (by source partition, offset and event id);
- pending: the consumer group has not reached its offset yet (lag, not loss);
- expired: retention dropped its day's raw rows (its rollups remain);
- missing: none of the above. This should always be zero; the command exits 1 otherwise, so
  it can run from cron or a test and page someone.

It reads the dead-letter topic whole, then the window of the events topic, with a consumer of
no group (it commits nothing and moves no one's offsets), and asks PostgreSQL in chunks.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

import msgspec
import psycopg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from psycopg.rows import TupleRow

from consumer.deadletter import (
    EVENT_ID_HEADER,
    SOURCE_OFFSET_HEADER,
    SOURCE_PARTITION_HEADER,
    SOURCE_TOPIC_HEADER,
)
from consumer.settings import ConsumerSettings, settings_for_command
from consumer.terminal import escaped
from core.events import SCHEMA_HEADER, EventRecord, decode_records

CHUNK_EVENTS = 5_000
FETCH_TIMEOUT_MS = 500
PROGRESS_EVERY_S = 1.0

# Which of the candidates are stored: the primary key's columns, looked up together. An id
# the emitter chose may be stored on the neighbouring day (a retry dated across midnight is
# kept once: see consumer/rollups/batch.sql).
STORED = """
SELECT w.site_id, w.event_id
FROM unnest(%(days)s::date[], %(sites)s::text[], %(ids)s::uuid[], %(emitter)s::bool[])
    AS w(day, site_id, event_id, emitter_id)
WHERE EXISTS (SELECT 1 FROM events e
              WHERE e.day = ANY(CASE WHEN w.emitter_id THEN ARRAY[w.day, w.day - 1, w.day + 1]
                                     ELSE ARRAY[w.day] END)
                AND e.site_id = w.site_id AND e.event_id = w.event_id)
"""

STORED_OFFSETS = """
SELECT partition, next_offset FROM consumer_offsets WHERE group_id = %s AND topic = %s
"""

# A day whose partition is gone was dropped by retention (a day is never recreated once
# dropped; the events of a day that could not be stored are in the dead-letter topic).
DAYS_DROPPED = """
SELECT d FROM unnest(%(days)s::date[]) AS d
WHERE to_regclass(format('events_%%s', to_char(d, 'YYYYMMDD'))) IS NULL
"""


@dataclass(frozen=True, slots=True)
class Unaccounted:
    """An event (or an undecodable message, event_id None) that nothing accounts for."""

    partition: int
    offset: int
    site_id: str | None
    event_id: uuid.UUID | None
    day: dt.date | None


@dataclass(slots=True)
class Report:
    messages: int = 0
    events: int = 0
    stored: int = 0
    dead_lettered: int = 0
    pending: int = 0
    expired: int = 0
    missing: list[Unaccounted] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.messages} messages, {self.events} events: stored {self.stored}, "
            f"dead-lettered {self.dead_lettered}, pending {self.pending}, "
            f"expired {self.expired}, missing {len(self.missing)}"
        )


@dataclass(frozen=True, slots=True)
class _Candidate:
    partition: int
    offset: int
    record: EventRecord


class _DeadLetterIndex:
    """What the dead-letter topic holds: whole messages and single events, by source."""

    def __init__(self) -> None:
        self.messages: set[tuple[int, int]] = set()  # undecodable: (partition, offset)
        self.events: set[tuple[int, int, uuid.UUID]] = set()

    def add(self, headers: dict[str, bytes], value: bytes, source_topic: str) -> None:
        if headers.get(SOURCE_TOPIC_HEADER, b"").decode() != source_topic:
            return
        try:
            partition = int(headers[SOURCE_PARTITION_HEADER])
            offset = int(headers[SOURCE_OFFSET_HEADER])
        except (KeyError, ValueError):
            return
        event_id = headers.get(EVENT_ID_HEADER)
        if event_id:
            self.events.add((partition, offset, uuid.UUID(event_id.decode())))
            return
        # A whole message: every event it carried is dead-lettered with it.
        self.messages.add((partition, offset))
        try:
            records = decode_records(value, headers.get(SCHEMA_HEADER))
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        self.events.update((partition, offset, r.event_id) for r in records)

    def holds(self, partition: int, offset: int, event_id: uuid.UUID | None) -> bool:
        if event_id is None:
            return (partition, offset) in self.messages
        return (partition, offset, event_id) in self.events


class _Progress:
    """A line a second on stderr while a long window is read."""

    def __init__(self, quiet: bool) -> None:
        self._quiet = quiet
        self._last = time.monotonic()

    def tick(self, what: str) -> None:
        now = time.monotonic()
        if not self._quiet and now - self._last >= PROGRESS_EVERY_S:
            self._last = now
            print(f"reconcile: {what}", file=sys.stderr, flush=True)


def _ms(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1000)


async def _read(
    consumer: AIOKafkaConsumer, bounds: dict[TopicPartition, tuple[int, int]]
) -> AsyncIterator[tuple[int, int, dict[str, bytes], bytes]]:
    """Yields (partition, offset, headers, value) of each partition's [start, end) range."""
    remaining = {tp: (start, end) for tp, (start, end) in bounds.items() if start < end}
    consumer.assign(list(remaining) or list(bounds))
    for tp, (start, _) in remaining.items():
        consumer.seek(tp, start)
    while remaining:
        fetched = await consumer.getmany(*remaining, timeout_ms=FETCH_TIMEOUT_MS)
        for tp, records in fetched.items():
            end = remaining[tp][1] if tp in remaining else -1
            for record in records:
                if record.offset >= end:
                    break
                headers = {name: value for name, value in record.headers or ()}
                yield tp.partition, record.offset, headers, record.value or b""
            if records and records[-1].offset + 1 >= end:
                remaining.pop(tp, None)
        for tp in list(remaining):
            if await consumer.position(tp) >= remaining[tp][1]:
                remaining.pop(tp)


async def _partitions(bootstrap_servers: str, topic: str) -> list[int]:
    """The topic's partitions as the broker describes them (none if it does not exist)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=10_000)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return [
        int(p["partition"])
        for t in described
        if t["topic"] == topic and t["error_code"] == 0
        for p in t["partitions"]
    ]


async def _window(
    consumer: AIOKafkaConsumer,
    topic: str,
    partitions: list[int],
    since: dt.datetime | None,
    until: dt.datetime | None,
) -> dict[TopicPartition, tuple[int, int]]:
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    if not tps:
        raise LookupError(f"topic {topic!r} does not exist (check EVENTS_TOPIC / DLQ_TOPIC)")
    ends = await consumer.end_offsets(tps)
    starts = await consumer.beginning_offsets(tps)

    async def at(
        moment: dt.datetime | None, default: dict[TopicPartition, int]
    ) -> dict[TopicPartition, int]:
        if moment is None:
            return dict(default)
        found = await consumer.offsets_for_times({tp: _ms(moment) for tp in tps})
        return {
            tp: (default_end if (o := found.get(tp)) is None else o.offset)
            for tp, default_end in ends.items()
        }

    first = await at(since, starts)
    last = await at(until, ends)
    return {tp: (first[tp], min(last[tp], ends[tp])) for tp in tps}


async def reconcile(
    settings: ConsumerSettings,
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    quiet: bool = True,
) -> Report:
    """Accounts for every event of the window [since, until) of the events topic (all that
    Kafka still holds where a bound is None). Waits for Kafka and PostgreSQL reads only; it
    writes nothing anywhere."""
    progress = _Progress(quiet)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        client_id="analytics-reconcile",
    )
    await consumer.start()
    try:
        dead = _DeadLetterIndex()
        bootstrap = settings.kafka_bootstrap_servers
        dlq_partitions = await _partitions(bootstrap, settings.dlq_topic)
        dlq_bounds = await _window(consumer, settings.dlq_topic, dlq_partitions, None, None)
        async for _, _, headers, value in _read(consumer, dlq_bounds):
            dead.add(headers, value, settings.events_topic)
            progress.tick("reading the dead-letter topic")
        partitions = await _partitions(bootstrap, settings.events_topic)
        bounds = await _window(consumer, settings.events_topic, partitions, since, until)
        async with await psycopg.AsyncConnection.connect(
            settings.database_url, autocommit=True, connect_timeout=10
        ) as conn:
            cur = await conn.execute(STORED_OFFSETS, (settings.group_id, settings.events_topic))
            stored_offsets = {int(p): int(o) for p, o in await cur.fetchall()}
            report = Report()
            chunk: list[_Candidate] = []
            async for partition, offset, headers, value in _read(consumer, bounds):
                report.messages += 1
                try:
                    records = decode_records(value, headers.get(SCHEMA_HEADER))
                except (msgspec.DecodeError, msgspec.ValidationError):
                    _account(report, dead, stored_offsets, partition, offset, None, set())
                    continue
                chunk.extend(_Candidate(partition, offset, r) for r in records)
                if len(chunk) >= CHUNK_EVENTS:
                    await _check(conn, chunk, report, dead, stored_offsets)
                    chunk = []
                progress.tick(report.summary())
            await _check(conn, chunk, report, dead, stored_offsets)
        return report
    finally:
        await consumer.stop()


async def _check(
    conn: psycopg.AsyncConnection[TupleRow],
    chunk: list[_Candidate],
    report: Report,
    dead: _DeadLetterIndex,
    stored_offsets: dict[int, int],
) -> None:
    if not chunk:
        return
    report.events += len(chunk)
    cur = await conn.execute(
        STORED,
        {
            "days": [c.record.timestamp.date() for c in chunk],
            "sites": [c.record.site_id for c in chunk],
            "ids": [c.record.event_id for c in chunk],
            "emitter": [c.record.emitter_id for c in chunk],
        },
    )
    found = {(str(site), event_id) for site, event_id in await cur.fetchall()}
    unstored = [c for c in chunk if (c.record.site_id, c.record.event_id) not in found]
    report.stored += len(chunk) - len(unstored)
    days = sorted({c.record.timestamp.date() for c in unstored})
    dropped: set[dt.date] = set()
    if days:
        cur = await conn.execute(DAYS_DROPPED, {"days": days})
        dropped = {day for (day,) in await cur.fetchall() if isinstance(day, dt.date)}
    for c in unstored:
        _account(report, dead, stored_offsets, c.partition, c.offset, c.record, dropped)


def _account(
    report: Report,
    dead: _DeadLetterIndex,
    stored_offsets: dict[int, int],
    partition: int,
    offset: int,
    record: EventRecord | None,
    dropped: set[dt.date],
) -> None:
    """Files one event that is not stored (or an undecodable message) under its reason."""
    event_id = None if record is None else record.event_id
    if dead.holds(partition, offset, event_id):
        report.dead_lettered += 1
    elif offset >= stored_offsets.get(partition, 0):
        report.pending += 1
    elif record is not None and record.timestamp.date() in dropped:
        report.expired += 1
    else:
        report.missing.append(
            Unaccounted(
                partition,
                offset,
                None if record is None else record.site_id,
                event_id,
                None if record is None else record.timestamp.date(),
            )
        )


def _moment(text: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def missing_line(item: Unaccounted) -> str:
    """One unaccounted event for a terminal: its site id escaped (consumer/terminal.py)."""
    site = "-" if item.site_id is None else f"'{escaped(item.site_id)}'"
    return (
        f"  missing: partition {item.partition} offset {item.offset} site {site} "
        f"event {item.event_id} day {item.day}"
    )


def _print_missing(missing: Iterable[Unaccounted], show: int) -> None:
    for item in list(missing)[:show]:
        print(missing_line(item))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m consumer.reconcile",
        description="Accounts for every accepted event in a window of the events topic.",
    )
    parser.add_argument("--since", type=_moment, help="window start (ISO 8601; default: all)")
    parser.add_argument("--until", type=_moment, help="window end (ISO 8601; default: now)")
    parser.add_argument("--show", type=int, default=20, help="missing events listed (20)")
    args = parser.parse_args(argv)
    settings = settings_for_command("reconcile")
    if settings is None:
        return 2
    try:
        report = asyncio.run(reconcile(settings, since=args.since, until=args.until, quiet=False))
    except (KafkaError, LookupError) as exc:
        print(
            f"reconcile: cannot read Kafka: {escaped(str(exc))}; check KAFKA_BOOTSTRAP_SERVERS",
            file=sys.stderr,
        )
        return 2
    except psycopg.Error as exc:
        print(
            f"reconcile: cannot read PostgreSQL: {escaped(str(exc))}; check DATABASE_URL",
            file=sys.stderr,
        )
        return 2
    print(f"reconcile: {report.summary()}")
    _print_missing(report.missing, args.show)
    if report.missing:
        print(
            "reconcile: accepted events are unaccounted for; keep the topic's data (raise "
            "retention.ms) and look at the consumer's log for these partitions",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
