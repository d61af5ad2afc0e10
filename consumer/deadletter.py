"""The dead-letter topic: where messages that cannot be stored go, with the reason attached.

A poison message is produced here (acks=all) before the batch that skips it is committed to
PostgreSQL, so it is never silently dropped. A crash between the two may send it twice;
the dead-letter topic is at-least-once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from consumer.batch import Poison
from ingest.events import SCHEMA_HEADER


class DeadLetterUnavailable(Exception):
    """The dead-letter topic did not acknowledge: hold the batch and retry."""


class DeadLetters:
    def __init__(self, bootstrap_servers: str, topic: str, source_topic: str) -> None:
        self._topic = topic
        self._source_topic = source_topic
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers,
            acks="all",
            enable_idempotence=True,
            request_timeout_ms=10_000,
            client_id="analytics-consumer-dlq",
        )

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def send(self, poison: Sequence[Poison]) -> None:
        """Waits until the broker acknowledged every poison message, or raises."""
        if not poison:
            return
        try:
            futures = []
            for item in poison:
                message = item.message
                headers = [
                    ("reason", item.reason.encode()[:1000]),
                    ("source_topic", self._source_topic.encode()),
                    ("source_partition", str(message.partition).encode()),
                    ("source_offset", str(message.offset).encode()),
                ]
                if message.schema is not None:
                    headers.append((SCHEMA_HEADER, message.schema))
                futures.append(
                    await self._producer.send(
                        self._topic, message.value, key=message.key, headers=headers
                    )
                )
            await asyncio.gather(*futures)
        except KafkaError as exc:
            raise DeadLetterUnavailable(f"dead-letter topic unavailable: {exc!r}") from exc
