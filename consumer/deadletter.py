"""The dead-letter topic: what cannot be stored goes there, with the reason attached; and
`python -m consumer.deadletter`, the operator's tool to list it and replay entries.

What a dead letter is (the reconcile command and this tool read exactly this):
- an event the database refused: one message per event, the event alone encoded as
  `event.v1` (header `schema`), key = its site_id;
- a message that cannot be decoded: the message whole, value, key and `schema` as received;
- headers, all UTF-8: `reason` (at most 1000 bytes), `error` (`undecodable` or `rejected`),
  `sqlstate` (when the database gave one), `site_id` and `event_id` (when known),
  `source_topic`, `source_partition`, `source_offset`, `dead_lettered_at` (ISO 8601, UTC);
- `cut_from_bytes`, only on an entry whose value was cut: the value's size as received.

Size never stops a dead letter: a value over MAX_VALUE_BYTES is cut to its first
MAX_VALUE_BYTES (the key and `schema` are capped too), and an entry the broker still refuses
for good (the topic's max.message.bytes set lower, say) goes again as its headers alone. A cut
entry cannot be replayed: the original stays at its source offset in the events topic until
that topic's retention.

A dead letter is produced (acks=all, awaited) before the database commit that skips it, so it
is never silently dropped. A crash or a lost database between the two sends it again on the
retry: the dead-letter topic is at-least-once, and readers must expect duplicates (the same
source partition, offset and event_id).

Usage:
    python -m consumer.deadletter list [--site SITE] [--limit N] [--json]
    python -m consumer.deadletter replay (--offset [P:]N ... | --all) [--site SITE] [--dry-run]

`replay` re-publishes entries to the events topic as the API does (same encoding, key =
site_id, `schema` header); once the cause is fixed the consumer stores them, and events
already stored are dropped as duplicates by their event_id.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    CorruptRecordException,
    InvalidTimestampError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    UnknownError,
)

from consumer.batch import REJECTED, UNDECODABLE, Poison
from consumer.settings import ConsumerSettings, settings_for_command
from consumer.terminal import escaped
from core.events import SCHEMA_EVENT_V1, SCHEMA_HEADER, encode_record

# Header names of a dead letter (besides SCHEMA_HEADER), and the values of ERROR_HEADER.
REASON_HEADER = "reason"
ERROR_HEADER = "error"
SQLSTATE_HEADER = "sqlstate"
SITE_ID_HEADER = "site_id"
EVENT_ID_HEADER = "event_id"
SOURCE_TOPIC_HEADER = "source_topic"
SOURCE_PARTITION_HEADER = "source_partition"
SOURCE_OFFSET_HEADER = "source_offset"
DEAD_LETTERED_AT_HEADER = "dead_lettered_at"
CUT_FROM_HEADER = "cut_from_bytes"
ERROR_UNDECODABLE = UNDECODABLE
ERROR_REJECTED = REJECTED
MAX_REASON_BYTES = 1000
# The largest value a dead letter carries. Above the largest message the API produces
# (ingest.coalesce.MAX_MESSAGE_BYTES, 512 KiB), so whatever it produced goes whole and can be
# replayed; and with the key, headers and batch overhead well under the producer's
# max_request_size and the broker's message.max.bytes (1 MiB each by default).
MAX_VALUE_BYTES = 768 * 1024
MAX_KEY_BYTES = 1024
MAX_SCHEMA_BYTES = 64
DLQ_MAX_REQUEST_BYTES = 1024 * 1024

# What the broker (or the producer, before sending) refuses whatever the number of attempts:
# the entry itself is at fault, so retrying it would hold the batch forever. UnknownError is
# what the client makes of codes it does not know, such as INVALID_RECORD (87).
PERMANENT_ERRORS: tuple[type[KafkaError], ...] = (
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    CorruptRecordException,
    InvalidTimestampError,
    UnknownError,
)

# How long the tool waits for the next records before it gives up reading to the end.
READ_STALL_S = 30.0

log = logging.getLogger(__name__)


class DeadLetterUnavailable(Exception):
    """The dead-letter topic did not acknowledge: hold the batch and retry."""


DeadLetter = tuple[bytes | None, bytes, list[tuple[str, bytes]]]


def cut_utf8(text: str, max_bytes: int) -> bytes:
    """`text` in UTF-8, cut to at most `max_bytes` on a character boundary."""
    return text.encode()[:max_bytes].decode("utf-8", "ignore").encode()


def dead_letter(item: Poison, source_topic: str, now: dt.datetime) -> DeadLetter:
    """The key, value and headers of the dead letter for `item`, its value cut to
    MAX_VALUE_BYTES (header CUT_FROM_HEADER then says its size as received)."""
    message = item.message
    headers = [
        (REASON_HEADER, cut_utf8(item.reason, MAX_REASON_BYTES)),
        (ERROR_HEADER, item.error.encode()),
    ]
    if item.sqlstate:
        headers.append((SQLSTATE_HEADER, item.sqlstate.encode()))
    key: bytes | None
    if item.record is not None:
        site_id = item.record.site_id.encode()
        key, value = site_id, encode_record(item.record)
        headers += [
            (SCHEMA_HEADER, SCHEMA_EVENT_V1),
            (SITE_ID_HEADER, site_id),
            (EVENT_ID_HEADER, str(item.record.event_id).encode()),
        ]
    else:
        key, value = message.key, message.value
        if message.schema is not None:
            headers.append((SCHEMA_HEADER, message.schema[:MAX_SCHEMA_BYTES]))
        if key is not None and len(key) > MAX_KEY_BYTES:
            key = key[:MAX_KEY_BYTES]  # longer than any site_id: not one, and not a header
        elif key is not None and _is_utf8(key):  # the API keys every message by its site_id
            headers.append((SITE_ID_HEADER, key))
    headers += [
        (SOURCE_TOPIC_HEADER, source_topic.encode()),
        (SOURCE_PARTITION_HEADER, str(message.partition).encode()),
        (SOURCE_OFFSET_HEADER, str(message.offset).encode()),
        (DEAD_LETTERED_AT_HEADER, now.astimezone(dt.UTC).isoformat().encode()),
    ]
    if len(value) > MAX_VALUE_BYTES:
        headers.append((CUT_FROM_HEADER, str(len(value)).encode()))
        value = value[:MAX_VALUE_BYTES]
    return key, value, headers


def headers_only(letter: DeadLetter) -> DeadLetter:
    """`letter` without its value, for a broker that refuses it whole: the reason and the
    source offset still reach the topic (CUT_FROM_HEADER says what the value was)."""
    key, value, headers = letter
    if not any(name == CUT_FROM_HEADER for name, _ in headers):
        headers = [*headers, (CUT_FROM_HEADER, str(len(value)).encode())]
    return key, b"", headers


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


class DeadLetters:
    def __init__(self, bootstrap_servers: str, topic: str, source_topic: str) -> None:
        self._topic = topic
        self._source_topic = source_topic
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers,
            acks="all",
            # Not idempotent: the topic is at-least-once anyway, and an idempotent producer
            # that had a batch refused for good would have a gap in its sequence numbers
            # and fail every later send to that partition.
            enable_idempotence=False,
            compression_type="zstd",  # readers may store what they read: poison can be big
            max_request_size=DLQ_MAX_REQUEST_BYTES,
            request_timeout_ms=10_000,
            client_id="analytics-consumer-dlq",
        )

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def send(self, poison: Sequence[Poison]) -> None:
        """Waits until the broker acknowledged every dead letter, or raises
        DeadLetterUnavailable (some may have been written: the caller sends all again).

        An entry refused for good (PERMANENT_ERRORS) is sent again at once as its headers
        alone, so no entry can hold the batch past this call; only a transient failure, or a
        topic that refuses even headers, raises."""
        if not poison:
            return
        now = dt.datetime.now(dt.UTC)
        letters = [dead_letter(item, self._source_topic, now) for item in poison]
        refused = [
            (letter, error)
            for letter, error in zip(letters, await self._send_all(letters), strict=True)
            if error is not None
        ]
        if not refused:
            return
        for _, error in refused:
            log.error(
                "the dead-letter topic %r refused an entry for good (%r); sending its headers "
                "alone (the value stays at its source offset in %r)",
                self._topic,
                error,
                self._source_topic,
            )
        stubs = [headers_only(letter) for letter, _ in refused]
        if still := [error for error in await self._send_all(stubs) if error is not None]:
            raise DeadLetterUnavailable(
                f"the dead-letter topic {self._topic!r} refuses even an entry's headers "
                f"({still[0]!r}); check its configuration (max.message.bytes, "
                "cleanup.policy)"
            )

    async def _send_all(self, letters: Sequence[DeadLetter]) -> list[KafkaError | None]:
        """Sends every letter and waits for each answer: None where it was acknowledged, the
        error where it was refused for good. Raises DeadLetterUnavailable on any other
        failure."""
        pending: list[asyncio.Future[Any] | KafkaError] = []
        try:
            for key, value, headers in letters:
                try:
                    pending.append(
                        await self._producer.send(self._topic, value, key=key, headers=headers)
                    )
                except PERMANENT_ERRORS as exc:  # the producer's own size check
                    pending.append(exc)
            answers = await asyncio.gather(
                *[p for p in pending if isinstance(p, asyncio.Future)], return_exceptions=True
            )
        except KafkaError as exc:
            raise DeadLetterUnavailable(f"dead-letter topic unavailable: {exc!r}") from exc
        results: list[KafkaError | None] = []
        answered = iter(answers)
        for item in pending:
            answer = item if isinstance(item, KafkaError) else next(answered)
            if isinstance(answer, PERMANENT_ERRORS):
                results.append(answer)
            elif isinstance(answer, BaseException):
                raise DeadLetterUnavailable(
                    f"dead-letter topic unavailable: {answer!r}"
                ) from answer
            else:
                results.append(None)
        return results


# -- the operator's tool -------------------------------------------------------------------


class ToolError(Exception):
    """A failure of the tool, with what to do next; printed without a traceback."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One dead letter as read back."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]

    def header(self, name: str) -> str | None:
        value = self.headers.get(name)
        return None if value is None else value.decode("utf-8", "replace")

    @property
    def site_id(self) -> str | None:
        return self.header(SITE_ID_HEADER)

    @property
    def cut_from_bytes(self) -> int | None:
        """The value's size as received, when the dead letter holds only part of it."""
        return _int_or_none(self.header(CUT_FROM_HEADER))

    @property
    def time(self) -> str:
        written = self.header(DEAD_LETTERED_AT_HEADER)
        if written:
            return written
        return dt.datetime.fromtimestamp(self.timestamp_ms / 1000, dt.UTC).isoformat()

    def as_json(self) -> dict[str, Any]:
        return {
            "partition": self.partition,
            "offset": self.offset,
            "time": self.time,
            "error": self.header(ERROR_HEADER),
            "sqlstate": self.header(SQLSTATE_HEADER),
            "site_id": self.site_id,
            "event_id": self.header(EVENT_ID_HEADER),
            "reason": self.header(REASON_HEADER),
            "source_topic": self.header(SOURCE_TOPIC_HEADER),
            "source_partition": _int_or_none(self.header(SOURCE_PARTITION_HEADER)),
            "source_offset": _int_or_none(self.header(SOURCE_OFFSET_HEADER)),
            "schema": self.header(SCHEMA_HEADER),
            "cut_from_bytes": self.cut_from_bytes,
        }


