"""Grouping the events of concurrent publishes into Kafka messages, one per partition.

Requests that publish in the same turn of the event loop are sent together: their events are
grouped by the partition of their site key (the key a one-message-per-event producer would
have used, so each event lands on its site's partition as before) and each group becomes one
message. The client's cost is per message, not per event, so many concurrent single-event
requests then cost about what one batch does. This module is the pure part: which events go
into which message, and which waiters each message answers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from core.events import (
    SCHEMA_EVENT_BATCH_V1,
    SCHEMA_EVENT_V1,
    SCHEMA_HEADER,
    EventRecord,
    encode_record,
    encode_records,
)

W = TypeVar("W")

SINGLE_HEADERS = [(SCHEMA_HEADER, SCHEMA_EVENT_V1)]
BATCH_HEADERS = [(SCHEMA_HEADER, SCHEMA_EVENT_BATCH_V1)]
# Below the producer's (and the broker's) 1 MiB message size limit, with room to spare.
MAX_MESSAGE_BYTES = 512 * 1024


@dataclass(frozen=True, slots=True)
class Message(Generic[W]):
    """One Kafka message: its partition, key, value and schema header, and the waiters
    (requests) that have at least one event in it, each listed once."""

    partition: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    waiters: list[W]
    events: int


def coalesce(
    pending: Sequence[tuple[W, Sequence[EventRecord]]],
    key_of: Callable[[str], bytes],
    partition_of: Callable[[bytes], int],
    max_message_bytes: int = MAX_MESSAGE_BYTES,
) -> list[Message[W]]:
    """The messages carrying `pending` (waiter, records) pairs, in order of first use of each
    partition; within a message, events keep the order in which they were queued.

    A message with one event is an `event.v1` value keyed by the event's site key, exactly
    what an uncoalesced publish sends; with more, an `event-batch.v1` array, split in halves
    until each part fits in `max_message_bytes`. The key of an array is the common key of
    its events, or none when they differ (the consumer reads the site from each event).
    """
    groups: dict[int, tuple[list[EventRecord], list[bytes], list[W]]] = {}
    for waiter, records in pending:
        for record in records:
            key = key_of(record.site_id)
            partition = partition_of(key)
            group = groups.get(partition)
            if group is None:
                group = groups[partition] = ([], [], [])
            group[0].append(record)
            group[1].append(key)
            group[2].append(waiter)
    messages: list[Message[W]] = []
    for partition, (records, keys, waiters) in groups.items():
        if len(records) == 1:
            messages.append(
                Message(partition, keys[0], encode_record(records[0]), SINGLE_HEADERS, waiters, 1)
            )
            continue
        for start, end, value in _chunks(records, 0, len(records), max_message_bytes):
            first = keys[start]
            same = all(k == first for k in keys[start + 1 : end])
            unique = list(dict.fromkeys(waiters[start:end]))
            messages.append(
                Message(
                    partition, first if same else None, value, BATCH_HEADERS, unique, end - start
                )
            )
    return messages


def _chunks(
    records: list[EventRecord], start: int, end: int, max_bytes: int
) -> list[tuple[int, int, bytes]]:
    """(start, end, event-batch.v1 value) parts of records[start:end], each within
    `max_bytes` (a single event larger than that is left alone: the producer refuses it)."""
    value = encode_records(records[start:end])
    if len(value) <= max_bytes or end - start == 1:
        return [(start, end, value)]
    middle = (start + end) // 2
    return _chunks(records, start, middle, max_bytes) + _chunks(records, middle, end, max_bytes)
