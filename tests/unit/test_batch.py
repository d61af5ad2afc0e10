"""Batching policy with an injected clock, and what a batch keeps when partitions go."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

import msgspec

from consumer.batch import (
    MIN_ROWS_BY_TIME,
    TEXT_POOL_ENTRIES,
    UNDECODABLE,
    Batch,
    BatchPolicy,
    Message,
    TextPool,
    WriteTimeSizer,
    record_of,
    to_row,
)
from core.events import (
    CONTEXT_FIELDS,
    SCHEMA_EVENT_BATCH_V1,
    SCHEMA_EVENT_V1,
    EventRecord,
    decode_records,
    encode_record,
    encode_records,
)
from tests.support import make_record


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def record(site: str = "s", ts: datetime | None = None) -> EventRecord:
    return EventRecord(
        event_id=uuid.uuid4(),
        site_id=site,
        event_type="page_view",
        path="/",
        user_id="u",
        timestamp=ts or datetime(2025, 11, 12, 23, 59, 59, tzinfo=UTC),
        received_at=datetime(2025, 11, 13, tzinfo=UTC),
    )


def message(partition: int, offset: int, value: bytes | None = None) -> Message:
    return Message(partition, offset, value or encode_record(record()), SCHEMA_EVENT_V1)


POLICY = BatchPolicy(max_rows=3, max_bytes=10_000, max_age_s=1.0)


def test_empty_batch_is_never_due() -> None:
    clock = FakeClock()
    batch = Batch(clock)
    clock.now += 1000
    assert not batch.is_due(POLICY)
    assert batch.is_empty()


def test_due_by_age_of_first_message() -> None:
    clock = FakeClock()
    batch = Batch(clock)
    batch.add(message(0, 0))
    clock.now += 0.9
    batch.add(message(0, 1))
    assert not batch.is_due(POLICY)
    clock.now += 0.1
    assert batch.is_due(POLICY)


def test_due_by_rows_and_room_shrinks() -> None:
    batch = Batch(FakeClock())
    assert batch.room(POLICY) == 3
    batch.add(message(0, 0))
    batch.add(message(0, 1))
    assert batch.room(POLICY) == 1
    assert not batch.is_due(POLICY)
    batch.add(message(1, 0))
    assert batch.is_due(POLICY)
    assert batch.room(POLICY) == 1  # never zero: a poll must still be allowed


def test_room_counts_events_and_bytes_of_batch_messages() -> None:
    policy = BatchPolicy(max_rows=1000, max_bytes=1_000_000, max_age_s=1.0)
    batch = Batch(FakeClock())
    assert batch.room(policy) == 100  # a first probe: messages may hold many events
    value = encode_records([record() for _ in range(100)])
    batch.add(Message(0, 0, value, SCHEMA_EVENT_BATCH_V1))
    assert batch.room(policy) == 9  # 900 more events, at 100 a message
    by_bytes = BatchPolicy(max_rows=1000, max_bytes=len(value) * 3, max_age_s=1.0)
    assert batch.room(by_bytes) == 2


def test_due_by_bytes() -> None:
    batch = Batch(FakeClock())
    batch.add(message(0, 0, encode_record(record(site="x" * 100))))
    assert batch.is_due(BatchPolicy(max_rows=1000, max_bytes=50, max_age_s=60))


def test_rows_carry_the_utc_day_and_next_offsets_advance() -> None:
    batch = Batch(FakeClock())
    batch.add(message(2, 41))
    batch.add(message(2, 42))
    batch.add(message(5, 7))
    assert batch.next_offsets == {2: 43, 5: 8}
    assert batch.rows[0][0] == date(2025, 11, 12)
    assert len(batch) == 3


def test_a_batch_message_contributes_all_its_events() -> None:
    batch = Batch(FakeClock())
    value = encode_records([record(), record(), record()])
    batch.add(Message(0, 9, value, SCHEMA_EVENT_BATCH_V1))
    assert len(batch.rows) == 3
    assert batch.spans[0][1:] == (0, 3)


def test_undecodable_message_becomes_poison_but_still_advances_the_offset() -> None:
    batch = Batch(FakeClock())
    batch.add(message(0, 0))
    batch.add(Message(0, 1, b"\xc1 not msgpack", SCHEMA_EVENT_V1))
    assert len(batch.rows) == 1
    assert [p.message.offset for p in batch.poison] == [1]
    assert batch.poison[0].error == UNDECODABLE
    assert batch.poison[0].reason.startswith("cannot decode the message")
    assert batch.next_offsets == {0: 2}


def test_dropping_revoked_partitions_keeps_the_others_intact() -> None:
    batch = Batch(FakeClock())
    batch.add(message(0, 0))
    batch.add(message(1, 10))
    batch.add(Message(1, 11, b"junk", SCHEMA_EVENT_V1))
    batch.add(message(0, 1))
    kept_rows = [batch.rows[0], batch.rows[2]]
    batch.drop_partitions({1})
    assert batch.next_offsets == {0: 2}
    assert batch.rows == kept_rows
    assert batch.poison == []
    assert [(m.offset, start, end) for m, start, end in batch.spans] == [(0, 0, 1), (1, 1, 2)]


def test_dropping_every_partition_empties_the_batch() -> None:
    batch = Batch(FakeClock())
    batch.add(message(3, 0))
    batch.drop_partitions({3})
    assert batch.is_empty()
    assert not batch.is_due(POLICY)


def test_absorb_puts_a_failed_batch_before_what_came_in_meanwhile() -> None:
    clock = FakeClock()
    failed = Batch(clock)
    failed.add(message(0, 0))
    failed.add(Message(0, 1, b"\xc1", SCHEMA_EVENT_V1))  # poison, already sent
    failed.poison_sent = True
    clock.now += 1
    later = Batch(clock)
    later.add(message(0, 2))
    later.add(Message(1, 7, b"\xc1", SCHEMA_EVENT_V1))  # poison, not sent yet
    failed.absorb(later)
    assert [m.offset for m, _, _ in failed.spans] == [0, 1, 2, 7]
    assert [(start, end) for _, start, end in failed.spans] == [(0, 1), (1, 1), (1, 2), (2, 2)]
    assert len(failed.rows) == 2
    assert failed.next_offsets == {0: 3, 1: 8}
    assert [p.message.offset for p in failed.poison] == [7]
    assert not failed.poison_sent
    assert failed.started_at == 100.0


def test_rows_map_back_to_their_messages_and_events() -> None:
    clock = FakeClock()
    batch = Batch(clock)
    records = [record("a"), record("b"), record("c")]
    batch.add(message(0, 0))
    batch.add(Message(1, 5, b"\xc1 not msgpack", SCHEMA_EVENT_V1))
    batch.add(Message(1, 6, encode_records(records), SCHEMA_EVENT_BATCH_V1))
    assert [(m.partition, m.offset) for m in batch.messages_of([0, 1, 2, 3])] == [
        (0, 0),
        (1, 6),
        (1, 6),
        (1, 6),
    ]
    assert [record_of(row) for row in batch.rows[1:]] == records
    assert encode_record(record_of(batch.rows[1])) == encode_record(records[0])


def test_a_row_carries_the_context_and_gives_the_record_back() -> None:
    record = make_record(browser="Chrome", country="DE", utm_term="shoes", props={"plan": "pro"})
    assert record_of(to_row(record)) == record


def test_the_rows_of_a_batch_share_one_copy_of_each_repeated_text() -> None:
    records = [
        make_record(
            site_id="site-a", path="/pricing", user_id="visitor-1", browser="Firefox", country="FR"
        )
        for _ in range(3)
    ]
    batch = Batch(FakeClock())
    batch.add(Message(0, 0, encode_records(records), SCHEMA_EVENT_BATCH_V1))
    batch.add(Message(0, 1, encode_records(records[:1]), SCHEMA_EVENT_BATCH_V1))
    first, *others = batch.rows
    for row in others:  # decoded apart, the same values: the same objects in every row
        assert [a is b for a, b in zip(first[2:6], row[2:6], strict=True)] == [True] * 4
        assert row[9] is first[9] and row[12] is first[12]
    assert [record_of(row) for row in batch.rows] == [*records, records[0]]
    assert len(Batch(FakeClock()).texts) == 0  # each batch has its own pool


def test_a_batch_pools_a_bounded_number_of_values() -> None:
    pool = TextPool()
    values = [f"unique-{i}" for i in range(TEXT_POOL_ENTRIES + 10)]
    assert [pool[v] for v in values] == values
    assert len(pool) == TEXT_POOL_ENTRIES  # past it, a value stays the row's own
    assert pool[None] is None and pool[values[0]] is values[0]


def test_a_record_from_an_earlier_api_decodes_without_context() -> None:
    earlier = msgspec.msgpack.encode(
        [str(uuid.uuid4()), "s", "page_view", "/", "u", "2025-11-12T10:00:00Z",
         "2025-11-12T10:00:01Z", False]
    )  # fmt: skip
    [record] = decode_records(earlier, SCHEMA_EVENT_V1)
    assert (record.browser, record.props) == (None, None)
    assert to_row(record)[9:] == (None,) * len(CONTEXT_FIELDS)


def test_a_write_slower_than_the_target_cuts_the_limit_to_what_would_have_fitted() -> None:
    sizer = WriteTimeSizer(max_rows=40_000, target_s=1.0)
    assert sizer.rows == 40_000
    assert sizer.written(40_000, 4.0, arriving_per_s=2_000) == 10_000
    # slower again, with a batch that was not full: cut again, never raised by it
    assert sizer.written(6_000, 1.5, arriving_per_s=2_000) == 4_000


def test_a_quick_full_batch_raises_the_limit_and_a_batch_cut_by_age_leaves_it() -> None:
    sizer = WriteTimeSizer(max_rows=40_000, target_s=1.0)
    sizer.written(40_000, 4.0, arriving_per_s=0)
    assert sizer.rows == 10_000
    assert sizer.written(5_000, 0.2, arriving_per_s=0) == 10_000  # the limit did not cut it
    assert sizer.written(10_000, 0.5, arriving_per_s=0) == 20_000
    assert sizer.written(20_000, 0.25, arriving_per_s=0) == 40_000  # max_rows, not 80,000


def test_a_replica_falling_behind_doubles_the_limit_up_to_max_rows() -> None:
    sizer = WriteTimeSizer(max_rows=40_000, target_s=1.0)
    assert sizer.written(40_000, 4.0, arriving_per_s=0) == 10_000
    # 6,000 events/s coming in, 5,000/s stored: smaller batches would store fewer
    assert sizer.written(10_000, 2.0, arriving_per_s=6_000) == 20_000
    assert sizer.written(20_000, 2.5, arriving_per_s=9_000) == 40_000
    assert sizer.written(40_000, 5.0, arriving_per_s=9_000) == 40_000


def test_the_limit_stays_between_the_floor_and_max_rows() -> None:
    sizer = WriteTimeSizer(max_rows=40_000, target_s=0.5)
    assert sizer.written(2_000, 30.0, arriving_per_s=0) == MIN_ROWS_BY_TIME
    small = WriteTimeSizer(max_rows=200, target_s=0.5)
    assert small.written(200, 30.0, arriving_per_s=0) == 200  # max_rows below the floor wins


def test_a_target_of_zero_sizes_by_rows_alone() -> None:
    sizer = WriteTimeSizer(max_rows=40_000, target_s=0)
    assert sizer.written(40_000, 60.0, arriving_per_s=0) == 40_000
    assert sizer.written(0, 0.0, arriving_per_s=0) == 40_000
