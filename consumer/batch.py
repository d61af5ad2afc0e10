"""Accumulating Kafka messages into a batch, and deciding when the batch is due.

Pure logic, with the clock injected: no aiokafka or psycopg object crosses into this module.
A batch is written when it holds `max_rows` events or `max_bytes` of message values, or when
its oldest message has waited `max_age_s`, so a quiet site's event shows within about a
second and a busy stream is written in large batches. `max_rows` itself follows the time the
last writes took (WriteTimeSizer), so that a slow database or a slow machine gets batches it
can store within a target time rather than ever longer ones. Memory is bounded by the limits:
the poll loop asks for no more messages than the batch has room for (converted from events
and bytes with the batch's average message), and aiokafka's fetch buffer is bounded by
fetch_max_bytes.
"""

from __future__ import annotations

import bisect
import datetime as dt
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, overload

import msgspec

from core.events import CONTEXT_FIELDS, EventRecord, decode_records

Clock = Callable[[], float]

# Messages asked for by the first poll of an empty batch, before it knows how many events
# and bytes a message holds.
PROBE_MESSAGES = 100


@dataclass(frozen=True, slots=True)
class Message:
    """One Kafka message as the consumer sees it (the adapter copies it out of aiokafka)."""

    partition: int
    offset: int
    value: bytes
    schema: bytes | None
    key: bytes | None = None


# Why something went to the dead-letter topic (its `error` header).
UNDECODABLE = "undecodable"  # the message could not be decoded: it goes whole
REJECTED = "rejected"  # the database refused one event of it: that event goes alone


@dataclass(frozen=True, slots=True)
class Poison:
    """What goes to the dead-letter topic, with the reason: a whole message that cannot be
    decoded (`record` None), or one event of a message that the database refused."""

    message: Message
    reason: str
    error: str = UNDECODABLE
    record: EventRecord | None = None
    sqlstate: str | None = None


# The row layout of the staging table, in COPY order: the event, then its context
# (core/events.py, CONTEXT_FIELDS).
Text = str | None
Row = tuple[
    dt.date, uuid.UUID, str, str, str, str, dt.datetime, dt.datetime, bool,
    Text, Text, Text, Text, Text, Text, Text, Text, Text, Text, Text, dict[str, str] | None,
]  # fmt: skip


# The most distinct values a batch's pool keeps: a batch of repeated values needs a few
# thousand; past this (unique values, as hostile input would send) the rows keep their own.
TEXT_POOL_ENTRIES = 65_536


class TextPool(dict[str | None, str | None]):
    """One copy of each text value a batch repeats (its sites, paths, browsers, countries,
    visitors...): decoding makes a new string of every field of every event, and rows that
    share them take about half the memory, which is what bounds the batch size
    (MAX_BATCH_ROWS). One pool per batch, dropped with it, and at most TEXT_POOL_ENTRIES
    values, so unique values cost it no more than a bounded table."""

    if TYPE_CHECKING:  # `pool[text]` has the type of `text` (no Python-level override)

        @overload
        def __getitem__(self, text: str, /) -> str: ...
        @overload
        def __getitem__(self, text: None, /) -> None: ...
        def __getitem__(self, text: str | None, /) -> str | None: ...

    def __missing__(self, text: str | None) -> str | None:
        if len(self) < TEXT_POOL_ENTRIES:
            self[text] = text
        return text


def to_row(record: EventRecord, texts: TextPool | None = None) -> Row:
    """The staging row of an event; with `texts`, its text values are the pool's copies."""
    t = TextPool() if texts is None else texts
    return (
        record.timestamp.date(),  # the timestamp is UTC, so this is the UTC day
        record.event_id,
        t[record.site_id],
        t[record.event_type],
        t[record.path],
        t[record.user_id],
        record.timestamp,
        record.received_at,
        record.emitter_id,
        t[record.browser],
        t[record.os],
        t[record.device],
        t[record.country],
        t[record.referrer_host],
        t[record.referrer_source],
        t[record.utm_source],
        t[record.utm_medium],
        t[record.utm_campaign],
        t[record.utm_content],
        t[record.utm_term],
        record.props,
    )


