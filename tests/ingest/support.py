"""Running the ingest app in-process against a real broker, and reading back what it sent."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, ConsumerRecord

from core.events import EventRecord, decode_records
from ingest.app import create_app
from ingest.settings import Settings


def event(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "site_id": "site-abc-123",
        "event_type": "page_view",
        "path": "/pricing",
        "user_id": "user-xyz-789",
        "timestamp": "2025-11-12T19:30:01Z",
    }
    fields.update(changes)
    return {k: v for k, v in fields.items() if v is not ...}


@contextlib.asynccontextmanager
async def api_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running (producer started), and a client talking to it."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
            yield client


async def read_messages(bootstrap: str, topic: str, count: int) -> list[ConsumerRecord[Any, Any]]:
    """Reads the messages from the start of `topic` until they hold at least `count` events
    (fails after 15 s)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"read-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    messages: list[ConsumerRecord[Any, Any]] = []
    events = 0
    try:
        for _ in range(15):
            batches = await consumer.getmany(timeout_ms=1000)
            for batch in batches.values():
                for message in batch:
                    messages.append(message)
                    events += len(decode_records(message.value, dict(message.headers)["schema"]))
            if events >= count:
                return messages
    finally:
        await consumer.stop()
    raise AssertionError(f"only {events} of {count} records arrived")


async def read_topic(bootstrap: str, topic: str, count: int) -> list[EventRecord]:
    """Reads at least `count` records from the start of `topic` (fails after 15 s)."""
    return [
        record
        for message in await read_messages(bootstrap, topic, count)
        for record in decode_records(message.value, dict(message.headers)["schema"])
    ]


def now() -> datetime:
    return datetime.now(UTC)
