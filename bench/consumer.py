"""`python -m bench consumer [--events=N] [--per-message=K] [--partitions=P] [--recorded-rate=R]
[--site-zones=Z] [--env=KEY=VALUE] [--freshness-rate=F] [--freshness-late] [--pin-cpu=C]
[--pin-backends] [--consumer-tree=DIR]`

(Options in the `--name=value` form: `python -m bench` passes on only the arguments that start
with a dash.)

Preloads N events into a fresh topic (K events per Kafka message), then times one consumer
replica (`python -m consumer`, a real process) draining them into a fresh database with
dedupe and rollups: events/s, batch write latency p50/p99 (from the replica's Prometheus
histogram), peak and sampled RSS. In the same run, the ceiling: a bare binary COPY of the
same rows, in batches of the same size, into an unindexed table, and the same through the
staging table with ON CONFLICT into a keyed table (dedupe without rollups). Prints the ratios.
With --site-zones=Z the Z busiest sites keep a time zone (`python -m consumer.zones add`), so
that the replica also writes their local-day rollups. Then, unless --freshness-rate=0, a
second replica takes a steady F events/s, received now as a live site's are (with
--freshness-late, on the backlog's long-sealed days instead), and the time from each probe's
ack to its row in daily_stats is measured, with the batches' mean size and write times.
--pin-cpu=C runs every replica on core C alone (`taskset`), and the freshness load beside it:
a slower machine; with --pin-backends the freshness replica's PostgreSQL backends, where a
batch's work is done, run there too: the whole consumer side on one core.
--consumer-tree=DIR runs the replicas from another checkout, e.g. an issue's starting commit,
on this tree's events and schema: comparing commits with their own bench would also compare
their generators.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from psycopg import sql
from psycopg.conninfo import make_conninfo

from bench.table import print_table
from consumer.batch import Row, to_row
from consumer.schema import apply_schema
from consumer.write import COPY_STAGING, COPY_TYPES, STAGING_DDL
from consumer.zones import add_zone
from core.config import environ
from core.events import (
    SCHEMA_EVENT_BATCH_V1,
    SCHEMA_EVENT_V1,
    SCHEMA_HEADER,
    EventRecord,
    encode_record,
    encode_records,
)
from core.settings import DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS, MAX_BATCH_ROWS

ROOT = Path(__file__).resolve().parent.parent
BASE_TIME = datetime(2025, 11, 12, tzinfo=UTC)
ZONE = "Asia/Kolkata"  # for --site-zones

BASELINE_DDL = "CREATE TABLE bare_copy (LIKE staging_events)"
# The second reference: the consumer's statement without the rollups (staging COPY, then
# insert skipping duplicate ids into a table with the events table's key), i.e. dedupe alone.
DEDUPE_DDL = "CREATE TABLE dedupe_only (LIKE staging_events, PRIMARY KEY (day, event_id, site_id))"
DEDUPE_INSERT = """
INSERT INTO dedupe_only SELECT * FROM staging_events ON CONFLICT DO NOTHING
"""

BASELINE_COPY = COPY_STAGING.replace("staging_events", "bare_copy")


BROWSERS = ("Chrome", "Mobile Safari", "Safari", "Firefox", "Edge", "Samsung Internet")
SYSTEMS = ("Windows", "iOS", "Android", "Mac OS X", "Linux")
DEVICES = ("desktop", "mobile", "tablet")
COUNTRIES = tuple(f"{chr(65 + a)}{chr(65 + b)}" for a in range(6) for b in range(5))  # 30


def context(rng: random.Random, kind: str) -> dict[str, Any]:
    """What the API derives for a browser hit: a few browsers, systems and devices, 30
    countries (a few common), a source on a fifth of the hits, properties on half the clicks."""
    found: dict[str, Any] = {
        "browser": rng.choice(BROWSERS),
        "os": rng.choice(SYSTEMS),
        "device": rng.choice(DEVICES),
        "country": COUNTRIES[int(rng.paretovariate(1.0)) % len(COUNTRIES)],
    }
    if rng.random() < 0.2:
        found.update(referrer_host="news.example", referrer_source="News", utm_source="news")
    if kind == "click" and rng.random() < 0.5:
        found["props"] = {
            "plan": rng.choice(("free", "pro", "team")),
            "step": str(rng.randrange(5)),
        }
    return found


def _drop(found: dict[str, Any]) -> dict[str, Any]:
    return {}


# Each user's lag behind receipt (their clock, their connection), up to a minute: a user's
# events then come in the order of their times, as a visitor's do.
USER_LAG_MS = [random.Random(user).randrange(60_000) for user in range(5000)]


def user_lag_ms(user: int) -> int:
    """A user's lag: the table's for the default 5,000 users, drawn the same way beyond."""
    if user < len(USER_LAG_MS):
        return USER_LAG_MS[user]
    return random.Random(user).randrange(60_000)


def lagged(received: datetime, user: int, rng: random.Random) -> datetime:
    """The event time of a user's hit received then. Draws what the per-event lag drew
    before, so that every other field of the generated events stays as it was."""
    rng.randrange(60_000)
    return received - timedelta(milliseconds=user_lag_ms(user))


def generate(
    seed: int,
    count: int,
    recorded_rate: float = 0,
    emitter_ids: bool = False,
    with_context: bool = True,
    users: int = 5_000,
    base: datetime = BASE_TIME,
) -> Iterator[EventRecord]:
    """Deterministic events as the API would accept them, received in order from `base` at
    `recorded_rate` events/s (0: spread evenly over two days, however many), with UUIDv7 ids
    (time-ordered, like the API's) and event times up to a minute earlier (by a lag of each
    user's own, so a user's events come in order, as a visitor's do); 50 sites (a few
    hot), 200 paths, `users` users (5,000), 80 % page views, each with its context; about 1 % repeat
    an earlier event (client retries). With `emitter_ids`, every id is marked as the
    emitter's own (a server emitter sending idempotency keys), which the consumer also looks
    for on the neighbouring days. Without `with_context`, the same events carry no context
    (as an earlier API sent them), to tell the context's cost from the code's.

    The spread matters to the rollups: a batch of a backlog received at 10k events/s covers
    two seconds of event time (one 15-minute bucket); a batch of 1M events spread over two
    days covers an hour (four or five buckets, so more rollup rows per batch)."""
    rng = random.Random(seed)
    if recorded_rate > 0:
        step_us = int(1_000_000 / recorded_rate)
    else:
        step_us = 2 * 86_400_000_000 // max(1, count)
    recent: list[EventRecord] = []
    for i in range(count):
        if recent and rng.random() < 0.01:
            yield rng.choice(recent)
            continue
        received = base + timedelta(microseconds=i * step_us)
        millis = int(received.timestamp() * 1000)
        event_id = uuid.UUID(
            int=(millis << 80)
            | (0x7 << 76)
            | (rng.getrandbits(12) << 64)
            | (0b10 << 62)
            | rng.getrandbits(62)
        )
        site = int(rng.paretovariate(1.2)) % 50
        kind = "page_view" if rng.random() < 0.8 else "click"
        record = EventRecord(
            event_id=event_id,
            site_id=f"site-{site}",
            event_type=kind,
            path=f"/section-{rng.randrange(20)}/page-{rng.randrange(10)}",
            user_id=f"user-{(user := rng.randrange(users))}",
            timestamp=lagged(received, user, rng),
            received_at=received,
            emitter_id=emitter_ids,
            # Drawn either way, in the same place: the same events with or without it.
            **(context(rng, kind) if with_context else _drop(context(rng, kind))),
        )
        if i % 100 == 0:
            recent = [*recent[-99:], record]
        yield record


async def preload(
    bootstrap: str,
    topic: str,
    seed: int,
    count: int,
    per_message: int,
    recorded_rate: float,
    emitter_ids: bool = False,
    with_context: bool = True,
    users: int = 5_000,
) -> int:
    """Produces the events; returns the number of messages."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        compression_type="zstd",
        linger_ms=20,
        max_batch_size=1024 * 1024,
    )
    await producer.start()
    messages = 0
    try:
        pending = []
        # One chunk per site, each message keyed by its site: a site's events then share a
        # partition and keep their order, as the API's per-partition messages do. (Chunks of
        # mixed sites keyed by their first one would scatter a site's events over every
        # partition, so the consumer would see most visitors' events out of order.)
        chunks: dict[str, list[EventRecord]] = {}
        for record in generate(seed, count, recorded_rate, emitter_ids, with_context, users):
            chunk = chunks.setdefault(record.site_id, [])
            chunk.append(record)
            if len(chunk) < per_message:
                continue
            pending.append(await _send(producer, topic, chunk))
            messages += 1
            del chunks[record.site_id]
            if len(pending) >= 2000:
                await asyncio.gather(*pending)
                pending = []
        for chunk in chunks.values():
            pending.append(await _send(producer, topic, chunk))
            messages += 1
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return messages


