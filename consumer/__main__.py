"""`python -m consumer`: one replica of the consumer group. Run up to the topic's partitions
divided by CONSUMER_WRITERS; SIGTERM or Ctrl-C stores (or abandons) the batches in hand and
leaves the group.

A replica is CONSUMER_WRITERS members of the group: each its own Kafka consumer, partitions,
batches and PostgreSQL connection, so that batches of different partitions are written side by
side rather than one after the other (a batch's cost is mostly PostgreSQL's, on one core)."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

import psycopg
from aiokafka.errors import KafkaError

from consumer.brin_ranges import summarize_new_ranges_periodically
from consumer.deadletter import DeadLetters
from consumer.loop import ConsumerLoop, ReplicaHealth, make_kafka_consumer, report_progress, tune_gc
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
    dead_letters = DeadLetters(
        settings.kafka_bootstrap_servers, settings.dlq_topic, settings.events_topic
    )
    members = [
        ConsumerLoop(
            settings,
            make_kafka_consumer(settings, **_member_options(settings, index)),
            Writer.for_replica(settings),
            dead_letters,
            stats,
            member=index,
        )
        for index in range(settings.writers)
    ]
    server = None
    if settings.metrics_port:
        health = ReplicaHealth([member.health for member in members])
        server = serve(settings.metrics_host, settings.metrics_port, stats.registry, health)
        log.info("metrics and health on http://%s:%d", settings.metrics_host, settings.metrics_port)
    periodic = [asyncio.create_task(seal_periodically(settings), name="seal")]
    periodic.append(asyncio.create_task(keep_requested_zones_periodically(settings), name="zones"))
    periodic.append(
        asyncio.create_task(summarize_new_ranges_periodically(settings), name="brin-ranges")
    )
    if settings.retention_days:
        periodic.append(
            asyncio.create_task(apply_retention_periodically(settings), name="retention")
        )
    periodic.append(
        asyncio.create_task(
            report_progress(stats, lambda: sum(m.health.assigned for m in members)),
            name="report",
        )
    )
    await dead_letters.start()
    # All at once: members joining one after another would each start a rebalance.
    await asyncio.gather(*(member.consumer.start() for member in members))
    log.info(
        "consuming %r as group %r (%d members) from %s into PostgreSQL at %s",
        settings.events_topic,
        settings.group_id,
        len(members),
        settings.kafka_bootstrap_servers,
        redacted_conninfo(settings.database_url),
    )
    runs = [asyncio.create_task(m.run(stop), name=f"member-{i}") for i, m in enumerate(members)]
    try:
        await asyncio.wait(runs, return_when=asyncio.FIRST_EXCEPTION)
        failed = [e for t in runs if t.done() and not t.cancelled() and (e := t.exception())]
        if failed:  # a member's failure ends the replica, as it would a process
            raise failed[0]
    finally:
        for task in [*runs, *periodic]:
            task.cancel()
        await asyncio.gather(*runs, return_exceptions=True)
        # A member that did not finish (another failed) leaves its write in flight: end it
        # before its connection goes.
        await asyncio.gather(*(member.abandon() for member in members))
        # Together: a member still in the group while another leaves would be pulled into
        # the rebalance that leaving starts, and wait for it.
        await asyncio.gather(*(m.consumer.stop() for m in members), return_exceptions=True)
        await dead_letters.stop()
        for member in members:
            await member.writer.close()
        if server is not None:
            server.shutdown()
        log.info("stopped")


def _member_options(settings: ConsumerSettings, index: int) -> dict[str, str]:
    """A member's Kafka client id, and its static membership id if the replica has one (each
    member needs its own)."""
    options = {"client_id": f"analytics-consumer-{index}"}
    if settings.group_instance_id and settings.writers > 1:
        options["group_instance_id"] = f"{settings.group_instance_id}-{index}"
    return options


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