def record_of(row: Row) -> EventRecord:
    """The event a row was made from (to_row's inverse): what is dead-lettered for it."""
    _day, event_id, site_id, event_type, path, user_id, timestamp, received_at, emitter_id = row[:9]
    context: dict[str, Any] = dict(zip(CONTEXT_FIELDS, row[9:], strict=True))
    return EventRecord(
        event_id=event_id,
        site_id=site_id,
        event_type=event_type,
        path=path,
        user_id=user_id,
        timestamp=timestamp,
        received_at=received_at,
        emitter_id=emitter_id,
        **context,
    )


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    max_rows: int
    max_bytes: int
    max_age_s: float


# The fewest events a batch sized by write time may be cut at: below this, each batch's fixed
# cost (a statement of a dozen upserts, a commit) would outweigh the events it stores.
MIN_ROWS_BY_TIME = 1_000
# Batches are sized by write time only while they store events this much faster than events
# arrive: a limit that only just keeps up would let any slow write start a backlog.
HEADROOM = 1.5


@dataclass(slots=True)
class WriteTimeSizer:
    """How many events a batch may hold so that writing it takes about `target_s`.

    An event waits for the write in flight, then for its own, so the time a write takes is
    what freshness is made of. After each write: one that took longer than the target cuts the
    limit to the events that would have fitted at the rate just measured; one within the
    target, of a batch that the limit cut (it was full), raises the limit to what would fit at
    that rate; a batch cut by its age leaves it. The rate of a write includes its fixed cost, so
    the estimate errs small, and a full batch raises the limit by the ratio of the target to
    that fixed cost: a few batches from the floor to the ceiling.

    All of this holds only while the replica keeps up: when events are taken in faster than
    the last write stored them, with HEADROOM to spare (`arriving_per_s`, the events taken into
    batches per second since the last write, is also how fast a backlog is read), the limit
    doubles instead. Larger batches store more events per second (each has a fixed cost), so
    when the stream or a backlog outruns what batches of the target time store, smaller ones
    would only grow the backlog: a replica that cannot keep up writes batches as large as
    `max_rows`, as without a target. Never above `max_rows`, never below MIN_ROWS_BY_TIME (or
    `max_rows` if lower); `target_s` 0 keeps it at `max_rows`.
    """

    max_rows: int
    target_s: float
    rows: int = 0

    def __post_init__(self) -> None:
        self.rows = self.max_rows

    def written(self, rows: int, elapsed_s: float, arriving_per_s: float) -> int:
        """Takes one write's events and duration, and the rate events are taken in at;
        returns the new limit."""
        if self.target_s <= 0 or rows <= 0 or elapsed_s <= 0:
            return self.rows
        fits = int(rows * self.target_s / elapsed_s)
        if arriving_per_s * HEADROOM > rows / elapsed_s:
            self.rows *= 2  # behind: see above
        elif elapsed_s > self.target_s:
            self.rows = min(self.rows, fits)
        elif rows >= self.rows:
            self.rows = max(self.rows, fits)
        self.rows = max(min(MIN_ROWS_BY_TIME, self.max_rows), min(self.rows, self.max_rows))
        return self.rows


