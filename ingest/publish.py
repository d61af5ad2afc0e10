"""Publishing accepted events to Kafka: the only module of the API that speaks to aiokafka.

A publish returns only once the broker has acknowledged the record with acks=all (the
producer is idempotent), so a 202 means the event is durably in Kafka. Throughput comes from
many concurrent requests sharing produce requests: aiokafka batches whatever accumulates for a
partition while that partition's previous request is in flight.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from ingest.events import (
    SCHEMA_EVENT_BATCH_V1,
    SCHEMA_EVENT_V1,
    SCHEMA_HEADER,
    EventRecord,
    encode_record,
    encode_records,
)
from ingest.settings import Settings

log = logging.getLogger(__name__)


class PublishUnavailable(Exception):
    """Kafka did not acknowledge in time, or cannot be reached: retriable by the emitter."""


class PublishSaturated(PublishUnavailable):
    """Too many events already wait for acks: shed this request instead of queueing it."""


class PublishObserver:
    """Hook for metrics: told how long each acknowledged publish took."""

    def acknowledged(self, seconds: float) -> None:
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
    """Sends records to the events topic, keyed by site, and waits for the broker's ack.

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
        observer: PublishObserver | None = None,
        hot_sites: dict[str, int] | None = None,
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._timeout_s = timeout_s
        self._max_in_flight = max_in_flight_events
        self._site_arrays = site_arrays
        self._observer = observer or PublishObserver()
        self._keys = SiteKeys(hot_sites or {})
        self._in_flight = 0
        self._broker_down = False
        self._probing = False

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
        """Connects to the broker; raises KafkaError (with the address) if it cannot."""
        await self._producer.start()

    async def stop(self) -> None:
        """Flushes what is buffered (waiting for acks) and closes the connections."""
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

        One message per record (schema event.v1), or with `site_arrays` and more than one
        record, one message per site holding an array (event-batch.v1): same key, same
        partition, far less client CPU. Raises PublishSaturated when too many events already
        wait for acks, PublishUnavailable if the broker does not acknowledge within the
        publish timeout (or is known to be down). A record that timed out may still be
        written later: emitters that retry should send their own `event_id`, which the
        consumer deduplicates on.
        """
        count = len(records)
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
            async with asyncio.timeout(self._timeout_s):
                futures = [
                    await self._producer.send(self._topic, value, key=key, headers=headers)
                    for key, value, headers in self._messages(records)
                ]
                if len(futures) == 1:
                    await futures[0]
                    return
                results = await asyncio.gather(*futures, return_exceptions=True)
            failures = [r for r in results if isinstance(r, BaseException)]
            if failures:
                raise failures[0]
        except TimeoutError:
            raise PublishUnavailable(
                f"Kafka did not acknowledge within {self._timeout_s:g}s"
            ) from None
        except KafkaError as exc:
            raise PublishUnavailable(f"Kafka is unavailable ({type(exc).__name__})") from exc

    def _messages(
        self, records: Sequence[EventRecord]
    ) -> Iterator[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
        keys = self._keys
        if not self._site_arrays or len(records) == 1:
            for record in records:
                yield keys.key(record.site_id), encode_record(record), _SINGLE_HEADERS
            return
        by_key: dict[bytes, list[EventRecord]] = {}
        for record in records:
            by_key.setdefault(keys.key(record.site_id), []).append(record)
        for key, key_records in by_key.items():
            for value in _encode_chunks(key_records):
                yield key, value, _BATCH_HEADERS


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


_SINGLE_HEADERS = [(SCHEMA_HEADER, SCHEMA_EVENT_V1)]
_BATCH_HEADERS = [(SCHEMA_HEADER, SCHEMA_EVENT_BATCH_V1)]
# Below the producer's (and the broker's) 1 MiB message size limit, with room to spare.
MAX_MESSAGE_BYTES = 512 * 1024


def _encode_chunks(records: list[EventRecord]) -> Iterator[bytes]:
    """One event-batch.v1 value, or several when it would exceed MAX_MESSAGE_BYTES."""
    value = encode_records(records)
    if len(value) <= MAX_MESSAGE_BYTES or len(records) == 1:
        yield value
        return
    half = len(records) // 2
    yield from _encode_chunks(records[:half])
    yield from _encode_chunks(records[half:])
