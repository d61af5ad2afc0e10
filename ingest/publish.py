"""Publishing accepted events to Kafka: the only module of the API that speaks to aiokafka.

A publish returns only once the broker has acknowledged the record with acks=all (the
producer is idempotent), so a 202 means the event is durably in Kafka. Throughput comes from
many concurrent requests sharing produce requests: aiokafka batches whatever accumulates for a
partition while that partition's previous request is in flight.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from ingest.events import SCHEMA_EVENT_V1, SCHEMA_HEADER, EventRecord, encode_record
from ingest.settings import Settings

log = logging.getLogger(__name__)


class PublishUnavailable(Exception):
    """Kafka did not acknowledge in time, or cannot be reached: retriable by the emitter."""


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
        "compression_type": settings.producer_compression or None,
        "request_timeout_ms": int(settings.publish_timeout_s * 1000),
        "partitioner": CachedPartitioner(),
        "client_id": "analytics-ingest",
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


class Publisher:
    """Sends records to the events topic, keyed by site, and waits for the broker's ack."""

    def __init__(self, producer: AIOKafkaProducer, topic: str, timeout_s: float) -> None:
        self._producer = producer
        self._topic = topic
        self._timeout_s = timeout_s

    async def start(self) -> None:
        """Connects to the broker; raises KafkaError (with the address) if it cannot."""
        await self._producer.start()

    async def stop(self) -> None:
        """Flushes what is buffered (waiting for acks) and closes the connections."""
        await self._producer.stop()

    async def publish(self, records: Sequence[EventRecord]) -> None:
        """Waits until the broker acknowledged every record (acks=all).

        Raises PublishUnavailable if that does not happen within the publish timeout. A
        record that timed out may still be written later: emitters that retry should send
        their own `event_id`, which the consumer deduplicates on.
        """
        headers = [(SCHEMA_HEADER, SCHEMA_EVENT_V1)]
        try:
            async with asyncio.timeout(self._timeout_s):
                futures = [
                    await self._producer.send(
                        self._topic,
                        encode_record(record),
                        key=record.site_id.encode(),
                        headers=headers,
                    )
                    for record in records
                ]
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