@dataclass(slots=True)
class Batch:
    """Decoded rows and poison messages, with the offset to store for each partition."""

    clock: Clock
    rows: list[Row] = field(default_factory=list)
    poison: list[Poison] = field(default_factory=list)
    # partition -> offset of the next message after those in the batch
    next_offsets: dict[int, int] = field(default_factory=dict)
    # per message: (message, first row, end row), so that a batch the database rejects can
    # be replayed message by message to find the culprit
    spans: list[tuple[Message, int, int]] = field(default_factory=list)
    poison_sent: bool = False
    size_bytes: int = 0
    started_at: float | None = None
    texts: TextPool = field(default_factory=TextPool)

    def add(self, message: Message) -> None:
        """Decodes the message's events into rows; an undecodable message becomes poison."""
        if self.started_at is None:
            self.started_at = self.clock()
        start = len(self.rows)
        try:
            records = decode_records(message.value, message.schema)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self.poison.append(Poison(message, f"cannot decode the message: {exc}"))
        else:
            self.rows.extend(to_row(r, self.texts) for r in records)
        self.spans.append((message, start, len(self.rows)))
        self.next_offsets[message.partition] = message.offset + 1
        self.size_bytes += len(message.value)

    def __len__(self) -> int:
        return len(self.spans)

    def messages_of(self, rows: Iterable[int]) -> list[Message]:
        """The message each row (by index) was decoded from."""
        ends = [end for _, _, end in self.spans]
        return [self.spans[bisect.bisect_right(ends, row)][0] for row in rows]

    def is_empty(self) -> bool:
        return not self.spans

    def room(self, policy: BatchPolicy) -> int:
        """How many more messages may be fetched before the batch is full (at least 1).

        A message may carry many events (event-batch.v1) and any number of bytes, so the
        limits are converted into messages with the batch's own averages; an empty batch
        asks for a first `PROBE_MESSAGES` to learn them.
        """
        if not self.spans:
            return max(1, min(policy.max_rows, PROBE_MESSAGES))
        messages = len(self.spans)
        rows_per_message = max(1.0, len(self.rows) / messages)
        bytes_per_message = max(1.0, self.size_bytes / messages)
        by_rows = (policy.max_rows - len(self.rows)) / rows_per_message
        by_bytes = (policy.max_bytes - self.size_bytes) / bytes_per_message
        return max(1, int(min(by_rows, by_bytes)))

    def is_full(self, policy: BatchPolicy) -> bool:
        return len(self.rows) >= policy.max_rows or self.size_bytes >= policy.max_bytes

    def absorb(self, later: Batch) -> None:
        """Appends a later batch to this one (used when this one failed to be written while
        the later one was being fetched). Poison already sent is not sent again."""
        shift = len(self.rows)
        self.spans.extend(
            (message, start + shift, end + shift) for message, start, end in later.spans
        )
        self.rows.extend(later.rows)
        self.poison = ([] if self.poison_sent else self.poison) + later.poison
        self.poison_sent = False
        self.next_offsets.update(later.next_offsets)
        self.size_bytes += later.size_bytes
        if self.started_at is None:
            self.started_at = later.started_at

    def is_due(self, policy: BatchPolicy) -> bool:
        if self.started_at is None:
            return False
        return (
            len(self.rows) >= policy.max_rows
            or self.size_bytes >= policy.max_bytes
            or self.clock() - self.started_at >= policy.max_age_s
        )

    def drop_partitions(self, partitions: set[int]) -> None:
        """Forgets everything of these partitions (they were revoked); keeps the rest."""
        if not partitions.intersection(self.next_offsets):
            return
        kept = Batch(self.clock)
        kept.started_at = self.started_at
        for message, start, end in self.spans:
            if message.partition in partitions:
                continue
            kept.spans.append((message, len(kept.rows), len(kept.rows) + end - start))
            kept.rows.extend(self.rows[start:end])
            kept.next_offsets[message.partition] = message.offset + 1
        kept.poison = [p for p in self.poison if p.message.partition not in partitions]
        kept.size_bytes = self.size_bytes  # an overestimate is harmless: it only flushes sooner
        self.rows, self.poison, self.next_offsets = kept.rows, kept.poison, kept.next_offsets
        self.spans, self.size_bytes = kept.spans, kept.size_bytes
        if not self.spans:
            self.started_at = None
