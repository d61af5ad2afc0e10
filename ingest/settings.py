"""The API's settings: read once from the environment in the entry point, then passed down."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from core.config import (
    DEFAULT_DATABASE_URL,
    DEFAULT_KAFKA_BOOTSTRAP_SERVERS,
    ConfigError,
    env_float,
    env_int,
    env_site_keys,
    env_str,
)
from ingest.keys import load_write_keys
from ingest.time_window import MAX_PAST_DAYS_LIMIT


def parse_hot_sites(raw: str) -> dict[str, int]:
    """`HOT_SITES=site-a:4,site-b:8`: each named site spread over that many sub-keys."""
    spread: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        site, _, count = item.rpartition(":")
        if not site or not count.isdigit() or int(count) < 1:
            raise ConfigError(f"HOT_SITES must look like site-a:4,site-b:8, got {item!r}")
        spread[site] = int(count)
    return spread


def parse_origins(raw: str) -> list[str]:
    """`CORS_ALLOW_ORIGINS=https://a.example, https://b.example`: entries trimmed, empty ones
    dropped (a space after a comma must not make an origin that never matches)."""
    return [origin for origin in (part.strip() for part in raw.split(",")) if origin]


def _max_past_days(env: Mapping[str, str]) -> int:
    days = env_int(env, "MAX_PAST_DAYS", 31, minimum=1)
    if days > MAX_PAST_DAYS_LIMIT:
        # Each day is a partition the consumer may create: no setting makes that unbounded.
        raise ConfigError(f"MAX_PAST_DAYS must be at most {MAX_PAST_DAYS_LIMIT}, got {days}")
    return days


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Every setting of the API, each from the environment variable of the same name in
    capitals. The ingest edge's own (see the README's limits table):

    - MAX_PAST_DAYS (31, days, 1-3660): an event's UTC day must be today or one of the
      MAX_PAST_DAYS - 1 days before it; older ones are refused (400 timestamp_too_old).
      With the clamp of MAX_FUTURE_S, one request reaches at most MAX_PAST_DAYS + 1 days.
    - RETENTION_DAYS (0 = keep everything, days): the consumer's; days retention has dropped
      are refused (400 timestamp_expired). Set it to the consumers' value.
    - BODY_READ_TIMEOUT_S (10, seconds): a body not received whole within it is refused
      (408 body_timeout); the timer starts once the headers are in.
    - KEEP_ALIVE_TIMEOUT_S (5, seconds): an idle keep-alive connection is closed after it.
    - MAX_CONNECTIONS (1000, per worker process): past it uvicorn answers 503 at once.
    - MAX_HEADER_BYTES (16384, bytes): the request line and headers together, at most.
    - MAX_BODY_BYTES and MAX_EVENT_BYTES bound a body both as received and decompressed.
    """

    kafka_bootstrap_servers: str = DEFAULT_KAFKA_BOOTSTRAP_SERVERS
    database_url: str = DEFAULT_DATABASE_URL
    events_topic: str = "events"
    dlq_topic: str = "events.dlq"
    topic_partitions: int = 12
    topic_replication_factor: int = 1
    host: str = "127.0.0.1"
    port: int = 3001
    # How long a request may wait for Kafka's ack before it is answered 503.
    publish_timeout_s: float = 5.0
    producer_linger_ms: int = 0
    producer_max_batch_bytes: int = 1024 * 1024
    producer_compression: str = "zstd"
    db_pool_min_size: int = 1
    db_pool_max_size: int = 8
    # How long a stats query may wait for a pooled connection before answering 503.
    db_timeout_s: float = 2.0
    # --- ingest: limits, overload, time, keys, CORS, workers (see README, Ingest API) ---
    max_event_bytes: int = 32 * 1024
    max_body_bytes: int = 1024 * 1024
    max_batch_events: int = 1000
    # Events awaiting Kafka's ack across all requests; beyond it requests get 503.
    max_in_flight_events: int = 20_000
    # Retry-After (seconds) sent with 503 answers.
    retry_after_s: int = 1
    # Timestamps further than this ahead of receipt are clamped to the receipt time.
    max_future_s: float = 3600.0
    # Events go to Kafka as arrays (event-batch.v1), one message per partition, not one
    # message per event...
    produce_site_arrays: bool = True
    # ...and the events of all requests published in one turn of the event loop share them.
    produce_coalesce: bool = True
    # Per-site write keys {site_id: [key, ...]}; empty means keys are not required.
    write_keys: dict[str, list[str]] = msgspec.field(default_factory=dict)
    cors_allow_origins: list[str] = msgspec.field(default_factory=lambda: ["*"])
    workers: int = 1
    # The garbage collector's youngest-generation threshold in a serving process (see
    # ingest.app.tune_gc); 0 keeps Python's default.
    gc_gen0_threshold: int = 10_000
    # Hot sites spread over N sub-keys (partitions), trading their order for throughput.
    hot_sites: dict[str, int] = msgspec.field(default_factory=dict)
    # Stats API (ingest/stats_api.py): read keys per site (sites without keys are public),
    # a token-bucket rate limit per caller (0 turns it off), how many daily user rows an
    # exact multi-day unique-user count may read before a sketch answers instead, and how
    # often the dashboard refreshes.
    stats_read_keys: dict[str, tuple[str, ...]] = msgspec.field(default_factory=dict)
    stats_rate_limit_per_s: float = 100.0
    stats_rate_burst: int = 200
    stats_exact_visitors_max_rows: int = 10_000
    dashboard_refresh_s: int = 10
    # --- stats under abuse (see README, Stats API limits) ---
    # Per client address, before any key is checked (0 turns it off); the per-key limit above
    # applies after a key is checked. Unset in the environment, the per-key values apply
    # (so STATS_RATE_LIMIT_PER_S=0 still turns every request limit off).
    stats_client_rate_limit_per_s: float = 100.0
    stats_client_rate_burst: int = 200
    # Failed read-key attempts (401/403) per client address; beyond them, 429 before a key is
    # even compared.
    stats_key_failures_per_min: float = 10.0
    stats_key_failure_burst: int = 20
    # How many proxies we run in front of the API: the client is the address that many hops
    # from the right of X-Forwarded-For (0: the header is ignored, the peer is the client).
    trusted_proxy_hops: int = 0
    # Per stats connection: a statement running longer, or waiting longer for a lock, is
    # cancelled and answered 503 with Retry-After (0 turns a timeout off).
    stats_statement_timeout_ms: int = 5000
    stats_lock_timeout_ms: int = 1000
    # --- ingest edge: time window, slow clients (see the docstring above) ---
    max_past_days: int = 31
    retention_days: int = 0
    body_read_timeout_s: float = 10.0
    keep_alive_timeout_s: int = 5
    max_connections: int = 1000
    max_header_bytes: int = 16 * 1024

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        return cls(
            kafka_bootstrap_servers=env_str(
                env, "KAFKA_BOOTSTRAP_SERVERS", DEFAULT_KAFKA_BOOTSTRAP_SERVERS
            ),
            database_url=env_str(env, "DATABASE_URL", DEFAULT_DATABASE_URL),
            events_topic=env_str(env, "EVENTS_TOPIC", "events"),
            dlq_topic=env_str(env, "DLQ_TOPIC", "events.dlq"),
            topic_partitions=env_int(env, "TOPIC_PARTITIONS", 12, minimum=1),
            topic_replication_factor=env_int(env, "TOPIC_REPLICATION_FACTOR", 1, minimum=1),
            host=env_str(env, "HOST", "127.0.0.1"),
            port=env_int(env, "PORT", 3001, minimum=0),
            publish_timeout_s=env_float(env, "PUBLISH_TIMEOUT_S", 5.0, minimum=0.1),
            producer_linger_ms=env_int(env, "PRODUCER_LINGER_MS", 0),
            producer_max_batch_bytes=env_int(
                env, "PRODUCER_MAX_BATCH_BYTES", 1024 * 1024, minimum=1024
            ),
            producer_compression=env_str(env, "PRODUCER_COMPRESSION", "zstd"),
            db_pool_min_size=env_int(env, "DB_POOL_MIN_SIZE", 1, minimum=0),
            db_pool_max_size=env_int(env, "DB_POOL_MAX_SIZE", 8, minimum=1),
            db_timeout_s=env_float(env, "DB_TIMEOUT_S", 2.0, minimum=0.1),
            max_event_bytes=env_int(env, "MAX_EVENT_BYTES", 32 * 1024, minimum=256),
            max_body_bytes=env_int(env, "MAX_BODY_BYTES", 1024 * 1024, minimum=256),
            max_batch_events=env_int(env, "MAX_BATCH_EVENTS", 1000, minimum=1),
            max_in_flight_events=env_int(env, "MAX_IN_FLIGHT_EVENTS", 20_000, minimum=1),
            retry_after_s=env_int(env, "RETRY_AFTER_S", 1, minimum=1),
            max_future_s=env_float(env, "MAX_FUTURE_S", 3600.0),
            produce_site_arrays=env_str(env, "PRODUCE_SITE_ARRAYS", "1") not in ("0", "false"),
            produce_coalesce=env_str(env, "PRODUCE_COALESCE", "1") not in ("0", "false"),
            write_keys=load_write_keys(env),
            cors_allow_origins=parse_origins(env_str(env, "CORS_ALLOW_ORIGINS", "*")),
            workers=env_int(env, "WEB_CONCURRENCY", 1, minimum=1),
            gc_gen0_threshold=env_int(env, "GC_GEN0_THRESHOLD", 10_000),
            hot_sites=parse_hot_sites(env_str(env, "HOT_SITES", "")),
            stats_read_keys=env_site_keys(env, "STATS_READ_KEYS"),
            stats_rate_limit_per_s=env_float(env, "STATS_RATE_LIMIT_PER_S", 100.0),
            stats_rate_burst=env_int(env, "STATS_RATE_BURST", 200, minimum=1),
            stats_exact_visitors_max_rows=env_int(env, "STATS_EXACT_VISITORS_MAX_ROWS", 10_000),
            dashboard_refresh_s=env_int(env, "DASHBOARD_REFRESH_S", 10, minimum=1),
            # --- stats under abuse ---
            stats_client_rate_limit_per_s=env_float(
                env,
                "STATS_CLIENT_RATE_LIMIT_PER_S",
                env_float(env, "STATS_RATE_LIMIT_PER_S", 100.0),
            ),
            stats_client_rate_burst=env_int(
                env,
                "STATS_CLIENT_RATE_BURST",
                env_int(env, "STATS_RATE_BURST", 200, minimum=1),
                minimum=1,
            ),
            stats_key_failures_per_min=env_float(env, "STATS_KEY_FAILURES_PER_MIN", 10.0),
            stats_key_failure_burst=env_int(env, "STATS_KEY_FAILURE_BURST", 20, minimum=1),
            trusted_proxy_hops=env_int(env, "TRUSTED_PROXY_HOPS", 0),
            stats_statement_timeout_ms=env_int(env, "STATS_STATEMENT_TIMEOUT_MS", 5000),
            stats_lock_timeout_ms=env_int(env, "STATS_LOCK_TIMEOUT_MS", 1000),
            # --- ingest edge ---
            max_past_days=_max_past_days(env),
            retention_days=env_int(env, "RETENTION_DAYS", 0),
            body_read_timeout_s=env_float(env, "BODY_READ_TIMEOUT_S", 10.0, minimum=0.1),
            keep_alive_timeout_s=env_int(env, "KEEP_ALIVE_TIMEOUT_S", 5, minimum=1),
            max_connections=env_int(env, "MAX_CONNECTIONS", 1000, minimum=1),
            max_header_bytes=env_int(env, "MAX_HEADER_BYTES", 16 * 1024, minimum=1024),
        )
