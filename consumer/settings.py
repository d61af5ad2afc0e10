"""The consumer's settings: read once from the environment in the entry point.

Each is declared, with its variable, default, unit and meaning, in core/settings.py
(docs/configuration.md lists them); this struct holds the values the consumer reads.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

import msgspec

from core import settings as declared
from core.config import ConfigError, environ
from core.settings import read_settings


class ConsumerSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Every setting of the consumer, by its declaration's field name (core/settings.py)."""

    kafka_bootstrap_servers: str = declared.KAFKA_BOOTSTRAP_SERVERS.default
    database_url: str = declared.DATABASE_URL.default
    events_topic: str = declared.EVENTS_TOPIC.default
    dlq_topic: str = declared.DLQ_TOPIC.default
    topic_partitions: int = declared.TOPIC_PARTITIONS.default
    topic_replication_factor: int = declared.TOPIC_REPLICATION_FACTOR.default
    retention_days: int = declared.RETENTION_DAYS.default
    group_id: str = declared.CONSUMER_GROUP.default
    group_instance_id: str = declared.CONSUMER_INSTANCE_ID.default
    writers: int = declared.CONSUMER_WRITERS.default
    max_batch_rows: int = declared.MAX_BATCH_ROWS.default
    max_batch_bytes: int = declared.MAX_BATCH_BYTES.default
    max_batch_age_s: float = declared.MAX_BATCH_AGE_S.default
    target_batch_write_s: float = declared.TARGET_BATCH_WRITE_S.default
    retry_initial_s: float = declared.RETRY_INITIAL_S.default
    retry_max_s: float = declared.RETRY_MAX_S.default
    shutdown_timeout_s: float = declared.SHUTDOWN_TIMEOUT_S.default
    session_timeout_ms: int = declared.SESSION_TIMEOUT_MS.default
    max_poll_interval_ms: int = declared.MAX_POLL_INTERVAL_MS.default
    visit_timeout_seconds: int = declared.VISIT_TIMEOUT_SECONDS.default
    visit_values_per_day: int = declared.VISIT_VALUES_PER_DAY.default
    auto_zones_per_site: int = declared.AUTO_ZONES_PER_SITE.default
    auto_zones_max: int = declared.AUTO_ZONES_MAX.default
    auto_zones_idle_days: int = declared.AUTO_ZONES_IDLE_DAYS.default
    metrics_host: str = declared.CONSUMER_METRICS_HOST.default
    metrics_port: int = declared.CONSUMER_METRICS_PORT.default

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ConsumerSettings:
        """Raises ConfigError naming the first variable that cannot be used."""
        return read_settings(cls, env, "consumer")


def settings_for_command(command: str) -> ConsumerSettings | None:
    """The settings from the environment for `python -m consumer[.command]`, or None after
    saying on stderr what is wrong (the command then exits with 2)."""
    try:
        return ConsumerSettings.from_env(environ())
    except ConfigError as exc:
        print(f"{command}: configuration error: {exc}", file=sys.stderr)
        return None
