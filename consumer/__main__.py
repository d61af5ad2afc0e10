"""`python -m consumer`: one replica of the consumer group. Run as many as there are
partitions; SIGTERM or Ctrl-C stores (or abandons) the batch in hand and leaves the group."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

import psycopg
from aiokafka.errors import KafkaError

from consumer.deadletter import DeadLetters
from consumer.loop import ConsumerLoop, make_kafka_consumer, tune_gc
from consumer.metrics import ConsumerStats
from consumer.monitoring import serve
from consumer.retention import apply_retention_periodically
from consumer.schema import SchemaNotCurrent, require_current_schema
from consumer.seal import seal_periodically
from consumer.settings import ConsumerSettings, settings_for_command
from consumer.write import Writer
from consumer.zone_requests import keep_requested_zones_periodically
from core.config import redacted_conninfo, without_password
from core.logs import configure_logging
from core.topics import ensure_topics

log = logging.getLogger("consumer")


async def run(settings: ConsumerSettings, stop: asyncio.Event) -> None:
    """Checks the schema's version, prepares the topics, then consumes until `stop` is set."""
    await require_current_schema(settings.database_url)
    await ensure_topics(
        settings.kafka_bootstrap_servers,
        [settings.events_topic, settings.dlq_topic],
        partitions=settings.topic_partitions,
        replication_factor=settings.topic_replication_factor,
    )
    stats = ConsumerStats()
    consumer = make_kafka_consumer(settings)
    writer = Writer.for_replica(settings)
    dead_letters = DeadLetters(
        settings.kafka_bootstrap_servers, settings.dlq_topic, settings.events_topic
    )
    loop = ConsumerLoop(settings, consumer, writer, dead_letters, stats)
    server = None
    if settings.metrics_port:
        server = serve(settings.metrics_host, settings.metrics_port, stats.registry, loop.health)
        log.info("metrics and health on http://%s:%d", settings.metrics_host, settings.metrics_port)
    periodic = [asyncio.create_task(seal_periodically(settings), name="seal")]
    periodic.append(asyncio.create_task(keep_requested_zones_periodically(settings), name="zones"))
    if settings.retention_days:
        periodic.append(
            asyncio.create_task(apply_retention_periodically(settings), name="retention")
        )
    await dead_letters.start()
    await consumer.start()
    log.info(
        "consuming %r as group %r from %s into PostgreSQL at %s",
        settings.events_topic,
        settings.group_id,
        settings.kafka_bootstrap_servers,
        redacted_conninfo(settings.database_url),
    )
    try:
        await loop.run(stop)
    finally:
        for task in periodic:
            task.cancel()
        await consumer.stop()  # leaves the group, so the partitions move on at once
        await dead_letters.stop()
        await writer.close()
        if server is not None:
            server.shutdown()
        log.info("stopped")


async def main_async(settings: ConsumerSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.create_task(run(settings, stop), name="consumer")
    stopping = asyncio.create_task(stop.wait(), name="wait-for-signal")
    await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():  # it failed on its own: report why
        stopping.cancel()
        task.result()
        return
    try:
        # The loop notices `stop` within one poll; the whole exit is bounded.
        async with asyncio.timeout(settings.shutdown_timeout_s):
            await task
    except TimeoutError:
        log.error("shutdown took longer than %.0fs; exiting anyway", settings.shutdown_timeout_s)


def main() -> int:
    configure_logging("consumer")
    settings = settings_for_command("consumer")
    if settings is None:
        return 2
    tune_gc()
    try:
        asyncio.run(main_async(settings))
    except KafkaError as exc:
        log.error("%s", exc)
        return 1
    except SchemaNotCurrent as exc:
        log.error("PostgreSQL at %s: %s", redacted_conninfo(settings.database_url), exc)
        return 1
    except psycopg.OperationalError as exc:
        hint = f" ({exc.diag.message_hint})" if exc.diag.message_hint else ""
        log.error(
            "cannot use PostgreSQL at %s: %s%s (is it up? check DATABASE_URL)",
            redacted_conninfo(settings.database_url),
            without_password(str(exc), settings.database_url),
            hint,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