async def _send(
    producer: AIOKafkaProducer, topic: str, chunk: list[EventRecord]
) -> asyncio.Future[Any]:
    if len(chunk) == 1:
        value, schema = encode_record(chunk[0]), SCHEMA_EVENT_V1
    else:
        value, schema = encode_records(chunk), SCHEMA_EVENT_BATCH_V1
    key = chunk[0].site_id.encode()
    future: asyncio.Future[Any] = await producer.send(
        topic, value, key=key, headers=[(SCHEMA_HEADER, schema)]
    )
    return future


def bare_copy(
    database_url: str,
    seed: int,
    count: int,
    recorded_rate: float,
    dedupe: bool,
    with_context: bool = True,
    users: int = 5_000,
    batch_rows: int = MAX_BATCH_ROWS.default,
) -> float:
    """Seconds spent in binary COPY of the same rows in batches of `batch_rows` (the replica's),
    one transaction each (row building excluded): into an unindexed table, or with `dedupe`
    through the staging table into a keyed one with ON CONFLICT DO NOTHING."""
    spent = 0.0
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(STAGING_DDL)
        conn.execute(DEDUPE_DDL if dedupe else BASELINE_DDL)
        rows: list[Row] = []
        for record in generate(seed, count, recorded_rate, with_context=with_context, users=users):
            rows.append(to_row(record))
            if len(rows) == batch_rows:
                spent += _copy_batch(conn, rows, dedupe)
                rows = []
        if rows:
            spent += _copy_batch(conn, rows, dedupe)
    return spent


