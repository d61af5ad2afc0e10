"""The consumer's main loop: poll Kafka, batch, write to PostgreSQL, then commit to Kafka.

Correctness rests on PostgreSQL, not on Kafka's committed offsets: each batch's transaction
records where every partition stands (see write.py), and on assignment the loop seeks to
those stored offsets. The Kafka commit that follows each write only feeds lag monitoring.

A batch is written by a task of its own while the loop goes on polling into the next one, so
that decoding in Python overlaps the database's work; there is at most one write in flight.

While PostgreSQL is down the loop pauses every partition, keeps calling `getmany` (so the
group does not evict it for exceeding max.poll.interval.ms), retries the same batch with
backoff, and resumes once it is stored.

A batch the database refuses because of its data (consumer/errors.py) is written again in
one isolation pass (Writer.write_isolating): every event is stored but the culprits, which
go to the dead-letter topic one by one before the commit that skips them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from consumer.batch import (
    REJECTED,
    Batch,
    BatchPolicy,
    Clock,
    Message,
    Poison,
    WriteTimeSizer,
    record_of,
)
from consumer.deadletter import DeadLetters, DeadLetterUnavailable
from consumer.metrics import ConsumerStats
from consumer.settings import ConsumerSettings
from consumer.write import DatabaseUnavailable, Fenced, RejectedRow, RowsRejected, Writer
from core.events import SCHEMA_HEADER

log = logging.getLogger(__name__)

POLL_TIMEOUT_MS = 100
# The Kafka commit only feeds lag monitoring: never wait long for it (aiokafka retries a
# commit until the coordinator answers, i.e. for as long as the broker is down).
KAFKA_COMMIT_TIMEOUT_S = 5.0
LAG_REFRESH_S = 1.0


# The cyclic collector's thresholds for a consumer process (tune_gc): the youngest generation
# every 50,000 allocations, the middle one every 20 of those, the oldest every 100 of those.
GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    """Makes the cyclic garbage collector run far less often in a consumer process.

    A batch holds a few container objects per event (the row, its id, its times) for the
    second or two until it is stored, and two batches are alive at once. With Python's default
    thresholds (700, 10, 10) the collector walked those live rows again and again while the
    next batch was decoded: about half the CPU of decoding an event and building its row
    (docs/decisions/0022-batches-sized-by-write-time.md). Nothing in a batch forms a cycle, so
    refcounting frees it, and the rare cyclic garbage (exceptions, aiokafka's futures) waits
    longer for its collection. What exists at start-up is frozen out of the collector's sight.
    Called once per process, before consuming.
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def make_kafka_consumer(settings: ConsumerSettings, **overrides: Any) -> AIOKafkaConsumer:
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "group_id": settings.group_id,
        "enable_auto_commit": False,  # offsets live in PostgreSQL; see module docstring
        "auto_offset_reset": "earliest",
        "session_timeout_ms": settings.session_timeout_ms,
        "heartbeat_interval_ms": max(1000, settings.session_timeout_ms // 3),
        "max_poll_interval_ms": settings.max_poll_interval_ms,
        "max_partition_fetch_bytes": 4 * 1024 * 1024,
        "fetch_max_bytes": 32 * 1024 * 1024,
        "client_id": "analytics-consumer",
    }
    if settings.group_instance_id:
        # Static membership: a restart within the session timeout gets its partitions back
        # without a rebalance; a stopped replica's partitions wait for the session timeout.
        options["group_instance_id"] = settings.group_instance_id
    options.update(overrides)
    return AIOKafkaConsumer(**options)


class Backoff:
    """Exponential backoff with jitter, as state: the loop keeps polling while it waits."""

    def __init__(self, initial_s: float, max_s: float, clock: Clock) -> None:
        self._initial_s = initial_s
        self._max_s = max_s
        self._clock = clock
        self._attempts = 0
        self._ready_at = 0.0

    def failed(self) -> float:
        delay = min(self._max_s, self._initial_s * 2.0**self._attempts)
        delay *= random.uniform(0.5, 1.0)
        self._attempts += 1
        self._ready_at = self._clock() + delay
        return delay

    def succeeded(self) -> None:
        self._attempts = 0
        self._ready_at = 0.0

    @property
    def waiting(self) -> bool:
        return self._clock() < self._ready_at

    @property
    def failing(self) -> bool:
        return self._attempts > 0


class ConsumerLoop(ConsumerRebalanceListener):  # type: ignore[misc]
    """Owns the batch and the stored positions of the partitions assigned to this replica."""

    def __init__(
        self,
        settings: ConsumerSettings,
        consumer: AIOKafkaConsumer,
        writer: Writer,
        dead_letters: DeadLetters,
        stats: ConsumerStats,
        clock: Clock = time.monotonic,
        member: int = 0,
    ) -> None:
        # One logger per member of the replica (consumer.loop.0, .1...): whose partitions a
        # line is about.
        self._log = logging.getLogger(f"{__name__}.{member}")
        self._settings = settings
        self._consumer = consumer
        self._writer = writer
        self._dead_letters = dead_letters
        self._stats = stats
        self._clock = clock
        self._topic = settings.events_topic
        self._policy = BatchPolicy(
            settings.max_batch_rows, settings.max_batch_bytes, settings.max_batch_age_s
        )
        # Batches no larger than can be stored in about TARGET_BATCH_WRITE_S: an event waits
        # for the write in flight and then its own, so the time a write takes is what
        # freshness is made of (docs/decisions/0022-batches-sized-by-write-time.md).
        self._sizer = WriteTimeSizer(settings.max_batch_rows, settings.target_batch_write_s)
        # events taken into batches, and when the last write's size was decided
        self._taken = 0
        self._sized_at = clock()
        self._batch = Batch(clock)
        # partition -> next offset stored in PostgreSQL (None: nothing stored yet); a
        # partition is here once its stored offset is loaded and sought, and only then are
        # its records taken into a batch
        self._stored: dict[int, int | None] = {}
        # partition -> next offset expected from Kafka, to skip anything older
        self._fetch_from: dict[int, int] = {}
        # assigned partitions whose stored offsets are not loaded yet (kept paused)
        self._unloaded: set[int] = set()
        # held while writing or seeking, so a rebalance waits for the write in flight
        self._lock = asyncio.Lock()
        # Writing a batch and loading offsets fail and back off separately: a rebalance that
        # loads offsets while a batch is being retried must not resume fetching.
        self._write_backoff = Backoff(settings.retry_initial_s, settings.retry_max_s, clock)
        self._load_backoff = Backoff(settings.retry_initial_s, settings.retry_max_s, clock)
        self._lag_refreshed_at = 0.0
        # the write in flight, if any (it returns the offsets it stored), and its events
        self._writing: asyncio.Task[dict[int, int]] | None = None
        self._writing_rows = 0
        self.health = Health(clock)

    @property
    def consumer(self) -> AIOKafkaConsumer:
        return self._consumer

    @property
    def writer(self) -> Writer:
        return self._writer

    # -- rebalance listener (called by aiokafka's coordinator task) ------------------------

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        """Waits for a write in flight, then forgets the revoked partitions' pending rows."""
        partitions = {tp.partition for tp in revoked if tp.topic == self._topic}
        if not partitions:
            return  # the first join of a new member: nothing to give up
        async with self._lock:
            self._batch.drop_partitions(partitions)
            for partition in partitions:
                self._stored.pop(partition, None)
                self._fetch_from.pop(partition, None)
                self._stats.forget_partition(partition)
            self._unloaded -= partitions
        self._log.info("partitions revoked: %s", sorted(partitions))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        """Pauses the new partitions until their stored offsets are loaded and sought."""
        partitions = {tp.partition for tp in assigned if tp.topic == self._topic}
        self._unloaded |= partitions
        if assigned:
            self._consumer.pause(*assigned)
        self._stats.rebalances.inc()
        self.health.assigned = len(partitions)
        self._log.info("partitions assigned: %s", sorted(partitions))

    # -- the loop ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Polls, batches and writes until `stop` is set; then writes or abandons the batch
        in hand (within the shutdown timeout). Returns without leaving the group: the caller
        stops the Kafka consumer."""
        self._consumer.subscribe([self._topic], listener=self)
        while not stop.is_set():
            if self._writing is not None and self._writing.done():
                committed = self._writing.result()
                self._writing = None
                if committed:
                    await self._commit_to_kafka(committed)
            if self._writing is None:
                if self._unloaded and not self._load_backoff.waiting:
                    await self._load_positions()
                if self._batch.is_due(self._policy) and not self._write_backoff.waiting:
                    self._writing = asyncio.create_task(self._flush(), name="write-batch")
                elif self._write_backoff.failing and self._batch.is_empty():
                    # The failing batch went with a revocation: nothing left to retry.
                    self._write_recovered()
            if self._writing is not None and self._batch.is_full(self._policy):
                # The next batch is full before the write in flight ended: wait for it
                # rather than fetch more (memory stays bounded by two batches).
                await asyncio.wait({self._writing}, timeout=POLL_TIMEOUT_MS / 1000)
                continue
            await self._poll()
            self.health.polled()
            self._refresh_lag()
        await self._finish()

    async def _poll(self) -> None:
        # While a write is being retried every partition is paused: this call then returns
        # nothing, and only keeps the group membership alive.
        room = self._batch.room(self._policy)
        fetched = await self._consumer.getmany(timeout_ms=POLL_TIMEOUT_MS, max_records=room)
        for tp, records in fetched.items():
            partition = tp.partition
            if partition not in self._stored or partition in self._unloaded:
                # Its stored offset is not loaded (yet, or again after a fenced write):
                # aiokafka may return records fetched between the assignment and the
                # listener's pause, from Kafka's committed offset rather than ours.
                continue
            start = self._fetch_from.get(partition, -1)
            before = len(self._batch.rows)
            for record in records:
                if record.offset < start:
                    continue  # fetched before a seek moved the position back
                self._batch.add(_message(partition, record))
            self._taken += len(self._batch.rows) - before
            if records:
                self._fetch_from[partition] = records[-1].offset + 1

    async def _load_positions(self) -> None:
        async with self._lock:
            partitions = set(self._unloaded)
            if not partitions:
                return
            try:
                stored = await self._writer.load_offsets(partitions)
            except (DatabaseUnavailable, RowsRejected) as exc:
                delay = self._load_backoff.failed()
                self._log.warning("cannot load stored offsets (%s); retrying in %.1fs", exc, delay)
                return
            self._load_backoff.succeeded()
            for partition, offset in stored.items():
                tp = TopicPartition(self._topic, partition)
                if offset is None:
                    await self._consumer.seek_to_beginning(tp)
                    self._fetch_from.pop(partition, None)
                else:
                    self._consumer.seek(tp, offset)
                    self._fetch_from[partition] = offset
                self._stored[partition] = offset
            self._unloaded -= partitions
            if not self._write_backoff.failing:  # else they resume once the batch is stored
                self._consumer.resume(*[TopicPartition(self._topic, p) for p in partitions])
            self._log.info("seeking to stored offsets %s", {p: stored[p] for p in sorted(stored)})

    async def _flush(self) -> dict[int, int]:
        """Writes the batch; on failure keeps it, pauses fetching and schedules a retry.
        Returns the next offsets it stored (empty if it stored nothing)."""
        async with self._lock:
            batch = self._batch
            if batch.is_empty():
                return {}
            # What is polled while this batch is written goes into the next one.
            self._batch = Batch(self._clock)
            self._writing_rows = len(batch.rows)
            started = self._clock()
            culprits = 0
            try:
                if not batch.poison_sent:
                    await self._dead_letters.send(batch.poison)
                    batch.poison_sent = True
                    self._stats.count_dead_lettered(batch.poison)
                try:
                    inserted = await self._writer.write(
                        batch.rows, batch.next_offsets, self._stored
                    )
                except RowsRejected as exc:
                    inserted, culprits = await self._isolate(batch, exc)
            except (DatabaseUnavailable, DeadLetterUnavailable, RowsRejected) as exc:
                # RowsRejected here came out of an isolation pass itself (its commit): not
                # expected, and retried like the database's trouble rather than skipped.
                batch.absorb(self._batch)  # the retry covers what came in meanwhile too
                self._batch = batch
                delay = self._write_backoff.failed()
                self._consumer.pause(*self._consumer.assignment())
                self._stats.write_retries.inc()
                self.health.write_failing = True
                self._log.warning(
                    "cannot store a batch of %d events (%s); fetching paused, retrying in %.1fs",
                    len(batch.rows),
                    exc,
                    delay,
                )
                return {}
            except Fenced as exc:
                self._log.warning("%s; dropping the batch and reloading stored offsets", exc)
                self._refetch(set(batch.next_offsets) | set(self._batch.next_offsets))
                return {}
            elapsed = self._clock() - started
            self._resize(len(batch.rows), elapsed)
            self._stored.update(batch.next_offsets)
            if self._write_backoff.failing:
                self._log.info("database is back: batch stored, fetching resumed")
                self._write_recovered()
            self._stats.record_batch(len(batch.rows) - culprits, inserted, elapsed)
            self.health.stored()
            return batch.next_offsets

    def _resize(self, rows: int, elapsed_s: float) -> None:
        """Sets the next batches' event limit from the time this write took and the rate
        events were taken in since the last one."""
        now = self._clock()
        arriving = self._taken / (now - self._sized_at) if now > self._sized_at else 0.0
        self._taken, self._sized_at = 0, now
        limit = self._sizer.written(rows, elapsed_s, arriving)
        if limit != self._policy.max_rows:
            self._log.debug(
                "batches now hold at most %d events (%d took %.2fs)", limit, rows, elapsed_s
            )
            self._policy = dataclasses.replace(self._policy, max_rows=limit)

    def _write_recovered(self) -> None:
        """Ends a write failure: resumes every partition whose offsets are loaded."""
        self._write_backoff.succeeded()
        self.health.write_failing = False
        self._consumer.resume(*(self._consumer.assignment() - self._paused_until_loaded()))

    async def _isolate(self, batch: Batch, rejected: RowsRejected) -> tuple[int, int]:
        """Stores the batch but the events the database refuses, which go to the dead-letter
        topic first. Waits for one isolation pass (bounded: see consumer/isolation.py).
        Returns (new rows stored, events dead-lettered); raises as Writer.write does."""
        self._stats.isolation_passes.inc()
        self._log.warning(
            "a batch of %d events was rejected (%s); isolating the culprits",
            len(batch.rows),
            rejected,
        )
        sent: list[Poison] = []

        async def dead_letter(rows: list[RejectedRow]) -> None:
            messages = batch.messages_of(r.index for r in rows)
            sent[:] = [
                Poison(
                    message,
                    f"rejected by the database: {row.reason}",
                    REJECTED,
                    record_of(batch.rows[row.index]),
                    row.sqlstate,
                )
                for row, message in zip(rows, messages, strict=True)
            ]
            await self._dead_letters.send(sent)

        isolated = await self._writer.write_isolating(
            batch.rows, batch.next_offsets, self._stored, dead_letter
        )
        self._stats.count_dead_lettered(sent)
        for item in sent[:10]:
            assert item.record is not None
            self._log.warning(
                "dead-lettered event %s of site %r (partition %d, offset %d): %s",
                item.record.event_id,
                item.record.site_id,
                item.message.partition,
                item.message.offset,
                item.reason,
            )
        if len(sent) > 10:
            self._log.warning(
                "... and %d more events dead-lettered from this batch", len(sent) - 10
            )
        return isolated.inserted, len(isolated.rejected)

    def _paused_until_loaded(self) -> set[TopicPartition]:
        return {TopicPartition(self._topic, p) for p in self._unloaded}

    def _refetch(self, partitions: set[int]) -> None:
        """Forgets the batch being fetched and re-reads these partitions (those of the batch
        just refused and of the one being fetched) from their stored offsets."""
        self._batch = Batch(self._clock)
        assigned = {tp.partition for tp in self._consumer.assignment()}
        owned = partitions & assigned
        self._unloaded |= owned
        if owned:
            self._consumer.pause(*[TopicPartition(self._topic, p) for p in owned])

    async def _commit_to_kafka(self, next_offsets: dict[int, int]) -> None:
        """Mirrors the stored offsets into Kafka for lag monitoring; failures are harmless.
        Runs outside the lock and bounded in time: a rebalance need not wait for it."""
        assigned = self._consumer.assignment()
        offsets = {
            tp: offset
            for partition, offset in next_offsets.items()
            if (tp := TopicPartition(self._topic, partition)) in assigned
        }
        if not offsets:
            return
        try:
            async with asyncio.timeout(KAFKA_COMMIT_TIMEOUT_S):
                await self._consumer.commit(offsets)
        except (KafkaError, TimeoutError) as exc:
            self._log.info(
                "Kafka offset commit skipped (%s); PostgreSQL holds the truth", _first_line(exc)
            )

    def _refresh_lag(self) -> None:
        """Lag per partition: the partition's end (as of the last fetch) minus the offset
        stored in PostgreSQL, i.e. events in Kafka that are not yet in /stats."""
        now = self._clock()
        if now - self._lag_refreshed_at < LAG_REFRESH_S:
            return
        self._lag_refreshed_at = now
        for tp in self._consumer.assignment():
            highwater = self._consumer.highwater(tp)
            stored = self._stored.get(tp.partition)
            if highwater is not None and stored is not None:
                self._stats.set_lag(tp.partition, max(0, highwater - stored))

    async def _finish(self) -> None:
        """On shutdown: ends the write in flight and makes one attempt to store the batch in
        hand, within half the shutdown timeout; else abandons them (their messages will be
        read again by whoever owns the partitions next)."""
        if self._writing is None and self._batch.is_empty():
            return
        try:
            async with asyncio.timeout(self._settings.shutdown_timeout_s / 2):
                if self._writing is not None:
                    committed = await self._writing
                    self._writing = None
                    if committed:
                        await self._commit_to_kafka(committed)
                if not self._batch.is_empty():
                    count = len(self._batch.rows)
                    committed = await self._flush()
                    if committed:
                        await self._commit_to_kafka(committed)
                        self._log.info("shutdown: stored the last batch of %d events", count)
        except TimeoutError:
            pass  # the write in flight was cancelled with the timeout: rolled back
        if not self._batch.is_empty() or self._writing is not None:
            self._log.warning(
                "shutdown: abandoned %d events (they will be re-read)", self._unstored_rows()
            )

    async def abandon(self) -> None:
        """Cancels the write in flight, if any, and waits for it to end (its transaction rolls
        back): for a replica ending because another member failed. What it held is re-read
        by the partitions' next owner."""
        writing, self._writing = self._writing, None
        if writing is None or writing.done():
            return
        count = self._unstored_rows()
        writing.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await writing
        self._log.warning("abandoned a write in flight: %d events will be re-read", count)

    def _unstored_rows(self) -> int:
        """The events of the batch in hand and of the write in flight, if any."""
        in_flight = self._writing_rows if self._writing is not None else 0
        return len(self._batch.rows) + in_flight


def _message(partition: int, record: Any) -> Message:
    schema = None
    for name, value in record.headers or ():
        if name == SCHEMA_HEADER:
            schema = value
            break
    return Message(partition, record.offset, record.value or b"", schema, record.key)


class Health:
    """What the health endpoint reports; updated by the loop, read by the HTTP thread."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.started_at = clock()
        self.last_poll_at = clock()
        self.last_stored_at: float | None = None
        self.assigned = 0
        self.write_failing = False

    def polled(self) -> None:
        self.last_poll_at = self._clock()

    def stored(self) -> None:
        self.last_stored_at = self._clock()

    def snapshot(self) -> dict[str, Any]:
        now = self._clock()
        return {
            "seconds_since_poll": round(now - self.last_poll_at, 3),
            "seconds_since_stored": (
                None if self.last_stored_at is None else round(now - self.last_stored_at, 3)
            ),
            "assigned_partitions": self.assigned,
            "database_writes_failing": self.write_failing,
        }


class ReplicaHealth:
    """What the health endpoint reports for a replica's members together: polling is as
    stale as the stalest member's, writes fail if any member's do."""

    def __init__(self, members: Sequence[Health]) -> None:
        self._members = members

    def snapshot(self) -> dict[str, Any]:
        parts = [member.snapshot() for member in self._members]
        stored = [p["seconds_since_stored"] for p in parts if p["seconds_since_stored"] is not None]
        return {
            "seconds_since_poll": max(p["seconds_since_poll"] for p in parts),
            "seconds_since_stored": min(stored) if stored else None,
            "assigned_partitions": sum(p["assigned_partitions"] for p in parts),
            "database_writes_failing": any(p["database_writes_failing"] for p in parts),
            "writers": len(parts),
            # Members owning a partition: fewer than both counts while the group rebalances.
            "writers_assigned": sum(1 for p in parts if p["assigned_partitions"]),
        }


REPORT_INTERVAL_S = 10.0


async def report_progress(stats: ConsumerStats, assigned: Callable[[], int]) -> None:
    """One summary log line every 10 seconds, instead of one line per batch."""
    reported = stats.written_total
    while True:
        await asyncio.sleep(REPORT_INTERVAL_S)
        written = stats.written_total
        if written != reported:
            log.info(
                "stored %d new events in the last %.0fs (%d partitions assigned)",
                written - reported,
                REPORT_INTERVAL_S,
                assigned(),
            )
        reported = written


def _first_line(exc: BaseException, limit: int = 200) -> str:
    """The error's type and the first line of its text: aiokafka's CommitFailedError explains
    rebalances in a dozen lines, logged at every rebalance."""
    message = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
    lines = message.strip().splitlines()
    text = " ".join(lines[0].split())[:limit] if lines else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
