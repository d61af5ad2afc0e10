"""Fixtures of the fault suite: a private broker and PostgreSQL server for the session, and
per case a topic, a database, consumer processes and an event stream."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from psycopg import sql

from consumer.schema import apply_schema
from consumer.zones import add_zone
from tests.faults.stream import EventStream, stored_ids, stored_offsets
from tests.processes import ROOT, Process, start_consumer
from tests.services import PrivateService, private_kafka, private_postgres
from tests.support import (
    assert_rollups_match_raw_rows,
    assert_visits_match_events,
    quick_consumer_settings,
    stored_event_count,
    wait_for,
)

PARTITIONS = 4


class FaultServices:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.kafka, self.bootstrap = private_kafka(base)
        self.postgres, self.server_url = private_postgres(base)

    def start(self) -> None:
        self.kafka.start()
        self.postgres.start()

    def stop(self) -> None:
        try:
            for service in (self.kafka, self.postgres):
                try:
                    service.stop()
                finally:
                    service.remove_state()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="session")
def fault_services() -> Iterator[FaultServices]:
    services = FaultServices(ROOT / ".local" / f"faults-{os.getpid()}")
    try:
        services.start()
        yield services
    finally:
        services.stop()


class FaultCase:
    """One case: its topic, database, consumer group, processes and stream."""

    def __init__(self, services: FaultServices, log_dir: Path) -> None:
        self.services = services
        self.log_dir = log_dir
        self.name = uuid.uuid4().hex[:10]
        self.topic = f"events-{self.name}"
        self.database_url = f"{services.server_url}/f_{self.name}"
        self.settings = quick_consumer_settings(
            services.bootstrap, self.database_url, self.topic, f"group-{self.name}", PARTITIONS
        )
        self.stream = EventStream(services.bootstrap, self.topic)
        self.consumers: list[Process] = []
        self.killed: set[Process] = set()

    @property
    def kafka(self) -> PrivateService:
        return self.services.kafka

    @property
    def postgres(self) -> PrivateService:
        return self.services.postgres

    async def create(self) -> None:
        with psycopg.connect(f"{self.services.server_url}/postgres", autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(f"f_{self.name}")))
        await apply_schema(self.database_url)
        # One site keeps a half-hour zone, so that its local rollups are checked too.
        await add_zone(self.database_url, "site-1", "Asia/Kolkata")
        admin = AIOKafkaAdminClient(bootstrap_servers=self.services.bootstrap)
        await admin.start()
        try:
            await admin.create_topics(
                [NewTopic(self.topic, PARTITIONS, 1), NewTopic(self.settings.dlq_topic, 1, 1)]
            )
        finally:
            await admin.close()
        await self.stream.start()

    def start_consumer(self, **env: str) -> Process:
        process = start_consumer(
            self.settings, self.log_dir, name=f"consumer-{len(self.consumers)}", **env
        )
        self.consumers.append(process)
        return process

    def kill(self, process: Process) -> None:
        process.kill()
        self.killed.add(process)

    def stored(self) -> int:
        try:
            return stored_event_count(self.database_url)
        except psycopg.OperationalError:
            return -1

    async def progress(self, timeout_s: float = 60) -> None:
        """Waits until more events are stored than now."""
        before = self.stored()
        await wait_for(
            lambda: self.stored() > before, timeout_s=timeout_s, what="the consumer to store more"
        )

    async def end_offsets(self) -> dict[int, int]:
        reader = AIOKafkaConsumer(bootstrap_servers=self.services.bootstrap)
        await reader.start()
        try:
            tps = [TopicPartition(self.topic, p) for p in range(PARTITIONS)]
            ends = await reader.end_offsets(tps)
        finally:
            await reader.stop()
        return {tp.partition: int(offset) for tp, offset in ends.items()}

    async def settle(self, timeout_s: float = 120) -> None:
        """Stops the stream, waits for the consumers to store everything in the topic, then
        checks: each accepted event stored exactly once, every rollup equal to a recount,
        every visit (its page views, duration, bounce, entry and exit) equal to a plain
        sessionization of the stored events."""
        await self.stream.stop()
        ends = await self.end_offsets()

        def caught_up() -> bool:
            try:
                stored = stored_offsets(self.database_url, self.settings.group_id, self.topic)
            except psycopg.OperationalError:
                return False
            return all(stored.get(p, 0) >= end for p, end in ends.items())

        await wait_for(caught_up, timeout_s=timeout_s, what=f"offsets to reach {ends}")
        ids = stored_ids(self.database_url)
        assert len(ids) == len(set(ids)), "an event was stored twice"
        missing = self.stream.acked - set(ids)
        assert not missing, f"{len(missing)} accepted events were not stored"
        unknown = set(ids) - self.stream.attempted
        assert not unknown, f"{len(unknown)} stored events were never sent"
        assert_rollups_match_raw_rows(self.database_url)
        assert_visits_match_events(self.database_url)

    def stop_consumers(self) -> None:
        """SIGTERM to every consumer still running; each must exit cleanly."""
        failures = []
        for process in self.consumers:
            if process in self.killed:
                continue
            code = process.terminate()
            if code != 0:
                failures.append(f"{process.name} exited with {code}:\n{process.log_tail()}")
        assert not failures, "\n".join(failures)

    async def drop(self) -> None:
        for process in self.consumers:
            process.kill()
        with psycopg.connect(f"{self.services.server_url}/postgres", autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(f"f_{self.name}")
                )
            )
        admin = AIOKafkaAdminClient(bootstrap_servers=self.services.bootstrap)
        await admin.start()
        try:
            await admin.delete_topics([self.topic, self.settings.dlq_topic])
        finally:
            await admin.close()


@pytest.fixture
async def case(fault_services: FaultServices, tmp_path: Path) -> AsyncIterator[FaultCase]:
    fault = FaultCase(fault_services, tmp_path)
    await fault.create()
    try:
        yield fault
    finally:
        if fault.stream._task is not None and not fault.stream._task.done():
            await fault.stream.stop()
        await asyncio.shield(fault.drop())