def _copy_batch(conn: psycopg.Connection[tuple[Any, ...]], rows: list[Row], dedupe: bool) -> float:
    started = time.perf_counter()
    with conn.transaction(), conn.cursor() as cur:
        with cur.copy(COPY_STAGING if dedupe else BASELINE_COPY) as copy:
            copy.set_types(COPY_TYPES)
            for row in rows:
                copy.write_row(row)
        if dedupe:
            cur.execute(DEDUPE_INSERT)
    return time.perf_counter() - started


def rss_mib(pid: int) -> tuple[float, float]:
    """(current, peak) resident set size of a process, MiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


def histogram_quantile(text: str, name: str, q: float) -> float:
    """Prometheus' histogram_quantile on one scrape (linear within the bucket)."""
    buckets: list[tuple[float, float]] = []
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket"):
            le = line.split('le="')[1].split('"')[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.split()[-1])))
    total = buckets[-1][1]
    rank = q * total
    lower, below = 0.0, 0.0
    for upper, cumulative in buckets:
        if cumulative >= rank:
            if upper == float("inf"):
                return lower
            inside = cumulative - below
            return lower + (upper - lower) * ((rank - below) / inside if inside else 0)
        lower, below = upper, cumulative
    return lower


def stored_messages(database_url: str, group: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets WHERE group_id = %s",
            (group,),
        ).fetchone()
    return int(row[0]) if row else 0


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env_items(items: list[str]) -> dict[str, str]:
    """The consumer's settings given as `--env=KEY=VALUE` options."""
    return dict((key, value) for key, _, value in (item.partition("=") for item in items))


