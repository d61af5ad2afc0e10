"""Creates the events topic and its dead-letter topic when they are missing."""

from __future__ import annotations

import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

log = logging.getLogger(__name__)

MIN_INSYNC_REPLICAS = "min.insync.replicas"


def min_insync_replicas(replication_factor: int) -> int:
    """How many replicas must hold a write before an acks=all producer is answered: two where
    there are two or more (an acknowledged event survives the loss of one broker), else one.
    The broker's default is one, with which acks=all means "the leader has it" however many
    replicas there are."""
    return min(2, replication_factor)


async def ensure_topics(
    bootstrap_servers: str, names: list[str], *, partitions: int, replication_factor: int
) -> None:
    """Waits for the broker's metadata and creates each missing topic with `partitions` and
    min.insync.replicas = min_insync_replicas(replication_factor).

    An existing topic is left as it is (its partition count is not changed: that would move
    sites between partitions and break per-site ordering); a warning says so if its
    min.insync.replicas is lower. Raises KafkaError with the broker address when the broker
    cannot be reached.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=10_000)
    try:
        await admin.start()
    except KafkaError as exc:
        raise KafkaError(
            f"cannot reach Kafka at {bootstrap_servers} ({exc!r}); is the broker up? "
            "(`make up`, or check KAFKA_BOOTSTRAP_SERVERS)"
        ) from exc
    min_insync = min_insync_replicas(replication_factor)
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in names if name not in existing]
        await _warn_of_weaker_topics(admin, [n for n in names if n in existing], min_insync)
        if not missing:
            return
        configs = {MIN_INSYNC_REPLICAS: str(min_insync)}
        new_topics = [
            NewTopic(name, partitions, replication_factor, topic_configs=configs)
            for name in missing
        ]
        response = await admin.create_topics(new_topics)
        for topic, error_code, *_ in response.topic_errors:
            error = for_code(error_code)
            # Already existing: another process created it between our list and create.
            if error_code != 0 and error is not TopicAlreadyExistsError:
                raise error(f"cannot create topic {topic!r}")
        log.info(
            "created topics %s with %d partitions, replication factor %d, %s=%d",
            missing,
            partitions,
            replication_factor,
            MIN_INSYNC_REPLICAS,
            min_insync,
        )
    finally:
        await admin.close()


async def topic_min_insync_replicas(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, int]:
    """Each topic's effective min.insync.replicas (its own setting, else the broker's)."""
    if not names:
        return {}
    resources = [
        ConfigResource(ConfigResourceType.TOPIC, name, {MIN_INSYNC_REPLICAS: None})
        for name in names
    ]
    found = {}
    for response in await admin.describe_configs(resources):
        for _error, _message, _type, name, entries, *_ in response.resources:
            for key, value, *_ in entries:
                if key == MIN_INSYNC_REPLICAS and value is not None:
                    found[str(name)] = int(value)
    return found


async def _warn_of_weaker_topics(
    admin: AIOKafkaAdminClient, names: list[str], min_insync: int
) -> None:
    try:
        current = await topic_min_insync_replicas(admin, names)
    except KafkaError as exc:  # e.g. not allowed to describe configs: not worth failing over
        log.info("could not read the topics' %s (%r)", MIN_INSYNC_REPLICAS, exc)
        return
    for name, value in current.items():
        if value < min_insync:
            log.warning(
                "topic %r has %s=%d (wanted %d for its replication factor): acks=all answers "
                "once %d replicas hold an event; raise it with kafka-configs.sh --alter "
                "--entity-type topics --entity-name %s --add-config %s=%d",
                name,
                MIN_INSYNC_REPLICAS,
                value,
                min_insync,
                value,
                name,
                MIN_INSYNC_REPLICAS,
                min_insync,
            )
