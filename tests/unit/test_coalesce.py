"""Grouping the events of concurrent publishes into one message per partition (pure logic)."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner

from core.events import (
    SCHEMA_EVENT_BATCH_V1,
    SCHEMA_EVENT_V1,
    SCHEMA_HEADER,
    EventRecord,
    decode_records,
    encode_records,
)
from ingest.coalesce import coalesce
from ingest.publish import CachedPartitioner, SiteKeys
from tests.support import make_record

PARTITIONS = list(range(12))


def partition_of(key: bytes) -> int:
    return int(DefaultPartitioner()(key, PARTITIONS, PARTITIONS))


def key_of(site_id: str) -> bytes:
    return site_id.encode()


def events_of(value: bytes, headers: list[tuple[str, bytes]]) -> list[EventRecord]:
    return decode_records(value, dict(headers)[SCHEMA_HEADER])


def test_every_event_goes_once_to_its_sites_partition_in_queued_order() -> None:
    requests = [(f"request-{i}", [make_record(site_id=f"site-{i % 16}", path=f"/{i}")])
                for i in range(64)]  # fmt: skip
    requests.append(("batch", [make_record(site_id=f"site-{i}", path=f"/b{i}") for i in range(20)]))
    messages = coalesce(requests, key_of, partition_of)

    assert len({m.partition for m in messages}) == len(messages)  # one message per partition
    seen: list[EventRecord] = []
    for message in messages:
        events = events_of(message.value, message.headers)
        assert message.events == len(events)
        assert {partition_of(e.site_id.encode()) for e in events} == {message.partition}
        # Within a message, events keep the order in which they were queued.
        order = [r.event_id for _, records in requests for r in records]
        assert [e.event_id for e in events] == sorted((e.event_id for e in events), key=order.index)
        seen.extend(events)
    queued = [r for _, records in requests for r in records]
    assert sorted(e.event_id.bytes for e in seen) == sorted(r.event_id.bytes for r in queued)


def test_each_message_names_the_waiters_of_its_events_once() -> None:
    site_a, site_b = "site-0", "site-1"
    assert partition_of(site_a.encode()) != partition_of(site_b.encode())
    requests = [
        ("one", [make_record(site_id=site_a)]),
        ("batch", [make_record(site_id=site_a), make_record(site_id=site_b)] * 3),
        ("two", [make_record(site_id=site_b)]),
    ]
    by_partition = {m.partition: m for m in coalesce(requests, key_of, partition_of)}
    assert by_partition[partition_of(site_a.encode())].waiters == ["one", "batch"]
    assert by_partition[partition_of(site_b.encode())].waiters == ["batch", "two"]


def test_a_lone_event_is_an_event_v1_message_keyed_by_its_site() -> None:
    (message,) = coalesce([("only", [make_record(site_id="site-7")])], key_of, partition_of)
    assert dict(message.headers)[SCHEMA_HEADER] == SCHEMA_EVENT_V1
    assert message.key == b"site-7"
    assert message.partition == partition_of(b"site-7")


def test_an_array_is_keyed_by_its_common_key_or_by_none() -> None:
    same = coalesce([("a", [make_record(site_id="s")]), ("b", [make_record(site_id="s")])],
                    key_of, partition_of)  # fmt: skip
    assert [(m.key, dict(m.headers)[SCHEMA_HEADER]) for m in same] == [
        (b"s", SCHEMA_EVENT_BATCH_V1)
    ]
    # Two sites on one partition share a message, which then carries no key.
    sites = [f"site-{i}" for i in range(40)]
    first = next(s for s in sites[1:] if partition_of(s.encode()) == partition_of(b"site-0"))
    (mixed,) = coalesce([("a", [make_record(site_id="site-0"), make_record(site_id=first)])],
                        key_of, partition_of)  # fmt: skip
    assert mixed.key is None
    assert {e.site_id for e in events_of(mixed.value, mixed.headers)} == {"site-0", first}


def test_a_group_larger_than_the_message_limit_is_split_in_order() -> None:
    records = [make_record(site_id="big", path=f"/{i:04d}" + "x" * 200) for i in range(100)]
    limit = len(encode_records(records)) // 5
    messages = coalesce([("w", records)], key_of, partition_of, max_message_bytes=limit)
    assert len(messages) > 4
    assert all(len(m.value) <= limit for m in messages)
    assert all(m.waiters == ["w"] and m.key == b"big" for m in messages)
    events = [e for m in messages for e in events_of(m.value, m.headers)]
    assert [e.path for e in events] == [r.path for r in records]


def test_hot_site_sub_keys_spread_a_site_over_their_partitions() -> None:
    keys = SiteKeys({"hot": 4})
    partitioner = CachedPartitioner()

    def hot_partition(key: bytes) -> int:
        return partitioner(key, PARTITIONS, PARTITIONS)

    records = [make_record(site_id="hot", path=f"/{i}") for i in range(40)]
    messages = coalesce([(i, [r]) for i, r in enumerate(records)], keys.key, hot_partition)
    expected = {hot_partition(f"hot#{n}".encode()) for n in range(4)}
    assert {m.partition for m in messages} == expected
    assert sum(m.events for m in messages) == 40