def start_replica(
    bootstrap: str,
    database_url: str,
    topic: str,
    partitions: int,
    extra: list[str],
    pin_cpu: int | None = None,
    tree: Path = ROOT,
) -> tuple[subprocess.Popen[bytes], str, int]:
    """Starts `python -m consumer` from `tree` (another checkout: that commit's consumer) on a
    new group (under `taskset -c pin_cpu` if given: one core, for a slower machine); returns
    the process, group, metrics port."""
    group = f"bench-{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "DATABASE_URL": database_url,
        "EVENTS_TOPIC": topic,
        "DLQ_TOPIC": f"{topic}.dlq",
        "CONSUMER_GROUP": group,
        "TOPIC_PARTITIONS": str(partitions),
        "CONSUMER_METRICS_PORT": str(port),
        "LOG_LEVEL": "WARNING",
    }
    env.update(env_items(extra))
    command = [sys.executable, "-m", "consumer"]
    if pin_cpu is not None:
        command = ["taskset", "-c", str(pin_cpu), *command]
    process = subprocess.Popen(command, env=env, cwd=tree)
    return process, group, port


def drain(
    bootstrap: str,
    database_url: str,
    topic: str,
    partitions: int,
    messages: int,
    extra: list[str],
    pin_cpu: int | None = None,
    tree: Path = ROOT,
) -> dict[str, float]:
    process, group, port = start_replica(
        bootstrap, database_url, topic, partitions, extra, pin_cpu, tree
    )
    samples: list[float] = []
    try:
        first_at = None
        deadline = time.monotonic() + 3600
        stored = 0
        while stored < messages:
            if process.poll() is not None:
                raise RuntimeError(f"consumer exited with {process.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError("the consumer did not drain the topic within an hour")
            time.sleep(0.1)
            stored = stored_messages(database_url, group)
            if stored and first_at is None:
                first_at, first_stored = time.monotonic(), stored
            samples.append(rss_mib(process.pid)[0])
        elapsed = time.monotonic() - (first_at or time.monotonic())
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        _, peak = rss_mib(process.pid)
    finally:
        process.terminate()
        process.wait(30)
    quarter = max(1, len(samples) // 4)
    return {
        "elapsed_s": elapsed,
        "first_messages": float(first_stored),
        "p50_s": histogram_quantile(metrics, "consumer_batch_write_seconds", 0.5),
        "p99_s": histogram_quantile(metrics, "consumer_batch_write_seconds", 0.99),
        "rss_q1": max(samples[:quarter]),
        "rss_q4": max(samples[-quarter:]),
        "rss_peak": peak,
    }


async def measure_freshness(
    bootstrap: str,
    database_url: str,
    topic: str,
    port: int,
    rate: int,
    seconds: float,
    late: bool = False,
) -> list[float]:
    """Produces `rate` single-event messages a second (one per message, as the API does) for
    `seconds`; every 100 ms one of them is a probe of a site of its own. The events are
    received now, as a live site's are; with `late`, on the backlog's days instead, sealed
    long ago, so that each batch also goes through the late events' rollups. Returns, per probe,
    the seconds from the broker's ack (when the API would answer 202) to the probe's row in
    daily_stats (what /stats reads), polled every 20 ms. The stream starts once the group
    has settled (each of the replica's writers owns a partition, or every partition is
    owned): a steady stream, not a start-up rebalance, which would hand one writer every
    partition for its first seconds and then pause them all."""
    async with httpx.AsyncClient() as client:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                health = (await client.get(f"http://127.0.0.1:{port}/healthz")).json()
                assigned = health["assigned_partitions"]
                writers = health.get("writers_assigned", 1)  # an older tree's replica: 1
                if assigned > 0 and writers >= min(health.get("writers", 1), assigned):
                    break
            await asyncio.sleep(0.2)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    acked: dict[str, float] = {}
    seen: dict[str, float] = {}
    stop = asyncio.Event()

    async def watch() -> None:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            while not stop.is_set() or len(seen) < len(acked):
                cur = await conn.execute(
                    "SELECT site_id FROM daily_stats WHERE site_id LIKE 'probe-%%'"
                )
                now = time.monotonic()
                for (site,) in await cur.fetchall():
                    seen.setdefault(site, now)
                await asyncio.sleep(0.02)

    async def probe(record: EventRecord) -> None:
        future = await producer.send(
            topic,
            encode_record(record),
            key=record.site_id.encode(),
            headers=[(SCHEMA_HEADER, SCHEMA_EVENT_V1)],
        )
        await future
        acked[record.site_id] = time.monotonic()

    watcher = asyncio.create_task(watch())
    probes = []
    try:
        base = BASE_TIME if late else datetime.now(UTC)
        records = generate(2, int(rate * seconds), rate, base=base)
        tick_s = 0.01
        per_tick = max(1, int(rate * tick_s))
        started = time.monotonic()
        ticks = 0
        while time.monotonic() - started < seconds:
            pending = [await _send(producer, topic, [next(records)]) for _ in range(per_tick)]
            if ticks % 10 == 0:
                now = datetime.now(UTC)
                probes.append(
                    asyncio.create_task(
                        probe(
                            EventRecord(
                                event_id=uuid.uuid4(),
                                site_id=f"probe-{ticks}",
                                event_type="page_view",
                                path="/",
                                user_id="u",
                                timestamp=now,
                                received_at=now,
                            )
                        )
                    )
                )
            await asyncio.gather(*pending)
            ticks += 1
            await asyncio.sleep(max(0.0, started + ticks * tick_s - time.monotonic()))
        await asyncio.gather(*probes)
        stop.set()
        await asyncio.wait_for(watcher, timeout=60)
    finally:
        stop.set()
        watcher.cancel()
        await producer.stop()
    return sorted(seen[site] - acked[site] for site in acked if site in seen)


def freshness(
    bootstrap: str,
    database_url: str,
    partitions: int,
    rate: int,
    seconds: float,
    extra: list[str],
    pin_cpu: int | None = None,
    pin_backends: bool = False,
    tree: Path = ROOT,
    late: bool = False,
) -> tuple[list[float], float, dict[str, float]]:
    """Runs measure_freshness against a fresh topic and a replica; returns the latencies,
    the event rate actually stored, and the replica's batch sizes and write times. With
    `pin_cpu` the replica and this process (the load) share that one core; with
    `pin_backends` too, so do the replica's PostgreSQL backends (where a batch's work is)."""
    topic = f"bench-fresh-{uuid.uuid4().hex[:8]}"
    asyncio.run(_create_topic(bootstrap, topic, partitions))
    process, group, port = start_replica(
        bootstrap, database_url, topic, partitions, extra, pin_cpu, tree
    )
    affinity = os.sched_getaffinity(0)
    if pin_cpu is not None:
        os.sched_setaffinity(0, {pin_cpu})
    stop_pinning = threading.Event()
    pinned: dict[int, str] = {}  # pid: "" once pinned, or what went wrong
    pinner = None
    if pin_cpu is not None and pin_backends:
        pinner = threading.Thread(
            target=_pin_backends,
            args=(database_url, f"analytics-consumer:{group}", pin_cpu, stop_pinning, pinned),
            daemon=True,
        )
        pinner.start()
    try:
        started = time.monotonic()
        before = _scalar(database_url, "SELECT count(*) FROM events")
        work_before = _rows_and_wal(database_url)
        latencies = asyncio.run(
            measure_freshness(bootstrap, database_url, topic, port, rate, seconds, late)
        )
        stored = _scalar(database_url, "SELECT count(*) FROM events") - before
        achieved = stored / (time.monotonic() - started)
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        writes = {
            "rows_mean": (
                _counter(metrics, "consumer_events_written")
                + _counter(metrics, "consumer_duplicate_events")
            )
            / max(1.0, _counter(metrics, "consumer_batches")),
            "write_p50_s": histogram_quantile(metrics, "consumer_batch_write_seconds", 0.5),
            "write_p99_s": histogram_quantile(metrics, "consumer_batch_write_seconds", 0.99),
        }
    finally:
        stop_pinning.set()
        if pinner is not None:
            pinner.join(5)
        os.sched_setaffinity(0, affinity)
        process.terminate()
        process.wait(30)
        asyncio.run(_delete_topic(bootstrap, topic))
    if pinner is not None and (not pinned or any(pinned.values())):
        raise RuntimeError(
            f"the replica's PostgreSQL backends were not all pinned: {pinned or 'none found'}"
        )
    # Once the replica's backends are gone: they report their table counters as they exit.
    _wait_for_backends_to_exit(database_url, f"analytics-consumer:{group}")
    work_after = _rows_and_wal(database_url)
    events = max(1, work_after[2] - work_before[2])
    writes["rows_per_event"] = (work_after[0] - work_before[0]) / events
    writes["wal_bytes_per_event"] = (work_after[1] - work_before[1]) / events
    return latencies, achieved, writes


def _rows_and_wal(database_url: str) -> tuple[int, int, int]:
    """Rows inserted or updated so far in this database's tables other than the raw events
    (rollups, visits, versions, offsets; session-local tables left out), the server's WAL
    position (bytes: everything the server wrote, whichever database), and the raw events."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT (SELECT coalesce(sum(s.n_tup_ins + s.n_tup_upd), 0)"
            "        FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid"
            "        WHERE c.relpersistence = 'p' AND NOT c.relispartition"
            "          AND s.relname <> 'events'),"
            "       pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint,"
            "       (SELECT count(*) FROM events)"
        ).fetchone()
    return (int(row[0]), int(row[1]), int(row[2])) if row else (0, 0, 0)


def _wait_for_backends_to_exit(database_url: str, application: str, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(database_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                (application,),
            ).fetchone()
            if not row or not row[0]:
                return
            time.sleep(0.05)


def _pin_backends(
    database_url: str,
    application: str,
    cpu: int,
    stop: threading.Event,
    pinned: dict[int, str],
) -> None:
    """Until `stop`, moves the PostgreSQL backends of `application` to core `cpu` (twice a
    second: a replica opens its connections when it first writes, and again after losing
    one), noting in `pinned` each one's pid and what went wrong with it ("" if nothing)."""
    try:
        with psycopg.connect(database_url, autocommit=True) as conn:
            while not stop.wait(0.5):
                for (pid,) in conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (application,)
                ).fetchall():
                    if pid not in pinned:
                        pinned[pid] = pin_local_backend(pid, cpu)
    except psycopg.Error as exc:
        pinned[-1] = f"cannot list the backends: {exc}"


def pin_local_backend(pid: int, cpu: int) -> str:
    """Pins a PostgreSQL backend of this machine to `cpu`: "" if done, else why not (one in a
    container or on another host cannot be pinned from here)."""
    try:
        with open(f"/proc/{pid}/comm") as comm:
            if comm.read().strip() != "postgres":
                return "not a local postgres process"
        os.sched_setaffinity(pid, {cpu})
    except (FileNotFoundError, ProcessLookupError):
        return "not on this machine (or gone)"
    except PermissionError as exc:
        return f"not allowed: {exc}"
    return ""


def _counter(text: str, name: str) -> float:
    """A Prometheus counter's value on one scrape (0 if absent)."""
    for line in text.splitlines():
        if line.startswith(f"{name}_total "):
            return float(line.split()[-1])
    return 0.0


def quantile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench consumer")
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--per-message", type=int, default=100)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--users", type=int, default=5_000, help="distinct visitors")
    parser.add_argument(
        "--emitter-ids",
        action="store_true",
        help="mark every id as the emitter's own (the consumer then also checks neighbouring days)",
    )
    parser.add_argument(
        "--without-context",
        action="store_true",
        help="the same events without a hit's context (browser, country...), as before issue 13",
    )
    parser.add_argument(
        "--recorded-rate",
        type=float,
        default=10_000,
        help="events/s at which the backlog was received (0: spread over two days)",
    )
    parser.add_argument("--freshness-rate", type=int, default=10_000, help="events/s; 0: skip")
    parser.add_argument("--freshness-s", type=float, default=20.0)
    parser.add_argument(
        "--freshness-late",
        action="store_true",
        help="the freshness stream's events on the backlog's days (sealed long ago: late "
        "events, which the sealed months' rollups take too), not received now",
    )
    parser.add_argument(
        "--site-zones", type=int, default=0, help="how many sites keep Asia/Kolkata (of 50)"
    )
    parser.add_argument(
        "--env", action="append", default=[], help="KEY=VALUE for the consumer (repeatable)"
    )
    parser.add_argument(
        "--pin-cpu",
        type=int,
        default=None,
        help="run the replica on this one core (taskset), with the freshness load beside it",
    )
    parser.add_argument(
        "--consumer-tree",
        type=Path,
        default=ROOT,
        help="run the replicas from this checkout (another commit's consumer); the events, the "
        "schema and the references stay this tree's: the same work for every commit",
    )
    parser.add_argument(
        "--pin-backends",
        action="store_true",
        help="with --pin-cpu, the replica's PostgreSQL backends on that core too (freshness)",
    )
    args, _ = parser.parse_known_args(argv)  # options of other sections pass through
    if args.pin_backends and args.pin_cpu is None:
        parser.error("--pin-backends needs --pin-cpu")
    if args.pin_cpu is not None and args.pin_cpu not in os.sched_getaffinity(0):
        parser.error(f"--pin-cpu must be one of the cores {sorted(os.sched_getaffinity(0))}")
    env = environ()
    bootstrap = KAFKA_BOOTSTRAP_SERVERS.read(env)
    server_url = DATABASE_URL.read(env)
    name = f"bench_{uuid.uuid4().hex[:8]}"
    topic = name.replace("_", "-")
    database_url = make_conninfo(server_url, dbname=name)

    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        asyncio.run(_prepare(bootstrap, database_url, topic, args.partitions))
        for site in range(args.site_zones):  # site-0 is the busiest (Pareto)
            asyncio.run(add_zone(database_url, f"site-{site}", ZONE))
        started = time.monotonic()
        messages = asyncio.run(
            preload(
                bootstrap,
                topic,
                args.seed,
                args.events,
                args.per_message,
                args.recorded_rate,
                args.emitter_ids,
                not args.without_context,
                args.users,
            )
        )
        print(
            f"preloaded {args.events:,} events in {messages:,} messages "
            f"in {time.monotonic() - started:.1f}s",
            file=sys.stderr,
        )
        result = drain(
            bootstrap,
            database_url,
            topic,
            args.partitions,
            messages,
            args.env,
            args.pin_cpu,
            args.consumer_tree,
        )
        stored_events = _scalar(database_url, "SELECT count(*) FROM events")
        # Events/s over the time from the first stored batch to the last one.
        drained = args.events * (1 - result["first_messages"] / messages)
        rate = drained / result["elapsed_s"] if result["elapsed_s"] else float("nan")
        copy_args = (database_url, args.seed, args.events, args.recorded_rate)
        with_context = not args.without_context
        # The references write batches of the replica's size (--env=MAX_BATCH_ROWS=N if given).
        batch_rows = int(env_items(args.env).get("MAX_BATCH_ROWS", MAX_BATCH_ROWS.default))
        ceiling = args.events / bare_copy(*copy_args, False, with_context, args.users, batch_rows)
        dedupe = args.events / bare_copy(*copy_args, True, with_context, args.users, batch_rows)
        _report_statements(database_url)
        latencies, achieved, writes = (
            freshness(
                bootstrap,
                database_url,
                args.partitions,
                args.freshness_rate,
                args.freshness_s,
                args.env,
                args.pin_cpu,
                args.pin_backends,
                args.consumer_tree,
                args.freshness_late,
            )
            if args.freshness_rate
            else ([], 0.0, {})
        )
    finally:
        asyncio.run(_delete_topic(bootstrap, topic))
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
    received = f"received at {args.recorded_rate:,.0f}/s" if args.recorded_rate else "over two days"
    print_table(
        f"consumer: drain {args.events:,} events ({received}, {args.per_message}/message, "
        f"{args.partitions} partitions), one replica"
        + (f", {args.site_zones} sites keeping {ZONE}" if args.site_zones else "")
        + (", events without context" if args.without_context else "")
        + (f", replica pinned to CPU {args.pin_cpu}" if args.pin_cpu is not None else "")
        + (f", consumer from {args.consumer_tree}" if args.consumer_tree != ROOT else "")
        + "".join(f", {item}" for item in args.env),
        ["measure", "value"],
        [
            ["events stored (distinct event_id)", stored_events],
            ["replica: events/s (dedupe + rollups)", rate],
            ["bare binary COPY, unindexed table: rows/s", ceiling],
            ["ratio replica / bare COPY", f"{rate / ceiling:.0%}"],
            ["staging COPY + ON CONFLICT (dedupe, no rollups): rows/s", dedupe],
            ["ratio replica / dedupe alone", f"{rate / dedupe:.0%}"],
            ["batch write p50 (s, from histogram)", result["p50_s"]],
            ["batch write p99 (s, from histogram)", result["p99_s"]],
            ["RSS first quarter of drain (MiB)", result["rss_q1"]],
            ["RSS last quarter of drain (MiB)", result["rss_q4"]],
            ["RSS peak (MiB)", result["rss_peak"]],
        ],
    )
    if latencies:
        print_table(
            f"consumer: freshness at {args.freshness_rate:,} events/s, one event per message, "
            f"ack (202) to visible in daily_stats, {len(latencies)} probes"
            + (", late events (of the backlog's sealed days)" if args.freshness_late else "")
            + (
                f", replica{', its PostgreSQL backends' if args.pin_backends else ''} and load "
                f"pinned to CPU {args.pin_cpu}"
                if args.pin_cpu is not None
                else ""
            ),
            ["measure", "value"],
            [
                ["events/s stored meanwhile (including start-up)", achieved],
                ["p50 (s)", quantile(latencies, 0.5)],
                ["p99 (s)", quantile(latencies, 0.99)],
                ["max (s)", latencies[-1]],
                ["events per batch, mean", writes["rows_mean"]],
                [
                    "batch write p50 / p99 (s)",
                    f"{writes['write_p50_s']:.2f} / {writes['write_p99_s']:.2f}",
                ],
                ["rows inserted or updated per event, raw events aside", writes["rows_per_event"]],
                ["WAL bytes per event (the whole server's)", writes["wal_bytes_per_event"]],
            ],
        )


