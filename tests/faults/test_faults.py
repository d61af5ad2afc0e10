"""Faults, proved: real consumer processes under a steady stream of events with known ids,
while things are killed and restarted. Every case ends with FaultCase.settle(): every
accepted event stored exactly once, and every rollup equal to a recount from the raw rows.

The broker and PostgreSQL server restarted here are the suite's own (tests/services.py).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid

import httpx
import msgspec
import pytest
from aiokafka import AIOKafkaConsumer

from consumer.deadletter import read_dead_letters
from core.events import SCHEMA_EVENT_BATCH_V1, SCHEMA_EVENT_V1, encode_record, encode_records
from tests.faults.conftest import FaultCase
from tests.processes import free_port
from tests.support import make_record, scalar, wait_for

# One worker runs every test that starts private services (tests/services.py), one at a time.
pytestmark = [
    pytest.mark.faults,
    pytest.mark.kafka,
    pytest.mark.postgres,
    pytest.mark.xdist_group("private-services"),
]


async def test_sigkill_mid_batch_at_random_moments(case: FaultCase) -> None:
    seed = int(time.time())
    rng = random.Random(seed)
    print(f"random seed {seed}")
    # A backlog keeps the consumer writing large batches, so a kill often lands mid-write.
    await case.stream.preload(30_000)
    consumer = case.start_consumer(MAX_BATCH_ROWS="5000")
    for _ in range(3):
        await case.progress()
        await asyncio.sleep(rng.uniform(0.0, 1.0))
        case.kill(consumer)
        consumer = case.start_consumer(MAX_BATCH_ROWS="5000")
    await case.progress()
    await case.settle()
    case.stop_consumers()


async def test_broker_restart(case: FaultCase) -> None:
    case.start_consumer()
    await case.progress()
    case.kafka.stop()
    await asyncio.sleep(2)
    case.kafka.start()
    await case.progress(timeout_s=90)
    await case.settle()
    assert case.stream.acked, "nothing was accepted"
    case.stop_consumers()


async def test_postgres_restart(case: FaultCase) -> None:
    consumer = case.start_consumer()
    await case.progress()
    case.postgres.stop()
    await asyncio.sleep(3)
    case.postgres.start()
    await case.progress()
    await case.settle()
    case.stop_consumers()
    assert "fetching paused" in consumer.log_path.read_text()


async def test_scale_one_to_three_to_one(case: FaultCase) -> None:
    port = free_port()
    first = case.start_consumer(CONSUMER_METRICS_PORT=str(port))
    await case.progress()
    others = [case.start_consumer(), case.start_consumer()]

    def assigned_everywhere() -> bool:
        logs = [p.log_path.read_text() for p in [first, *others]]
        return all("partitions assigned: [" in text and "seeking to" in text for text in logs)

    await wait_for(assigned_everywhere, timeout_s=60, what="all three replicas to get partitions")
    await case.progress()
    for process in others:
        assert process.terminate() == 0, process.log_tail()

    def health() -> dict[str, object]:
        answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert answer.status_code == 200, answer.text
        return dict(json.loads(answer.text))

    await wait_for(
        lambda: health()["assigned_partitions"] == 4,
        timeout_s=60,
        what="the last replica to own every partition",
    )
    await case.progress()

    def metrics() -> str:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text

    # The lag of a partition that came back is reported at the replica's next lag refresh,
    # once its stored offset is loaded: a moment after the assignment.
    await wait_for(
        lambda: 'consumer_lag{partition="0"}' in metrics(),
        timeout_s=30,
        what="the lag of partition 0 on the last replica",
    )
    assert "consumer_rebalances_total" in metrics()

    await case.settle()
    case.stop_consumers()


async def test_poison_in_the_stream(case: FaultCase) -> None:
    case.start_consumer()
    await case.progress()
    undecodable = await case.stream.send_raw(b"\xc1 not msgpack", SCHEMA_EVENT_V1)
    refused = make_record(path="/nul\x00")  # decodes, but PostgreSQL refuses the text
    rejected = await case.stream.send_raw(encode_record(refused), SCHEMA_EVENT_V1)
    await case.progress()
    await case.settle()
    assert scalar(case.database_url, "SELECT count(*) FROM events WHERE path LIKE '/nul%%'") == 0

    reader = AIOKafkaConsumer(
        case.settings.dlq_topic,
        bootstrap_servers=case.services.bootstrap,
        group_id=f"dlq-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
    )
    await reader.start()
    try:
        letters: set[tuple[int, int]] = set()
        deadline = time.monotonic() + 30
        while len(letters) < 2 and time.monotonic() < deadline:
            for messages in (await reader.getmany(timeout_ms=1000)).values():
                for message in messages:
                    headers = dict(message.headers)
                    letters.add((int(headers["source_partition"]), int(headers["source_offset"])))
    finally:
        await reader.stop()
    assert letters == {undecodable, rejected}
    case.stop_consumers()


async def test_the_same_event_id_twice(case: FaultCase) -> None:
    consumer = case.start_consumer()
    retried = make_record(site_id="site-retry", user_id="u-retry")
    await case.stream.send_raw(encode_record(retried), SCHEMA_EVENT_V1)
    await case.progress()
    # The second copy arrives after a restart, in another batch: still counted once.
    assert consumer.terminate() == 0
    await case.stream.send_raw(encode_record(retried), SCHEMA_EVENT_V1)
    case.start_consumer()
    await case.progress()
    case.stream.attempted.add(retried.event_id)
    case.stream.acked.add(retried.event_id)
    await case.settle()
    assert case.stream.resent > 0  # the stream itself re-sent some events too
    assert (
        scalar(case.database_url, "SELECT page_views FROM daily_stats WHERE site_id = 'site-retry'")
        == 1
    )
    case.stop_consumers()


async def test_postgres_restart_while_poison_is_isolated(case: FaultCase) -> None:
    """PostgreSQL stops in the middle of an isolation pass: the batch is kept and retried,
    and afterwards every good event is stored exactly once (settle) and every culprit is in
    the dead-letter topic. A culprit may be there twice: dead letters are produced before
    the commit that skips them, and that commit never came (at-least-once)."""
    rng = random.Random(11)
    culprits = []
    # A backlog of ~33,000 events with 30 culprits spread through it, each inside a batch
    # message of its site among 99 good events: isolating them takes many probes.
    for _ in range(30):
        await case.stream.preload(1000)
        culprit = make_record(
            site_id="site-0",
            path="/" + "".join(chr(rng.randrange(0x4E00, 0x9FFF)) for _ in range(2000)),
        )
        good = [msgspec.structs.replace(case.stream.record(), site_id="site-0") for _ in range(99)]
        chunk = [*good[:50], culprit, *good[50:]]
        case.stream.attempted.update(r.event_id for r in good)
        await case.stream.send_raw(encode_records(chunk), SCHEMA_EVENT_BATCH_V1)
        case.stream.acked.update(r.event_id for r in good)
        culprits.append(culprit)
    consumer = case.start_consumer()
    await wait_for(
        lambda: "isolating the culprits" in consumer.log_path.read_text(),
        timeout_s=120,
        what="an isolation pass to start",
    )
    case.postgres.stop()
    await asyncio.sleep(3)
    case.postgres.start()
    await case.progress(timeout_s=120)
    await case.settle(timeout_s=300)  # raises if a good event is missing or stored twice
    case.stop_consumers()

    log_text = consumer.log_path.read_text()
    started = log_text.index("isolating the culprits")
    paused = log_text.find("fetching paused", started)
    first_letter = log_text.find("dead-lettered event", started)
    assert paused != -1, "the database being down went unnoticed"
    assert first_letter == -1 or paused < first_letter, (
        "the isolation pass ended before PostgreSQL stopped: make it longer"
    )
    _, letters = await read_dead_letters(case.services.bootstrap, case.settings.dlq_topic)
    lettered = [letter.header("event_id") for letter in letters]
    assert {str(c.event_id) for c in culprits} <= set(lettered)
    assert set(lettered) == {str(c.event_id) for c in culprits}
    print(f"{len(lettered)} dead letters for {len(culprits)} culprits")