def _int_or_none(text: str | None) -> int | None:
    return int(text) if text is not None and text.lstrip("-").isdigit() else None


async def read_dead_letters(bootstrap_servers: str, topic: str) -> tuple[int, list[Entry]]:
    """Every entry of the dead-letter topic up to its end as of the call, in offset order
    per partition; and how many partitions it has. Reads without a consumer group (nothing
    is committed), so it changes nothing for anyone."""
    reader = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        client_id="analytics-deadletter-tool",
    )
    try:
        await reader.start()
    except KafkaError as exc:
        await reader.stop()
        raise ToolError(
            f"cannot reach Kafka at {bootstrap_servers} ({exc}); check KAFKA_BOOTSTRAP_SERVERS"
        ) from exc
    try:
        if topic not in await reader.topics():
            raise ToolError(
                f"the dead-letter topic {topic!r} does not exist: nothing was dead-lettered "
                "yet, or DLQ_TOPIC names another topic"
            )
        partitions = await partitions_of(bootstrap_servers, topic)
        tps = [TopicPartition(topic, p) for p in partitions]
        reader.assign(tps)
        ends = {tp: int(o) for tp, o in (await reader.end_offsets(tps)).items()}
        # An explicit seek: seek_to_beginning can race the reset that assign() starts.
        for tp, start in (await reader.beginning_offsets(tps)).items():
            reader.seek(tp, int(start))
        entries: list[Entry] = []
        while [tp for tp, end in ends.items() if await reader.position(tp) < end]:
            fetched = await reader.getmany(timeout_ms=int(READ_STALL_S * 1000))
            if not fetched:
                raise ToolError(
                    f"reading {topic!r} stalled for {READ_STALL_S:.0f}s before its end; is the "
                    "broker healthy? Try again"
                )
            for tp, records in fetched.items():
                entries += [
                    Entry(
                        tp.partition,
                        r.offset,
                        r.timestamp,
                        r.key,
                        r.value or b"",
                        {name: value for name, value in r.headers or ()},
                    )
                    for r in records
                    if r.offset < ends[tp]
                ]
        entries.sort(key=lambda e: (e.partition, e.offset))
        return len(partitions), entries
    finally:
        await reader.stop()


