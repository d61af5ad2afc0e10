"""Creates the events topic and its dead-letter topic when they are missing."""

from __future__ import annotations

import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

log = logging.getLogger(__name__)


async def ensure_topics(
    bootstrap_servers: str, names: list[str], *, partitions: int, replication_factor: int
) -> None:
    """Waits for the broker's metadata and creates each missing topic with `partitions`.

    An existing topic is left as it is (its partition count is not changed: that would move
    sites between partitions and break per-site ordering). Raises KafkaError with the
    broker address when the broker cannot be reached.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=10_000)
    try:
        await admin.start()
    except KafkaError as exc:
        raise KafkaError(
            f"cannot reach Kafka at {bootstrap_servers} ({exc!r}); is the broker up? "
            "(`make up`, or check KAFKA_BOOTSTRAP_SERVERS)"
        ) from exc
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in names if name not in existing]
        if not missing:
            return
        new_topics = [NewTopic(name, partitions, replication_factor) for name in missing]
        response = await admin.create_topics(new_topics)
        for topic, error_code, *_ in response.topic_errors:
            error = for_code(error_code)
            # Already existing: another process created it between our list and create.
            if error_code != 0 and error is not TopicAlreadyExistsError:
                raise error(f"cannot create topic {topic!r}")
        log.info("created topics %s with %d partitions", missing, partitions)
    finally:
        await admin.close()
