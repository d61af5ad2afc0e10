"""`python -m consumer.deadletter`: listing the dead-letter topic and replaying entries after
the cause is fixed, run as an operator would, against the real broker and database."""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
from datetime import UTC, datetime

import psycopg
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from consumer.settings import ConsumerSettings
from core.events import SCHEMA_EVENT_V1, SCHEMA_HEADER, encode_record
from tests.processes import ROOT
from tests.support import (
    assert_rollups_match_raw_rows,
    make_record,
    produce_events,
    running_consumer,
    scalar,
    stored_event_count,
    topic_end_offsets,
    wait_for,
)

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

BLOCKED_DAY = datetime(2025, 11, 10, 8, 0, tzinfo=UTC)


async def tool(settings: ConsumerSettings, *args: str) -> tuple[int, str, str]:
    """Runs the command with the settings in its environment; (exit code, stdout, stderr)."""
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "DATABASE_URL": settings.database_url,
        "EVENTS_TOPIC": settings.events_topic,
        "DLQ_TOPIC": settings.dlq_topic,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "consumer.deadletter",
        *args,
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def consumed(url: str) -> int:
    return int(scalar(url, "SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets"))


async def test_list_then_replay_after_the_cause_is_fixed(
    consumer_settings: ConsumerSettings,
) -> None:
    url = consumer_settings.database_url
    # The cause: a default partition holding a row of BLOCKED_DAY, so that day's partition
    # cannot be created (SQLSTATE 23514) and its events are refused.
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE events_default PARTITION OF events DEFAULT")
        conn.execute(
            "INSERT INTO events_default (day, event_id, site_id, event_type, path, user_id, "
            "event_time, received_at) VALUES (%s, gen_random_uuid(), 'x', 'x', '/', 'x', %s, %s)",
            (BLOCKED_DAY.date(), BLOCKED_DAY, BLOCKED_DAY),
        )
    blocked = [
        make_record(site_id="site-late", timestamp=BLOCKED_DAY, path="/late-1"),
        make_record(site_id="site-other", timestamp=BLOCKED_DAY, path="/late-2"),
    ]
    good = [make_record(site_id=f"site-{i % 3}", user_id=f"u{i}") for i in range(30)]
    await produce_events(consumer_settings, good[:10] + blocked[:1] + good[10:] + blocked[1:])

    async with running_consumer(consumer_settings):
        await wait_for(lambda: consumed(url) == 32, timeout_s=30, what="every message consumed")
        assert stored_event_count(url) == 30 + 1  # the good ones and the blocking row

        code, out, err = await tool(consumer_settings, "list")
        assert code == 0, err
        lines = out.strip().splitlines()[1:]
        assert len(lines) == 2
        assert all("rejected  23514  site-" in line for line in lines), out
        assert "2 entries" in err

        code, out, err = await tool(consumer_settings, "list", "--json", "--site", "site-late")
        assert code == 0, err
        (entry,) = [json.loads(line) for line in out.splitlines()]
        assert entry["event_id"] == str(blocked[0].event_id)
        assert entry["error"] == "rejected" and entry["sqlstate"] == "23514"
        assert entry["site_id"] == "site-late"
        assert entry["source_topic"] == consumer_settings.events_topic
        assert "would be violated" in entry["reason"]

        name = f"{entry['partition']}:{entry['offset']}"
        events_topic = consumer_settings.events_topic
        before = await topic_end_offsets(consumer_settings.kafka_bootstrap_servers, events_topic)
        code, out, err = await tool(consumer_settings, "replay", "--offset", name, "--dry-run")
        assert code == 0, err
        assert "would replay 1 entries" in out
        # A dry run publishes nothing.
        after = await topic_end_offsets(consumer_settings.kafka_bootstrap_servers, events_topic)
        assert after == before
        assert consumed(url) == 32

        code, _, err = await tool(consumer_settings, "replay", "--offset", "99:0")
        assert code == 1
        assert "no entry at 99:0" in err and "see `list`" in err

        # The fix: the operator removes the default partition.
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP TABLE events_default")

        code, out, err = await tool(consumer_settings, "replay", "--offset", name)
        assert code == 0, err
        assert "replayed 1 entries" in out
        await wait_for(lambda: stored_event_count(url) == 31, timeout_s=30, what="the replay")

        # Replaying everything again: the stored event counts once, the other is stored now.
        code, out, err = await tool(consumer_settings, "replay", "--all")
        assert code == 0, err
        assert "replayed 2 entries" in out
        await wait_for(lambda: consumed(url) == 35, timeout_s=30, what="the second replay")
        await wait_for(lambda: stored_event_count(url) == 32, timeout_s=30, what="both stored")
    assert scalar(url, "SELECT count(*) FROM events WHERE day = %s", (BLOCKED_DAY.date(),)) == 2
    assert (
        scalar(
            url,
            "SELECT events FROM daily_stats WHERE site_id = 'site-late' AND day = %s",
            (BLOCKED_DAY.date(),),
        )
        == 1
    )
    assert_rollups_match_raw_rows(url)


