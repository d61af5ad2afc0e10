"""Fixtures that give each test real services and its own slice of them.

Where the services come from, in order: KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL if set (what
`make test` does, after starting the local broker and server), else testcontainers where a
Docker engine answers. Each test then gets its own topic, consumer group and database, cloned
from a template that holds the schema, so tests never see each other's data.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack

import psycopg
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from psycopg import sql
from psycopg.conninfo import make_conninfo

from consumer.schema import apply_schema
from consumer.settings import ConsumerSettings
from ingest.settings import Settings
from tests.support import quick_consumer_settings

TEST_PARTITIONS = 4
DROP_DATABASE = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env().ping()
    except Exception:
        return False
    return True


@pytest.fixture(scope="session")
def _containers() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


@pytest.fixture(scope="session")
def kafka_bootstrap(_containers: ExitStack) -> str:
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        return configured
    if not _docker_answers():
        pytest.fail(
            "No Kafka: run `make test` (it starts a local broker), or set "
            "KAFKA_BOOTSTRAP_SERVERS, or start a Docker engine for testcontainers."
        )
    from testcontainers.kafka import KafkaContainer

    container = _containers.enter_context(KafkaContainer("apache/kafka:4.1.0").with_kraft())
    return str(container.get_bootstrap_server())


@pytest.fixture(scope="session")
def server_database_url(_containers: ExitStack) -> str:
    configured = os.environ.get("DATABASE_URL")
    if configured:
        return configured
    if not _docker_answers():
        pytest.fail(
            "No PostgreSQL: run `make test` (it starts a local server), or set "
            "DATABASE_URL, or start a Docker engine for testcontainers."
        )
    from testcontainers.postgres import PostgresContainer

    container = _containers.enter_context(PostgresContainer("postgres:16", driver=None))
    return str(container.get_connection_url())


def _with_dbname(url: str, dbname: str) -> str:
    return make_conninfo(url, dbname=dbname)


@pytest.fixture(scope="session")
def template_database(server_database_url: str) -> Iterator[str]:
    """A database holding the schema, cloned by every test that needs a clean one."""
    # Unique across processes and hosts sharing the server (a pid alone can repeat).
    name = f"analytics_template_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    asyncio.run(apply_schema(_with_dbname(server_database_url, name)))
    yield name
    with psycopg.connect(server_database_url, autocommit=True) as conn:
        conn.execute(DROP_DATABASE.format(sql.Identifier(name)))


@pytest.fixture
def database_url(server_database_url: str, template_database: str) -> Iterator[str]:
    """A fresh database for this test, with the schema applied."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(server_database_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template_database)
            )
        )
    yield _with_dbname(server_database_url, name)
    with psycopg.connect(server_database_url, autocommit=True) as conn:
        conn.execute(DROP_DATABASE.format(sql.Identifier(name)))


@pytest.fixture
async def topic(kafka_bootstrap: str) -> AsyncIterator[str]:
    """A fresh events topic (and its dead-letter topic) for this test."""
    name = f"events-{uuid.uuid4().hex[:12]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name, TEST_PARTITIONS, 1), NewTopic(f"{name}.dlq", TEST_PARTITIONS, 1)]
        )
        yield name
        await admin.delete_topics([name, f"{name}.dlq"])
    finally:
        await admin.close()


@pytest.fixture
def api_settings(kafka_bootstrap: str, database_url: str, topic: str) -> Settings:
    return Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        database_url=database_url,
        events_topic=topic,
        dlq_topic=f"{topic}.dlq",
        topic_partitions=TEST_PARTITIONS,
        publish_timeout_s=10.0,
        # Tests post events dated 2025 on: a ten-year window keeps them inside it.
        max_past_days=3660,
    )


@pytest.fixture
def consumer_settings(kafka_bootstrap: str, database_url: str, topic: str) -> ConsumerSettings:
    return quick_consumer_settings(
        kafka_bootstrap, database_url, topic, f"group-{uuid.uuid4().hex[:12]}", TEST_PARTITIONS
    )