async def partitions_of(bootstrap_servers: str, topic: str) -> list[int]:
    """The partition numbers of `topic`, from the cluster's metadata."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return sorted(int(p["partition"]) for p in described["partitions"])


def parse_entry_names(names: Sequence[str], partitions: int) -> set[tuple[int, int]]:
    """`--offset` values, `PARTITION:OFFSET` or, for a topic of one partition, `OFFSET`."""
    wanted = set()
    for name in names:
        partition_text, _, offset_text = name.rpartition(":")
        try:
            offset = int(offset_text)
            partition = int(partition_text) if partition_text else None
        except ValueError:
            raise ToolError(
                f"--offset {name!r}: expected OFFSET or PARTITION:OFFSET, as `list` prints them"
            ) from None
        if partition is None:
            if partitions != 1:
                raise ToolError(
                    f"--offset {name!r}: the dead-letter topic has {partitions} partitions; "
                    "name entries as PARTITION:OFFSET, as `list` prints them"
                )
            partition = 0
        wanted.add((partition, offset))
    return wanted


def select(
    entries: Sequence[Entry], *, site: str | None, names: set[tuple[int, int]] | None
) -> list[Entry]:
    """The entries of `site` (any when None) named in `names` (all when None)."""
    return [
        e
        for e in entries
        if (site is None or e.site_id == site)
        and (names is None or (e.partition, e.offset) in names)
    ]


def entry_name(entry: Entry, partitions: int) -> str:
    return f"{entry.offset}" if partitions == 1 else f"{entry.partition}:{entry.offset}"


def format_line(entry: Entry, partitions: int) -> str:
    """One entry for a terminal: every field from the data escaped (consumer/terminal.py)."""
    reason = entry.header(REASON_HEADER) or ""
    if entry.cut_from_bytes is not None:
        reason += f" (value cut from {entry.cut_from_bytes} bytes: not replayable)"
    fields = [
        entry.time,
        entry.header(ERROR_HEADER) or "-",
        entry.header(SQLSTATE_HEADER) or "-",
        entry.site_id or "-",
        entry.header(EVENT_ID_HEADER) or "-",
        reason,
    ]
    return "  ".join([entry_name(entry, partitions), *(escaped(f) for f in fields)])


async def list_command(settings: ConsumerSettings, args: argparse.Namespace) -> int:
    partitions, entries = await read_dead_letters(
        settings.kafka_bootstrap_servers, settings.dlq_topic
    )
    chosen = select(entries, site=args.site, names=None)
    shown = chosen[: args.limit] if args.limit is not None else chosen
    if args.json:
        for entry in shown:
            # ASCII: C1 controls and bidirectional overrides, which JSON leaves as they are,
            # are \u escapes too, so that the lines are safe on a terminal as well.
            print(json.dumps(entry.as_json()))
        return 0
    print("offset  time  error  sqlstate  site  event_id  reason")
    for entry in shown:
        print(format_line(entry, partitions))
    more = f" ({len(chosen) - len(shown)} more: raise --limit)" if len(shown) < len(chosen) else ""
    print(f"{len(chosen)} entries in {settings.dlq_topic!r}{more}", file=sys.stderr)
    return 0


async def replay_command(settings: ConsumerSettings, args: argparse.Namespace) -> int:
    partitions, entries = await read_dead_letters(
        settings.kafka_bootstrap_servers, settings.dlq_topic
    )
    names = None if args.all else parse_entry_names(args.offset, partitions)
    chosen = select(entries, site=args.site, names=names)
    if names is not None:
        found = {(e.partition, e.offset) for e in chosen}
        if missing := sorted(names - found):
            listed = ", ".join(f"{p}:{o}" for p, o in missing)
            scope = f" of site {args.site!r}" if args.site else ""
            raise ToolError(f"no entry{scope} at {listed} in {settings.dlq_topic!r}; see `list`")
    if cut := [e for e in chosen if e.cut_from_bytes is not None]:
        listed = ", ".join(f"{entry_name(e, partitions)} (source {_source(e)})" for e in cut)
        if names is not None:
            raise ToolError(
                f"{listed}: the dead letter holds only the start of the value; the original is "
                f"at that source offset of {settings.events_topic!r} until its retention"
            )
        print(f"skipping entries whose value was cut: {listed}", file=sys.stderr)
        chosen = [e for e in chosen if e.cut_from_bytes is None]
    if not chosen:
        print("nothing to replay", file=sys.stderr)
        return 0
    if args.dry_run:
        for entry in chosen:
            print(format_line(entry, partitions))
        print(f"dry run: would replay {len(chosen)} entries to {settings.events_topic!r}")
        return 0
    await republish(settings, chosen)
    print(
        f"replayed {len(chosen)} entries to {settings.events_topic!r}; the consumer stores "
        "them if their cause is fixed (those already stored count once), else dead-letters "
        "them again"
    )
    return 0


def _source(entry: Entry) -> str:
    partition = entry.header(SOURCE_PARTITION_HEADER) or "?"
    return f"{escaped(partition)}:{escaped(entry.header(SOURCE_OFFSET_HEADER) or '?')}"


async def republish(settings: ConsumerSettings, entries: Sequence[Entry]) -> None:
    """Produces each entry to the events topic as the API does and waits for every ack."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        acks="all",
        enable_idempotence=True,
        client_id="analytics-deadletter-tool",
    )
    try:
        await producer.start()
        futures = []
        for entry in entries:
            site = entry.site_id
            key = site.encode() if site is not None else entry.key
            schema = entry.headers.get(SCHEMA_HEADER)
            headers = [(SCHEMA_HEADER, schema)] if schema is not None else []
            futures.append(
                await producer.send(settings.events_topic, entry.value, key=key, headers=headers)
            )
        await asyncio.gather(*futures)
    except KafkaError as exc:
        raise ToolError(
            f"replay to {settings.events_topic!r} failed ({exc!r}); some entries may have been "
            "published: replaying them again is safe (stored events count once)"
        ) from exc
    finally:
        await producer.stop()


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m consumer.deadletter",
        description="List the dead-letter topic (DLQ_TOPIC), or replay entries after a fix.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="what the dead-letter topic holds, oldest first")
    listing.add_argument("--site", help="only the entries of this site_id")
    listing.add_argument("--limit", type=int, help="print at most this many entries")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    replay = commands.add_parser("replay", help="re-publish entries to the events topic")
    chosen = replay.add_mutually_exclusive_group(required=True)
    chosen.add_argument(
        "--offset", nargs="+", metavar="[P:]N", help="the entries, as `list` names them"
    )
    chosen.add_argument("--all", action="store_true", help="every entry (of --site if given)")
    replay.add_argument("--site", help="only the entries of this site_id")
    replay.add_argument("--dry-run", action="store_true", help="show what would be replayed")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "list" and args.limit is not None and args.limit < 0:
        print("deadletter: --limit must be 0 or more", file=sys.stderr)
        return 2
    settings = settings_for_command("deadletter")
    if settings is None:
        return 2
    command = list_command if args.command == "list" else replay_command
    try:
        return asyncio.run(command(settings, args))
    except ToolError as exc:
        print(f"deadletter: {exc}", file=sys.stderr)
    except KafkaError as exc:
        print(
            f"deadletter: Kafka at {settings.kafka_bootstrap_servers} failed ({exc!r}); check "
            "KAFKA_BOOTSTRAP_SERVERS and the broker's health, then run the command again",
            file=sys.stderr,
        )
    return 1


if __name__ == "__main__":
    sys.exit(main())