async def test_a_missing_topic_says_what_to_check(consumer_settings: ConsumerSettings) -> None:
    settings = ConsumerSettings(
        kafka_bootstrap_servers=consumer_settings.kafka_bootstrap_servers,
        dlq_topic=f"{consumer_settings.dlq_topic}-nowhere",
    )
    code, _, err = await tool(settings, "list")
    assert code == 1
    assert "does not exist" in err and "DLQ_TOPIC" in err


async def test_offsets_need_a_partition_when_the_topic_has_several(
    consumer_settings: ConsumerSettings,
) -> None:
    code, _, err = await tool(consumer_settings, "replay", "--offset", "3")
    assert code == 1
    assert "PARTITION:OFFSET" in err


async def test_an_oversized_undecodable_message_is_cut_and_does_not_stall(
    consumer_settings: ConsumerSettings,
) -> None:
    """3 MB that cannot be decoded, compressed on the wire so that the broker takes it: more
    than the dead-letter producer may send whole. Its start goes to the dead-letter topic,
    marked as cut, and the event behind it is stored on the first attempt."""
    url = consumer_settings.database_url
    after = make_record(site_id="after-site")
    producer = AIOKafkaProducer(
        bootstrap_servers=consumer_settings.kafka_bootstrap_servers,
        acks="all",
        compression_type="gzip",
        max_request_size=16 * 1024 * 1024,
    )
    await producer.start()
    try:
        for value in (b"\xc1" * 3_000_000, encode_record(after)):
            await producer.send_and_wait(
                consumer_settings.events_topic,
                value,
                key=b"big-site",
                partition=0,
                headers=[(SCHEMA_HEADER, SCHEMA_EVENT_V1)],
            )
    finally:
        await producer.stop()
    async with running_consumer(consumer_settings) as stats:
        await wait_for(
            lambda: stored_event_count(url) == 1,
            timeout_s=30,
            what="the event behind an oversized poison message",
        )
        assert stats.registry.get_sample_value("consumer_write_retries_total") == 0  # no retry

    code, out, err = await tool(consumer_settings, "list", "--json")
    assert code == 0, err
    (entry,) = [json.loads(line) for line in out.splitlines()]
    assert entry["error"] == "undecodable" and entry["site_id"] == "big-site"
    assert entry["cut_from_bytes"] == 3_000_000
    assert (entry["source_partition"], entry["source_offset"]) == (0, 0)

    name = f"{entry['partition']}:{entry['offset']}"
    code, _, err = await tool(consumer_settings, "replay", "--offset", name)
    assert code == 1
    assert "holds only the start of the value" in err and "(source 0:0)" in err


async def test_a_letter_the_topic_refuses_goes_as_its_headers(
    consumer_settings: ConsumerSettings,
) -> None:
    """A dead-letter topic whose max.message.bytes is lower than what is sent (the broker
    refuses it for good, MESSAGE_TOO_LARGE): the entry goes again without its value, on the
    same attempt, and nothing is held."""
    admin = AIOKafkaAdminClient(bootstrap_servers=consumer_settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        topic = ConfigResource(
            ConfigResourceType.TOPIC, consumer_settings.dlq_topic, {"max.message.bytes": "8192"}
        )
        await admin.alter_configs([topic])
    finally:
        await admin.close()
    url = consumer_settings.database_url
    noise = random.Random(11).randbytes(100_000)  # incompressible: 100 kB on the wire too
    after = make_record(site_id="after-site")
    producer = AIOKafkaProducer(
        bootstrap_servers=consumer_settings.kafka_bootstrap_servers, acks="all"
    )
    await producer.start()
    try:
        for value in (b"\xc1" + noise, encode_record(after)):
            await producer.send_and_wait(
                consumer_settings.events_topic,
                value,
                key=b"noisy-site",
                partition=0,
                headers=[(SCHEMA_HEADER, SCHEMA_EVENT_V1)],
            )
    finally:
        await producer.stop()
    async with running_consumer(consumer_settings) as stats:
        await wait_for(
            lambda: stored_event_count(url) == 1,
            timeout_s=30,
            what="the event behind a letter the topic refuses",
        )
        assert stats.registry.get_sample_value("consumer_write_retries_total") == 0

    code, out, err = await tool(consumer_settings, "list", "--json")
    assert code == 0, err
    (entry,) = [json.loads(line) for line in out.splitlines()]
    assert entry["site_id"] == "noisy-site" and entry["cut_from_bytes"] == 100_001
    assert (entry["source_partition"], entry["source_offset"]) == (0, 0)
