"""Topic creation against a real broker: acks=all means what it says."""

from __future__ import annotations

import logging
import uuid

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from core.topics import MIN_INSYNC_REPLICAS, ensure_topics, min_insync_replicas

pytestmark = pytest.mark.kafka

TOPIC_CONFIG = 1  # DescribeConfigs' config_source: set on the topic itself, not inherited


def test_min_insync_replicas_follows_the_replication_factor() -> None:
    assert [min_insync_replicas(rf) for rf in (1, 2, 3, 5)] == [1, 2, 2, 2]


async def test_created_topics_carry_min_insync_replicas(kafka_bootstrap: str) -> None:
    names = [f"topics-{uuid.uuid4().hex[:12]}", f"topics-{uuid.uuid4().hex[:12]}.dlq"]
    # The test broker is a single node: replication factor 1, hence min.insync.replicas 1.
    await ensure_topics(kafka_bootstrap, names, partitions=2, replication_factor=1)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        resources = [
            ConfigResource(ConfigResourceType.TOPIC, name, {MIN_INSYNC_REPLICAS: None})
            for name in names
        ]
        found = {}
        for response in await admin.describe_configs(resources):
            for _error, _message, _type, name, entries, *_ in response.resources:
                for key, value, _read_only, source, *_ in entries:
                    found[name] = (key, value, source)
        assert found == {name: (MIN_INSYNC_REPLICAS, "1", TOPIC_CONFIG) for name in names}
    finally:
        await admin.delete_topics(names)
        await admin.close()


async def test_an_existing_weaker_topic_is_left_alone_with_a_warning(
    kafka_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A topic created before min.insync.replicas was set (the broker's default is 1), met by
    a deployment whose replication factor wants 2: its configuration is the operator's call."""
    name = f"topics-{uuid.uuid4().hex[:12]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 1, 1)])
        with caplog.at_level(logging.WARNING, logger="core.topics"):
            await ensure_topics(kafka_bootstrap, [name], partitions=1, replication_factor=3)
        assert f"topic {name!r} has min.insync.replicas=1 (wanted 2" in caplog.text
    finally:
        await admin.delete_topics([name])
        await admin.close()