async def _prepare(bootstrap: str, database_url: str, topic: str, partitions: int) -> None:
    await apply_schema(database_url)
    # Absent when not preloaded on this server: the statement report is then skipped.
    with psycopg.connect(database_url, autocommit=True) as conn, contextlib.suppress(psycopg.Error):
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    await _create_topic(bootstrap, topic, partitions)


async def _create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1), NewTopic(f"{topic}.dlq", 1, 1)])
    finally:
        await admin.close()


async def _delete_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([topic, f"{topic}.dlq"])
    finally:
        await admin.close()


def _scalar(database_url: str, query: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(query).fetchone()
    return int(row[0]) if row else 0


def _report_statements(database_url: str) -> None:
    """The consumer's statements by total time (pg_stat_statements), to stderr."""
    try:
        with psycopg.connect(database_url) as conn:
            rows = conn.execute(
                "SELECT calls, round(total_exec_time)::bigint, round(mean_exec_time::numeric, 2),"
                " rows, left(regexp_replace(query, '\\s+', ' ', 'g'), 70) "
                "FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
                "WHERE d.datname = current_database() ORDER BY total_exec_time DESC LIMIT 6"
            ).fetchall()
    except psycopg.Error:
        return
    print("\npg_stat_statements (calls, total ms, mean ms, rows, query):", file=sys.stderr)
    for row in rows:
        print("  ", *row, file=sys.stderr)
    _report_updates(database_url)


def _report_updates(database_url: str) -> None:
    """The tables the drain updated most, and how many of those updates stayed in their page
    without new index entries (HOT: docs/decisions/0035-visits-updated-in-place.md)."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT relname, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables"
            " WHERE n_tup_upd > 0 ORDER BY n_tup_upd DESC LIMIT 8"
        ).fetchall()
    print("\nmost updated tables (updates, of which in place):", file=sys.stderr)
    for name, updated, in_place in rows:
        print(f"   {name} {updated} {in_place} ({in_place / updated:.0%})", file=sys.stderr)
