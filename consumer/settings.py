"""The consumer's settings: read once from the environment in the entry point."""

from __future__ import annotations

import sys
from collections.abc import Mapping

import msgspec

from core.config import (
    DEFAULT_DATABASE_URL,
    DEFAULT_KAFKA_BOOTSTRAP_SERVERS,
    ConfigError,
    env_float,
    env_int,
    env_str,
    environ,
)


class ConsumerSettings(msgspec.Struct, frozen=True, kw_only=True):
    kafka_bootstrap_servers: str = DEFAULT_KAFKA_BOOTSTRAP_SERVERS
    database_url: str = DEFAULT_DATABASE_URL
    events_topic: str = "events"
    dlq_topic: str = "events.dlq"
    group_id: str = "analytics-consumer"
    # Static group membership (KIP-345) when set: unique per replica, stable across restarts.
    group_instance_id: str = ""
    topic_partitions: int = 12
    topic_replication_factor: int = 1
    # A batch is written when it holds this many events or bytes, or is this old.
    max_batch_rows: int = 40_000
    max_batch_bytes: int = 16 * 1024 * 1024
    max_batch_age_s: float = 0.5
    # Backoff between attempts while PostgreSQL (or the dead-letter topic) is unavailable.
    retry_initial_s: float = 0.2
    retry_max_s: float = 10.0
    # SIGTERM: how long to finish the batch in hand before abandoning it and leaving.
    shutdown_timeout_s: float = 10.0
    session_timeout_ms: int = 10_000
    max_poll_interval_ms: int = 300_000
    # Day partitions of raw events older than this are dropped; 0 keeps everything.
    retention_days: int = 0
    # Zones kept per site, and in all, because stats are read in them
    # (consumer/zone_requests.py); 0 keeps none. Dropped when not requested for this many days.
    auto_zones_per_site: int = 1
    auto_zones_max: int = 100
    auto_zones_idle_days: int = 30
    # Prometheus metrics on 127.0.0.1:<port>/metrics; 0 turns them off.
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ConsumerSettings:
        return cls(
            kafka_bootstrap_servers=env_str(
                env, "KAFKA_BOOTSTRAP_SERVERS", DEFAULT_KAFKA_BOOTSTRAP_SERVERS
            ),
            database_url=env_str(env, "DATABASE_URL", DEFAULT_DATABASE_URL),
            events_topic=env_str(env, "EVENTS_TOPIC", "events"),
            dlq_topic=env_str(env, "DLQ_TOPIC", "events.dlq"),
            group_id=env_str(env, "CONSUMER_GROUP", "analytics-consumer"),
            group_instance_id=env_str(env, "CONSUMER_INSTANCE_ID", ""),
            topic_partitions=env_int(env, "TOPIC_PARTITIONS", 12, minimum=1),
            topic_replication_factor=env_int(env, "TOPIC_REPLICATION_FACTOR", 1, minimum=1),
            max_batch_rows=env_int(env, "MAX_BATCH_ROWS", 40_000, minimum=1),
            max_batch_bytes=env_int(env, "MAX_BATCH_BYTES", 16 * 1024 * 1024, minimum=1024),
            max_batch_age_s=env_float(env, "MAX_BATCH_AGE_S", 0.5, minimum=0.001),
            retry_initial_s=env_float(env, "RETRY_INITIAL_S", 0.2, minimum=0.001),
            retry_max_s=env_float(env, "RETRY_MAX_S", 10.0, minimum=0.001),
            shutdown_timeout_s=env_float(env, "SHUTDOWN_TIMEOUT_S", 10.0, minimum=0.1),
            session_timeout_ms=env_int(env, "SESSION_TIMEOUT_MS", 10_000, minimum=1000),
            max_poll_interval_ms=env_int(env, "MAX_POLL_INTERVAL_MS", 300_000, minimum=1000),
            retention_days=env_int(env, "RETENTION_DAYS", 0),
            auto_zones_per_site=env_int(env, "AUTO_ZONES_PER_SITE", 1, minimum=0),
            auto_zones_max=env_int(env, "AUTO_ZONES_MAX", 100, minimum=0),
            auto_zones_idle_days=env_int(env, "AUTO_ZONES_IDLE_DAYS", 30, minimum=1),
            metrics_host=env_str(env, "CONSUMER_METRICS_HOST", "127.0.0.1"),
            metrics_port=env_int(env, "CONSUMER_METRICS_PORT", 0),
        )


def settings_for_command(command: str) -> ConsumerSettings | None:
    """The settings from the environment for `python -m consumer[.command]`, or None after
    saying on stderr what is wrong (the command then exits with 2)."""
    try:
        return ConsumerSettings.from_env(environ())
    except ConfigError as exc:
        print(f"{command}: configuration error: {exc}", file=sys.stderr)
        return None
