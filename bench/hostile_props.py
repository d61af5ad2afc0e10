"""`python -m bench.hostile_props [--events=N] [--loads=plain,attack,edge]`

What custom properties cost the consumer: one replica (`python -m consumer`, a real process)
drains N preloaded events of one site into a fresh database and topic, once per load:

- `plain`: page views without properties (the reference);
- `attack`: signups with 30 random keys of 64 bytes and random values of 256 bytes each (the
  attack review's load; the edge refuses such events now, but records of earlier releases may
  still be in Kafka);
- `edge`: signups with the most the edge accepts now (core/events.py): 10 random keys of 64
  bytes, random values of 128 bytes;
- `values`: signups with the same 10 keys of 64 bytes on every event, random values of 128
  bytes (the value cap's case rather than the key cap's).

Prints, per load: events/s of the batch writes (events over the seconds the replica spent in
its batch transactions, from its histogram: the database's share), events/s over the wall
time from the replica's start to the last row stored (start-up included, as the review
timed it), and the rows and size of daily_props afterwards. Run it against the code of two
commits in the same sitting to compare them (docs/benchmarks.md, "Bounds on hostile properties").
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from bench.consumer import _delete_topic, _prepare, _scalar, _send, start_replica
from bench.table import print_table
from core.config import environ
from core.events import EventRecord
from core.settings import DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS

# keys per event, and random bytes (written in hex, so twice as many) of a key and a value;
# a key of 0 random bytes is the same on every event.
LOADS = {
    "plain": (0, 0, 0),
    "attack": (30, 32, 128),
    "edge": (10, 32, 64),
    "values": (10, 0, 64),
}
PER_MESSAGE = 100  # as /events produces a batch of one site
PARTITIONS = 4


def events(load: str, count: int) -> Iterator[EventRecord]:
    """`count` events of one site, received now, each with its load's random properties."""
    keys, key_bytes, value_bytes = LOADS[load]
    now = datetime.now(UTC)
    for i in range(count):
        props = {
            (secrets.token_hex(key_bytes) if key_bytes else f"{k:02d}" + "k" * 62): (
                secrets.token_hex(value_bytes)
            )
            for k in range(keys)
        }
        yield EventRecord(
            event_id=uuid.uuid4(),
            site_id="hostile-site",
            event_type="signup" if keys else "page_view",
            path="/p",
            user_id=f"u{i}",
            timestamp=now - timedelta(milliseconds=i % 1000),
            received_at=now,
            props=props or None,
        )


async def preload(bootstrap: str, topic: str, load: str, count: int) -> int:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=20
    )
    await producer.start()
    messages, chunk, pending = 0, [], []
    try:
        for record in events(load, count):
            chunk.append(record)
            if len(chunk) == PER_MESSAGE:
                pending.append(await _send(producer, topic, chunk))
                messages, chunk = messages + 1, []
        if chunk:
            pending.append(await _send(producer, topic, chunk))
            messages += 1
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return messages


def drain(bootstrap: str, database_url: str, topic: str, count: int) -> tuple[float, float]:
    """Starts a replica and waits for `count` events in `events`; returns (wall seconds from
    its start, seconds spent in batch writes)."""
    process, _, port = start_replica(bootstrap, database_url, topic, PARTITIONS, [])
    started = time.monotonic()
    try:
        deadline = started + 1800
        while _scalar(database_url, "SELECT count(*) FROM events") < count:
            if process.poll() is not None:
                raise RuntimeError(f"consumer exited with {process.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError("the consumer did not drain the topic within 30 minutes")
            time.sleep(0.1)
        wall = time.monotonic() - started
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    finally:
        process.terminate()
        process.wait(30)
    written = sum(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("consumer_batch_write_seconds_sum")
    )
    return wall, written


def run(bootstrap: str, server_url: str, load: str, count: int) -> list[object]:
    name = f"bench_props_{uuid.uuid4().hex[:8]}"
    topic = name.replace("_", "-")
    database_url = make_conninfo(server_url, dbname=name)
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        asyncio.run(_prepare(bootstrap, database_url, topic, PARTITIONS))
        asyncio.run(preload(bootstrap, topic, load, count))
        wall, written = drain(bootstrap, database_url, topic, count)
        rows = _scalar(database_url, "SELECT count(*) FROM daily_props")
        size = _scalar(database_url, "SELECT pg_total_relation_size('daily_props')")
        stored = _scalar(database_url, "SELECT count(*) FROM events")
    finally:
        asyncio.run(_delete_topic(bootstrap, topic))
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
    return [
        load,
        stored,
        f"{count / written:,.0f}",
        f"{count / wall:,.0f}",
        f"{wall:.1f}",
        rows,
        f"{size / 2**20:.1f}",
    ]


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hostile_props")
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--loads", default=",".join(LOADS))
    args = parser.parse_args(argv)
    env = environ()
    bootstrap = KAFKA_BOOTSTRAP_SERVERS.read(env)
    server_url = DATABASE_URL.read(env)
    rows = []
    for load in args.loads.split(","):
        started = time.monotonic()
        rows.append(run(bootstrap, server_url, load, args.events))
        print(f"{load}: {time.monotonic() - started:.0f}s", file=sys.stderr)
    print_table(
        f"consumer: drain {args.events:,} events of one site, {PER_MESSAGE}/message, one replica",
        ["load", "stored", "events/s (writes)", "events/s (wall)", "wall s", "daily_props", "MiB"],
        rows,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
