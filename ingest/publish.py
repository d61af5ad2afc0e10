"""Publishing accepted events to Kafka: the only module of the API that speaks to aiokafka.

A publish returns only once the broker has acknowledged the record with acks=all (the
producer is idempotent), so a 202 means the event is durably in Kafka. Throughput comes from
many concurrent requests sharing messages and produce requests: with coalescing on (the
default), the events that requests publish in one turn of the event loop are sent on the next
turn as one message per partition (ingest/coalesce.py), and each request waits for the acks of
the messages that hold its events; aiokafka then batches whatever accumulates for a partition
while that partition's previous produce request is in flight.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from core.events import EventRecord, encode_record
from ingest.coalesce import SINGLE_HEADERS, coalesce
from ingest.settings import Settings

log = logging.getLogger(__name__)


class PublishUnavailable(Exception):
    """Kafka did not acknowledge in time, or cannot be reached: retriable by the emitter."""


class PublishSaturated(PublishUnavailable):
    """Too many events already wait for acks: shed this request instead of queueing it."""


class PublishObserver:
    """Hook for metrics: told how long each acknowledged publish took, and how many Kafka
    messages were handed to the producer."""

    def acknowledged(self, seconds: float) -> None:
        pass

    def messages_sent(self, count: int) -> None:
        pass


class CachedPartitioner:
    """Kafka's default (murmur2) partitioner, memoized per key: hashing in pure Python costs
    more than the rest of a send, and the set of sites is small next to the event count."""

    _MAX_ENTRIES = 100_000

    def __init__(self) -> None:
        self._default = DefaultPartitioner()
        self._cache: dict[tuple[bytes, int], int] = {}

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            return int(self._default(key, all_partitions, available))
        cache_key = (key, len(all_partitions))
        partition = self._cache.get(cache_key)
        if partition is None:
            if len(self._cache) >= self._MAX_ENTRIES:
                self._cache.clear()
            partition = int(self._default(key, all_partitions, available))
            self._cache[cache_key] = partition
        return partition


def make_producer(settings: Settings, **overrides: Any) -> AIOKafkaProducer:
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": settings.producer_linger_ms,
        "max_batch_size": settings.producer_max_batch_bytes,
        "compression_type": None
        if settings.producer_compression in ("", "none")
        else settings.producer_compression,
        "request_timeout_ms": int(settings.publish_timeout_s * 1000),
        "partitioner": CachedPartitioner(),
        "client_id": "analytics-ingest",
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


class Publisher:
    """Sends records to the events topic, on their site's partition, and waits for the
    broker's ack.

    How records become messages:
    - `site_arrays` and `coalesce` (the API's default): every publish queues its records, and
      on the next turn of the event loop one task sends everything queued as one message per
      partition (an `event.v1` value for a lone event, else an `event-batch.v1` array); each
      publish waits for the acks of the messages that hold its records. Many concurrent
      single-event requests then cost the producer a handful of messages, not one each.
    - `site_arrays` alone: the same grouping, but each publish sends its own messages.
    - neither: one `event.v1` message per record, keyed by its site key.
    The partition is the one Kafka's default partitioner gives the site key (`SiteKeys`:
    the site id, or a sub-key of a hot site), so a site's events stay on its partition.

    Two guards keep a request from hanging or piling up work the broker cannot take:
    - at most `max_in_flight_events` events wait for acks at once; beyond that a publish
      fails at once with PublishSaturated (the API answers 503, code `overloaded`);
    - after a failed publish the broker is presumed down: one publish at a time goes through
      as a probe (bounded by the publish timeout) while the others fail at once with
      PublishUnavailable; the first probe that is acknowledged closes the circuit again.
    """

    def __init__(
        self,
        producer: AIOKafkaProducer,
        topic: str,
        timeout_s: float,
        *,
        max_in_flight_events: int = 20_000,
        site_arrays: bool = False,
        coalesce: bool = False,
        observer: PublishObserver | None = None,
        hot_sites: dict[str, int] | None = None,
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._timeout_s = timeout_s
        self._max_in_flight = max_in_flight_events
        self._site_arrays = site_arrays
        self._coalesce = site_arrays and coalesce
        self._observer = observer or PublishObserver()
        self._keys = SiteKeys(hot_sites or {})
        self._partitioner = CachedPartitioner()
        self._in_flight = 0
        self._broker_down = False
        self._probing = False
        self._queued: list[tuple[_Waiter, Sequence[EventRecord]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._turn: list[_Waiter] | None = None  # publishes queued in this loop turn

    @property
    def in_flight_events(self) -> int:
        return self._in_flight

    @property
    def saturated(self) -> bool:
        return self._in_flight >= self._max_in_flight

    @property
    def broker_down(self) -> bool:
        return self._broker_down

    async def start(self) -> None:
        """Connects to the broker and loads the topic's partitions; raises KafkaError (with
        the address) if it cannot."""
        await self._producer.start()
        await self._producer.partitions_for(self._topic)

    async def stop(self) -> None:
        """Sends what is queued, flushes what is buffered (waiting for acks) and closes the
        connections."""
        if self._flusher is not None:
            await self._flusher
        await self._producer.stop()

    async def broker_reachable(self, timeout_s: float) -> bool:
        """Whether a metadata request to the cluster is answered within `timeout_s`."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._producer.client.fetch_all_metadata()
        except (TimeoutError, KafkaError, OSError):
            return False
        return True

    async def publish(self, records: Sequence[EventRecord]) -> None:
        """Waits until the broker acknowledged every record (acks=all).

        Raises PublishSaturated when too many events already wait for acks,
        PublishUnavailable if the broker does not acknowledge within the publish timeout (or
        is known to be down, or fails a message holding one of the records). A record that
        timed out may still be written later: emitters that retry should send their own
        `event_id`, which the consumer deduplicates on.
        """
        count = len(records)
        if not count:
            return
        if self._in_flight + count > self._max_in_flight and self._in_flight > 0:
            raise PublishSaturated(
                f"{self._in_flight} events are already waiting for Kafka's acknowledgement"
            )
        probe = False
        if self._broker_down:
            if self._probing:
                raise PublishUnavailable("Kafka is unreachable")
            self._probing = probe = True
        self._in_flight += count
        started = time.perf_counter()
        try:
            await self._send_all(records)
        except PublishUnavailable:
            if probe or not self._broker_down:
                if not self._broker_down:
                    log.warning("Kafka did not acknowledge; answering 503 until it does")
                self._broker_down = True
            raise
        else:
            if self._broker_down:
                log.warning("Kafka acknowledges again; accepting events")
            self._broker_down = False
            self._observer.acknowledged(time.perf_counter() - started)
        finally:
            self._in_flight -= count
            if probe:
                self._probing = False

    async def _send_all(self, records: Sequence[EventRecord]) -> None:
        try:
            if self._coalesce:
                await self._queue(records)
                return
            async with asyncio.timeout(self._timeout_s):
                if not self._site_arrays:
                    await self._send_each(records)
                    return
                waiter = _Waiter(asyncio.get_running_loop().create_future())
                await self._send_grouped([(waiter, records)])
                await waiter.acked
        except TimeoutError:
            raise self._timed_out() from None
        except KafkaError as exc:
            raise PublishUnavailable(f"Kafka is unavailable ({type(exc).__name__})") from exc

    def _timed_out(self) -> PublishUnavailable:
        return PublishUnavailable(f"Kafka did not acknowledge within {self._timeout_s:g}s")

    def _queue(self, records: Sequence[EventRecord]) -> asyncio.Future[None]:
        """Queues `records` for the next flush; the future is done once their messages are
        acknowledged, or failed (KafkaError, or PublishUnavailable when the publish timeout
        passes first). The publishes queued in one turn share one deadline timer: cheaper
        than a timeout per request, and they started within the same turn."""
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop.create_future())
        if self._flusher is None:
            self._flusher = loop.create_task(self._flush(), name="ingest-publish-flush")
        if self._turn is None:
            self._turn = []
            loop.call_at(loop.time() + self._timeout_s, self._expire, self._turn)
            loop.call_soon(self._end_turn)
        self._turn.append(waiter)
        self._queued.append((waiter, records))
        return waiter.acked

    def _end_turn(self) -> None:
        self._turn = None

    def _expire(self, waiters: list[_Waiter]) -> None:
        """The publish timeout has passed for the publishes of one turn: those still waiting
        fail (they may still be written later; see `publish`)."""
        error = self._timed_out()
        for waiter in waiters:
            waiter.fail(error)

    async def _send_each(self, records: Sequence[EventRecord]) -> None:
        """One event.v1 message per record, keyed by its site key; waits for every ack."""
        keys = self._keys
        futures = [
            await self._producer.send(
                self._topic, encode_record(record), key=keys.key(record.site_id),
                headers=SINGLE_HEADERS,
            )
            for record in records
        ]  # fmt: skip
        self._observer.messages_sent(len(futures))
        if len(futures) == 1:
            await futures[0]
            return
        results = await asyncio.gather(*futures, return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise failures[0]

    async def _flush(self) -> None:
        """Sends what publishes queued during the last turn of the event loop (and, while a
        send waits for room in the producer's buffer, what they queue meanwhile). Every
        error reaches the waiters of the messages it concerns; none ends this task early."""
        try:
            while self._queued:
                queued, self._queued = self._queued, []
                await self._send_grouped(queued)
        finally:
            self._flusher = None

    async def _send_grouped(self, queued: list[tuple[_Waiter, Sequence[EventRecord]]]) -> None:
        """Hands one message per partition (see ingest/coalesce.py) to the producer; each
        waiter's future is settled once all of its messages are acknowledged, or fails with
        the first error among them. Returns once the messages are in the producer's buffer."""
        try:
            partitions = sorted(await self._producer.partitions_for(self._topic))
            partitioner = self._partitioner
            messages = coalesce(
                queued, self._keys.key, lambda key: partitioner(key, partitions, partitions)
            )
        except Exception as exc:  # metadata unavailable, or a bug: tell every waiter
            for waiter, _ in queued:
                waiter.fail(exc)
            return
        # Count every waiter's messages before sending any: an early ack must not settle a
        # waiter whose other messages are still to be sent.
        for message in messages:
            for waiter in message.waiters:
                waiter.messages += 1
        self._observer.messages_sent(len(messages))
        for message in messages:
            try:
                sent = await self._producer.send(
                    self._topic,
                    message.value,
                    key=message.key,
                    partition=message.partition,
                    headers=message.headers,
                )
            except Exception as exc:  # buffer full past the timeout, producer closed, ...
                for waiter in message.waiters:
                    waiter.fail(exc)
                continue
            sent.add_done_callback(functools.partial(_settle, message.waiters))


class _Waiter:
    """A publish waiting for the acks of the messages that hold its records."""

    __slots__ = ("acked", "messages")

    def __init__(self, acked: asyncio.Future[None]) -> None:
        self.acked = acked
        self.messages = 0  # messages not yet acknowledged

    def fail(self, exc: BaseException) -> None:
        if not self.acked.done():  # done: timed out, cancelled, or failed already
            self.acked.set_exception(exc)


def _settle(waiters: list[_Waiter], sent: asyncio.Future[Any]) -> None:
    """Done-callback of a message's future: one ack fewer to wait for, or a failure."""
    if sent.cancelled():
        error: BaseException | None = KafkaError("the message's send was cancelled")
    else:
        error = sent.exception()
    for waiter in waiters:
        if error is not None:
            waiter.fail(error)
            continue
        waiter.messages -= 1
        if waiter.messages == 0 and not waiter.acked.done():
            waiter.acked.set_result(None)


class SiteKeys:
    """The Kafka key of a site's events: the site id, so a site keeps one partition and its
    order; or, for a site configured as hot with N sub-keys, `site#0` .. `site#N-1` in turn,
    which spreads it over up to N partitions and gives up its per-site order (the consumer
    reads the site from the event, not from the key, and rollups do not depend on order)."""

    def __init__(self, hot_sites: dict[str, int]) -> None:
        self._spread = {site: n for site, n in hot_sites.items() if n > 1}
        self._turn = 0

    def key(self, site_id: str) -> bytes:
        spread = self._spread.get(site_id) if self._spread else None
        if spread is None:
            return site_id.encode()
        self._turn += 1
        return f"{site_id}#{self._turn % spread}".encode()
