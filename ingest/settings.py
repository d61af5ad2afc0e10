"""The API's settings: read once from the environment in the entry point, then passed down.

Each is declared, with its variable, default, unit and meaning, in core/settings.py
(docs/configuration.md lists them); this struct holds the values the API reads.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from core import settings as declared
from core.settings import read_settings
from ingest.keys import load_write_keys


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Every setting of the API, by its declaration's field name (see core/settings.py)."""

    kafka_bootstrap_servers: str = declared.KAFKA_BOOTSTRAP_SERVERS.default
    database_url: str = declared.DATABASE_URL.default
    events_topic: str = declared.EVENTS_TOPIC.default
    dlq_topic: str = declared.DLQ_TOPIC.default
    topic_partitions: int = declared.TOPIC_PARTITIONS.default
    topic_replication_factor: int = declared.TOPIC_REPLICATION_FACTOR.default
    retention_days: int = declared.RETENTION_DAYS.default
    # --- where it listens, Kafka, the stats pool ---
    host: str = declared.HOST.default
    port: int = declared.PORT.default
    workers: int = declared.WEB_CONCURRENCY.default
    publish_timeout_s: float = declared.PUBLISH_TIMEOUT_S.default
    producer_linger_ms: int = declared.PRODUCER_LINGER_MS.default
    producer_max_batch_bytes: int = declared.PRODUCER_MAX_BATCH_BYTES.default
    producer_compression: str = declared.PRODUCER_COMPRESSION.default
    db_pool_min_size: int = declared.DB_POOL_MIN_SIZE.default
    db_pool_max_size: int = declared.DB_POOL_MAX_SIZE.default
    db_timeout_s: float = declared.DB_TIMEOUT_S.default
    # --- ingest: limits, overload, time, keys, CORS ---
    max_event_bytes: int = declared.MAX_EVENT_BYTES.default
    max_body_bytes: int = declared.MAX_BODY_BYTES.default
    max_batch_events: int = declared.MAX_BATCH_EVENTS.default
    max_in_flight_events: int = declared.MAX_IN_FLIGHT_EVENTS.default
    retry_after_s: int = declared.RETRY_AFTER_S.default
    max_future_s: float = declared.MAX_FUTURE_S.default
    max_past_days: int = declared.MAX_PAST_DAYS.default
    body_read_timeout_s: float = declared.BODY_READ_TIMEOUT_S.default
    keep_alive_timeout_s: int = declared.KEEP_ALIVE_TIMEOUT_S.default
    max_connections: int = declared.MAX_CONNECTIONS.default
    max_connections_per_client: int = declared.MAX_CONNECTIONS_PER_CLIENT.default
    max_header_bytes: int = declared.MAX_HEADER_BYTES.default
    produce_site_arrays: bool = declared.PRODUCE_SITE_ARRAYS.default
    produce_coalesce: bool = declared.PRODUCE_COALESCE.default
    write_keys: dict[str, list[str]] = msgspec.field(
        default_factory=declared.WRITE_KEYS.default_copy
    )
    cors_allow_origins: list[str] = msgspec.field(
        default_factory=declared.CORS_ALLOW_ORIGINS.default_copy
    )
    hot_sites: dict[str, int] = msgspec.field(default_factory=declared.HOT_SITES.default_copy)
    gc_gen0_threshold: int = declared.GC_GEN0_THRESHOLD.default
    # --- the browser route's visitors ---
    visitor_key: str = declared.VISITOR_KEY.default
    visitor_salt_refresh_s: float = declared.VISITOR_SALT_REFRESH_S.default
    # --- stats ---
    stats_read_keys: dict[str, tuple[str, ...]] = msgspec.field(
        default_factory=declared.STATS_READ_KEYS.default_copy
    )
    stats_rate_limit_per_s: float = declared.STATS_RATE_LIMIT_PER_S.default
    stats_rate_burst: int = declared.STATS_RATE_BURST.default
    stats_client_rate_limit_per_s: float = declared.STATS_CLIENT_RATE_LIMIT_PER_S.default
    stats_client_rate_burst: int = declared.STATS_CLIENT_RATE_BURST.default
    stats_key_failures_per_min: float = declared.STATS_KEY_FAILURES_PER_MIN.default
    stats_key_failure_burst: int = declared.STATS_KEY_FAILURE_BURST.default
    trusted_proxy_hops: int = declared.TRUSTED_PROXY_HOPS.default
    stats_statement_timeout_ms: int = declared.STATS_STATEMENT_TIMEOUT_MS.default
    stats_lock_timeout_ms: int = declared.STATS_LOCK_TIMEOUT_MS.default
    stats_raw_concurrency: int = declared.STATS_RAW_CONCURRENCY.default
    stats_raw_statement_timeout_ms: int = declared.STATS_RAW_STATEMENT_TIMEOUT_MS.default
    stats_costly_concurrency: int = declared.STATS_COSTLY_CONCURRENCY.default
    stats_costly_wait_ms: int = declared.STATS_COSTLY_WAIT_MS.default
    stats_exact_visitors_max_rows: int = declared.STATS_EXACT_VISITORS_MAX_ROWS.default
    stats_answer_cache_mb: int = declared.STATS_ANSWER_CACHE_MB.default
    stats_warm_connections: bool = declared.STATS_WARM_CONNECTIONS.default
    dashboard_refresh_s: int = declared.DASHBOARD_REFRESH_S.default
    # --- exports ---
    export_concurrency: int = declared.EXPORT_CONCURRENCY.default
    export_max_sending: int = declared.EXPORT_MAX_SENDING.default
    export_max_bytes: int = declared.EXPORT_MAX_BYTES.default
    export_send_deadline_s: float = declared.EXPORT_SEND_DEADLINE_S.default
    export_min_send_bytes_per_s: int = declared.EXPORT_MIN_SEND_BYTES_PER_S.default

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Raises ConfigError naming the first variable that cannot be used."""
        # WRITE_KEYS may come from WRITE_KEYS_FILE instead: ingest.keys reads the two.
        return read_settings(cls, env, "api", write_keys=load_write_keys(env))
