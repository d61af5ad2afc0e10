"""Every setting of both processes, declared once: its environment variable, default, unit
(in the name), meaning, and which process reads it.

`ingest.settings.Settings` and `consumer.settings.ConsumerSettings` take their defaults from
these declarations and are read with `read_settings`; `python -m core.settings --markdown`
writes the configuration reference (docs/configuration.md, which a unit test compares with
these declarations).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import copy
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

import msgspec

from core.config import (
    ConfigError,
    parse_hot_sites,
    parse_number,
    parse_origins,
    parse_site_keys,
    parse_switch,
    parse_whole,
)

T = TypeVar("T")
S = TypeVar("S", bound=msgspec.Struct)

Process = Literal["api", "consumer"]
ReadBy = Literal["api", "consumer", "both"]

# No configuration may open an unbounded past-time window (ingest/time_window.py): each day
# is a partition the consumer may create. Ten years of daily partitions at most.
MAX_PAST_DAYS_LIMIT = 3660


@dataclass(frozen=True, kw_only=True)
class Setting(Generic[T]):
    """One environment variable. Unset or blank, it takes `default` (or the value of
    `fallback`, another setting); set, it is parsed by the type of `default` (whole number,
    number, on/off switch, text) or by `parse`, and numbers are checked against
    `minimum`/`maximum`. `field` is the settings struct's attribute (the variable's name in
    lower case unless given); `read_alone` settings are read where they are used instead."""

    env: str
    default: T
    doc: str
    read_by: ReadBy
    field: str = ""
    minimum: float | None = 0
    maximum: float | None = None
    parse: Callable[[str], T] | None = None
    fallback: Setting[T] | None = None
    read_alone: bool = False

    @property
    def attribute(self) -> str:
        return self.field or self.env.lower()

    def default_copy(self) -> T:
        """The default, fresh for each struct (a list or a dict must not be shared)."""
        return copy.deepcopy(self.default)

    def read(self, env: Mapping[str, str]) -> T:
        """The value in `env`, or raises ConfigError naming the variable."""
        if self.parse is None and not isinstance(self.default, bool | int | float | str):
            raise TypeError(f"{self.env} has no parser: its process reads it (read_settings)")
        raw = env.get(self.env, "").strip()
        if not raw:
            return self.fallback.read(env) if self.fallback is not None else self.default_copy()
        if self.parse is not None:
            return self.parse(raw)
        value: object
        if isinstance(self.default, bool):
            value = parse_switch(raw)
        elif isinstance(self.default, int):
            value = parse_whole(self.env, raw)
        elif isinstance(self.default, float):
            value = parse_number(self.env, raw)
        else:
            value = raw
        if isinstance(value, int | float) and not isinstance(value, bool):
            self._check_range(value)
        return value  # type: ignore[return-value]  # of the type of `default`, checked above

    def _check_range(self, value: float) -> None:
        if self.minimum is not None and value < self.minimum:
            raise ConfigError(f"{self.env} must be at least {self.minimum}, got {value}")
        if self.maximum is not None and value > self.maximum:
            raise ConfigError(f"{self.env} must be at most {self.maximum}, got {value}")


DECLARED: list[Setting[Any]] = []


def _declare(setting: Setting[T]) -> Setting[T]:
    DECLARED.append(setting)
    return setting


def read_settings(cls: type[S], env: Mapping[str, str], process: Process, **given: Any) -> S:
    """A `cls` holding every setting `process` reads, from `env`. `given` holds the values a
    process parses itself (e.g. the API's WRITE_KEYS, which may come from a file). Raises
    ConfigError naming the first variable that cannot be used."""
    values = {
        setting.attribute: (
            given.pop(setting.attribute) if setting.attribute in given else setting.read(env)
        )
        for setting in DECLARED
        if setting.read_by in (process, "both") and not setting.read_alone
    }
    if given:
        raise TypeError(f"not settings of the {process}: {sorted(given)}")
    return cls(**values)


# --- both processes ---
KAFKA_BOOTSTRAP_SERVERS = _declare(
    Setting(
        env="KAFKA_BOOTSTRAP_SERVERS",
        default="127.0.0.1:19092",
        doc="Kafka brokers (host:port, comma-separated); set to another address, "
        "`make` starts no local Kafka",
        read_by="both",
    )
)
DATABASE_URL = _declare(
    Setting(
        env="DATABASE_URL",
        default="postgresql://postgres@127.0.0.1:15432/analytics",
        doc="PostgreSQL (a URL or key=value pairs; its password is never logged); set to "
        "another address, `make` starts no local PostgreSQL",
        read_by="both",
    )
)
EVENTS_TOPIC = _declare(
    Setting(env="EVENTS_TOPIC", default="events", doc="the topic events go to", read_by="both")
)
DLQ_TOPIC = _declare(
    Setting(
        env="DLQ_TOPIC",
        default="events.dlq",
        doc="dead-letter topic for messages that cannot be stored",
        read_by="both",
    )
)
TOPIC_PARTITIONS = _declare(
    Setting(
        env="TOPIC_PARTITIONS",
        default=12,
        minimum=1,
        doc="partitions of a topic created at start (existing topics are left as they are)",
        read_by="both",
    )
)
TOPIC_REPLICATION_FACTOR = _declare(
    Setting(
        env="TOPIC_REPLICATION_FACTOR",
        default=1,
        minimum=1,
        doc="replication factor of created topics (min.insync.replicas 2 from 2 up); use 3 "
        "on a real cluster",
        read_by="both",
    )
)


def parse_retention_days(raw: str) -> int:
    """0 (keep everything) or 2 and more: the API accepts events from the day after the first
    day retention keeps (ingest/time_window.py), so with 1 it would accept no past day."""
    days = parse_whole("RETENTION_DAYS", raw)
    if days < 0 or days == 1:
        raise ConfigError(f"RETENTION_DAYS must be 0 (keep all) or at least 2, got {days}")
    return days


RETENTION_DAYS = _declare(
    Setting(
        env="RETENTION_DAYS",
        default=0,
        minimum=None,
        parse=parse_retention_days,
        doc="days of raw events the consumer keeps (0: all; else at least 2); the API accepts "
        "events from the day after the first day kept, a day of margin for consumer lag, and "
        "refuses older ones (400 `timestamp_expired`): give both the same value",
        read_by="both",
    )
)
LOG_LEVEL = _declare(
    Setting(
        env="LOG_LEVEL",
        default="INFO",
        doc="logging level: `DEBUG`, `INFO`, `WARNING` or `ERROR`",
        read_by="both",
        read_alone=True,
    )
)

# --- the API: where it listens, Kafka, the stats pool ---
HOST = _declare(Setting(env="HOST", default="127.0.0.1", doc="address to listen on", read_by="api"))
PORT = _declare(Setting(env="PORT", default=3001, doc="port to listen on", read_by="api"))
WEB_CONCURRENCY = _declare(
    Setting(
        env="WEB_CONCURRENCY",
        field="workers",
        default=1,
        minimum=1,
        doc="uvicorn worker processes, each with its own producer",
        read_by="api",
    )
)
PUBLISH_TIMEOUT_S = _declare(
    Setting(
        env="PUBLISH_TIMEOUT_S",
        default=5.0,
        minimum=0.1,
        doc="longest wait for Kafka's ack before a request is answered 503",
        read_by="api",
    )
)
PRODUCER_LINGER_MS = _declare(
    Setting(
        env="PRODUCER_LINGER_MS",
        default=0,
        doc="producer linger; above 0 it caps throughput at concurrency ÷ linger",
        read_by="api",
    )
)
PRODUCER_MAX_BATCH_BYTES = _declare(
    Setting(
        env="PRODUCER_MAX_BATCH_BYTES",
        default=1024 * 1024,
        minimum=1024,
        doc="largest produce batch per partition",
        read_by="api",
    )
)
PRODUCER_COMPRESSION = _declare(
    Setting(
        env="PRODUCER_COMPRESSION",
        default="zstd",
        doc="`zstd`, `lz4`, `snappy`, `gzip`, or `none`",
        read_by="api",
    )
)
DB_POOL_MIN_SIZE = _declare(
    Setting(
        env="DB_POOL_MIN_SIZE",
        default=8,
        doc="stats connections the pool keeps open (at most DB_POOL_MAX_SIZE): each is warmed "
        "before it serves, so a page's questions after a quiet spell find them ready rather "
        "than wait for new ones",
        read_by="api",
    )
)
DB_POOL_MAX_SIZE = _declare(
    Setting(
        env="DB_POOL_MAX_SIZE",
        default=8,
        minimum=1,
        doc="stats connections the pool opens at most",
        read_by="api",
    )
)
DB_TIMEOUT_S = _declare(
    Setting(
        env="DB_TIMEOUT_S",
        default=2.0,
        minimum=0.1,
        doc="longest wait of a stats request for a pooled connection before answering 503",
        read_by="api",
    )
)

# --- the API: ingest limits, overload, time, keys, CORS ---
MAX_EVENT_BYTES = _declare(
    Setting(
        env="MAX_EVENT_BYTES",
        default=32 * 1024,
        minimum=256,
        doc="largest event: a whole `/event` body, or one item of a batch",
        read_by="api",
    )
)
MAX_BODY_BYTES = _declare(
    Setting(
        env="MAX_BODY_BYTES",
        default=1024 * 1024,
        minimum=256,
        doc="largest request body, both as received and decompressed",
        read_by="api",
    )
)
MAX_BATCH_EVENTS = _declare(
    Setting(
        env="MAX_BATCH_EVENTS",
        default=1000,
        minimum=1,
        doc="most events in one `/events` batch",
        read_by="api",
    )
)
MAX_IN_FLIGHT_EVENTS = _declare(
    Setting(
        env="MAX_IN_FLIGHT_EVENTS",
        default=20_000,
        minimum=1,
        doc="events awaiting Kafka's ack across all requests; beyond it requests get "
        "503 `overloaded`",
        read_by="api",
    )
)
RETRY_AFTER_S = _declare(
    Setting(
        env="RETRY_AFTER_S",
        default=1,
        minimum=1,
        doc="`Retry-After` of 503 answers",
        read_by="api",
    )
)
MAX_FUTURE_S = _declare(
    Setting(
        env="MAX_FUTURE_S",
        default=3600.0,
        doc="a timestamp further than this ahead of its receipt is clamped to the receipt time; "
        "stats then know no event is dated past now plus this and 15 minutes, and read a range "
        "ending after that to its next UTC midnight: give every API process the same value, "
        "and after lowering it wait the old value before relying on today's stats",
        read_by="api",
    )
)
MAX_PAST_DAYS = _declare(
    Setting(
        env="MAX_PAST_DAYS",
        default=31,
        minimum=1,
        maximum=MAX_PAST_DAYS_LIMIT,
        doc="days of the past-time window, today included; older events are refused "
        "(400 `timestamp_too_old`)",
        read_by="api",
    )
)
BODY_READ_TIMEOUT_S = _declare(
    Setting(
        env="BODY_READ_TIMEOUT_S",
        default=10.0,
        minimum=0.1,
        doc="longest time to receive a body once the headers are in (408 `body_timeout`)",
        read_by="api",
    )
)
KEEP_ALIVE_TIMEOUT_S = _declare(
    Setting(
        env="KEEP_ALIVE_TIMEOUT_S",
        default=5,
        minimum=1,
        doc="an idle keep-alive connection, or a request head still incomplete, is closed after it",
        read_by="api",
    )
)
MAX_CONNECTIONS = _declare(
    Setting(
        env="MAX_CONNECTIONS",
        default=1000,
        minimum=1,
        doc="open connections, or requests running, per worker process; past it a request "
        "is answered 503 `overloaded` with Retry-After",
        read_by="api",
    )
)
MAX_CONNECTIONS_PER_CLIENT = _declare(
    Setting(
        env="MAX_CONNECTIONS_PER_CLIENT",
        default=64,
        doc="open connections one client address (an IPv6 /64) may hold per worker process "
        "(0: no cap); a connection past it is answered 429 `too_many_connections` and "
        "closed. Off behind proxies (TRUSTED_PROXY_HOPS > 0): cap connections there",
        read_by="api",
    )
)
MAX_HEADER_BYTES = _declare(
    Setting(
        env="MAX_HEADER_BYTES",
        default=16 * 1024,
        minimum=1024,
        doc="the request line and headers together",
        read_by="api",
    )
)
PRODUCE_SITE_ARRAYS = _declare(
    Setting(
        env="PRODUCE_SITE_ARRAYS",
        default=True,
        doc="events go to Kafka as arrays (`event-batch.v1`), one message per partition; "
        "0: one `event.v1` message per event, and no coalescing",
        read_by="api",
    )
)
PRODUCE_COALESCE = _declare(
    Setting(
        env="PRODUCE_COALESCE",
        default=True,
        doc="the events of all requests queued in one event-loop turn share one message per "
        "partition; 0: each request sends its own",
        read_by="api",
    )
)
WRITE_KEYS = _declare(
    Setting[dict[str, list[str]]](
        env="WRITE_KEYS",
        default={},
        doc='per-site write keys, a JSON object `{"site_id": ["key", ...]}`; unset, none '
        "are required",
        read_by="api",
    )
)
WRITE_KEYS_FILE = _declare(
    Setting(
        env="WRITE_KEYS_FILE",
        default="",
        doc="a file holding the WRITE_KEYS object instead (set one of the two)",
        read_by="api",
        read_alone=True,
    )
)
CORS_ALLOW_ORIGINS = _declare(
    Setting(
        env="CORS_ALLOW_ORIGINS",
        default=["*"],
        parse=parse_origins,
        doc="origins allowed by CORS, comma-separated",
        read_by="api",
    )
)
HOT_SITES = _declare(
    Setting[dict[str, int]](
        env="HOT_SITES",
        default={},
        parse=parse_hot_sites,
        doc="`site-a:4,site-b:8`: each named site spread over that many sub-keys "
        "(partitions), trading its order for throughput",
        read_by="api",
    )
)
GC_GEN0_THRESHOLD = _declare(
    Setting(
        env="GC_GEN0_THRESHOLD",
        default=10_000,
        doc="a serving process collects its youngest generation every this many allocations, "
        "its start-up objects frozen; 0 keeps Python's defaults",
        read_by="api",
    )
)

# --- the API: the browser route's visitors ---
VISITOR_KEY_BYTES = 32


def parse_visitor_key(raw: str) -> str:
    """VISITOR_KEY as given, once checked to be base64 of 32 bytes (never echoed back)."""
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != VISITOR_KEY_BYTES:
        raise ConfigError(
            f"VISITOR_KEY must be {VISITOR_KEY_BYTES} random bytes in base64 (make one with "
            "`python -c 'import base64, os; print(base64.b64encode(os.urandom(32)).decode())'`)"
        )
    return raw


VISITOR_KEY = _declare(
    Setting(
        env="VISITOR_KEY",
        default="",
        parse=parse_visitor_key,
        doc="32 random bytes in base64, the same on every API replica: seals the daily visitor "
        "salts stored in PostgreSQL (docs/operations.md); unset, `POST /api/event` answers "
        "503 `browser_route_disabled`",
        read_by="api",
    )
)
VISITOR_SALT_REFRESH_S = _declare(
    Setting(
        env="VISITOR_SALT_REFRESH_S",
        default=60.0,
        minimum=1,
        doc="how often the API makes sure today's and tomorrow's visitor salts exist, loads "
        "them, and deletes those older than yesterday",
        read_by="api",
    )
)

# --- the API: stats ---
STATS_READ_KEYS = _declare(
    Setting[dict[str, tuple[str, ...]]](
        env="STATS_READ_KEYS",
        default={},
        parse=lambda raw: parse_site_keys(raw, "STATS_READ_KEYS"),
        doc="`site-a=key1,site-a=key2,site-b=key3`: Bearer keys per site; sites without keys "
        "are public",
        read_by="api",
    )
)
STATS_RATE_LIMIT_PER_S = _declare(
    Setting(
        env="STATS_RATE_LIMIT_PER_S",
        default=100.0,
        doc="token bucket per checked read key; 0 turns every request limit off",
        read_by="api",
    )
)
STATS_RATE_BURST = _declare(
    Setting(
        env="STATS_RATE_BURST",
        default=200,
        minimum=1,
        doc="burst of the token bucket per read key",
        read_by="api",
    )
)
STATS_CLIENT_RATE_LIMIT_PER_S = _declare(
    Setting(
        env="STATS_CLIENT_RATE_LIMIT_PER_S",
        default=STATS_RATE_LIMIT_PER_S.default,
        fallback=STATS_RATE_LIMIT_PER_S,
        doc="token bucket per client address, checked before any key",
        read_by="api",
    )
)
STATS_CLIENT_RATE_BURST = _declare(
    Setting(
        env="STATS_CLIENT_RATE_BURST",
        default=STATS_RATE_BURST.default,
        minimum=1,
        fallback=STATS_RATE_BURST,
        doc="burst of the token bucket per client address",
        read_by="api",
    )
)
STATS_KEY_FAILURES_PER_MIN = _declare(
    Setting(
        env="STATS_KEY_FAILURES_PER_MIN",
        default=10.0,
        doc="failed read-key attempts (401/403) allowed per client address; beyond them, 429 "
        "before a key is compared",
        read_by="api",
    )
)
STATS_KEY_FAILURE_BURST = _declare(
    Setting(
        env="STATS_KEY_FAILURE_BURST",
        default=20,
        minimum=1,
        doc="burst of failed read-key attempts per client address",
        read_by="api",
    )
)
TRUSTED_PROXY_HOPS = _declare(
    Setting(
        env="TRUSTED_PROXY_HOPS",
        default=0,
        doc="reverse proxies in front: the client is the N-th `X-Forwarded-For` entry from "
        "the right; 0 ignores the header",
        read_by="api",
    )
)
STATS_STATEMENT_TIMEOUT_MS = _declare(
    Setting(
        env="STATS_STATEMENT_TIMEOUT_MS",
        default=5000,
        doc="longest stats statement (503 `stats_timeout` past it); 0: none",
        read_by="api",
    )
)
STATS_LOCK_TIMEOUT_MS = _declare(
    Setting(
        env="STATS_LOCK_TIMEOUT_MS",
        default=1000,
        doc="longest wait of a stats statement for a lock (behind DDL); 0: none",
        read_by="api",
    )
)
STATS_RAW_CONCURRENCY = _declare(
    Setting(
        env="STATS_RAW_CONCURRENCY",
        default=2,
        minimum=1,
        doc="stats statements over raw events (filters on visit:* or event:props:*) one API "
        "process runs at once; one more is answered 503 `stats_busy` at once. Keep it below "
        "DB_POOL_MAX_SIZE: the rest of the pool stays for questions rollups answer",
        read_by="api",
    )
)
STATS_RAW_STATEMENT_TIMEOUT_MS = _declare(
    Setting(
        env="STATS_RAW_STATEMENT_TIMEOUT_MS",
        default=2000,
        doc="longest stats statement over raw events (503 `stats_timeout` past it); 0: "
        "STATS_STATEMENT_TIMEOUT_MS",
        read_by="api",
    )
)
STATS_COSTLY_CONCURRENCY = _declare(
    Setting(
        env="STATS_COSTLY_CONCURRENCY",
        default=3,
        minimum=1,
        maximum=1_024,
        doc="costly stats plans (raw events read, every path's sub-day rows ranked, many "
        "sketches merged per value) one API process runs at once; the next ones queue, first "
        "come first served, for at most STATS_COSTLY_WAIT_MS, then get 503 `stats_busy`. "
        "Other questions never wait on them. Keep it below DB_POOL_MAX_SIZE",
        read_by="api",
    )
)
STATS_COSTLY_WAIT_MS = _declare(
    Setting(
        env="STATS_COSTLY_WAIT_MS",
        default=1000,
        maximum=60_000,
        doc="longest wait of a costly stats plan for its turn (503 `stats_busy` past it); at "
        "most 64 wait at once in a process, one more is refused at once",
        read_by="api",
    )
)
STATS_EXACT_VISITORS_MAX_ROWS = _declare(
    Setting(
        env="STATS_EXACT_VISITORS_MAX_ROWS",
        default=10_000,
        doc="largest user set counted exactly over several days; beyond it a sketch answers",
        read_by="api",
    )
)
STATS_ANSWER_CACHE_MB = _declare(
    Setting(
        env="STATS_ANSWER_CACHE_MB",
        default=64,
        maximum=65_536,
        doc="MiB of stats answers one API process keeps, each for the version of the site's "
        "UTC days its range touches when it was computed (a consumer batch that changes one of "
        "those days, or a seal, rebuild, zone change, retention or import, makes a new one), "
        "least recently used first out; a request asking a question already answered for the "
        "current version gets that answer. 0 turns it off "
        "(docs/decisions/0037-answers-by-site-day.md)",
        read_by="api",
    )
)
STATS_WARM_CONNECTIONS = _declare(
    Setting(
        env="STATS_WARM_CONNECTIONS",
        default=True,
        doc="each new stats connection first asks the dashboard's default view (for a site id "
        "no event can carry), so that its first visitor does not pay for a fresh backend's "
        "planning, and the first one seeds the planner with the zones sites keep "
        "(ingest/stats_warm.py); 0: it serves at once",
        read_by="api",
    )
)
# --- the API: each hit's context (ingest/context.py reads these itself) ---
COUNTRY_HEADER = _declare(
    Setting(
        env="COUNTRY_HEADER",
        default="",
        doc="a request header set by a trusted CDN with the client's country (e.g. "
        "`CF-IPCountry`); when present and two letters it wins over the address lookup "
        "(`XX`, `T1`: unknown). Set it only if every request passes that CDN",
        read_by="api",
        read_alone=True,
    )
)
GEOIP_DATABASE = _declare(
    Setting(
        env="GEOIP_DATABASE",
        default="",
        doc="path of a MaxMind or DB-IP country/city `.mmdb` file, used instead of the "
        "bundled registry allocation data; the API refuses to start if it cannot open it",
        read_by="api",
        read_alone=True,
    )
)
DASHBOARD_REFRESH_S = _declare(
    Setting(
        env="DASHBOARD_REFRESH_S",
        default=10,
        minimum=1,
        doc="how often the dashboard reloads its numbers",
        read_by="api",
    )
)

# --- the API: exports (ingest/export.py) ---
EXPORT_CONCURRENCY = _declare(
    Setting(
        env="EXPORT_CONCURRENCY",
        default=2,
        minimum=1,
        maximum=64,
        doc="exports one API process builds at once, each on its own database connection "
        "and snapshot; one more is answered 503 `export_busy`",
        read_by="api",
    )
)
EXPORT_MAX_SENDING = _declare(
    Setting(
        env="EXPORT_MAX_SENDING",
        default=16,
        minimum=1,
        maximum=1_024,
        doc="built archives one API process sends at once (each waits in a temporary file); "
        "one more export is answered 503 `export_busy`",
        read_by="api",
    )
)
EXPORT_MAX_BYTES = _declare(
    Setting(
        env="EXPORT_MAX_BYTES",
        default=64 * 1024 * 1024,
        minimum=1024,
        maximum=64 * 1024**3,
        doc="largest archive an export builds (past 4 MiB it is spooled to a temporary file); "
        "a larger one is refused 400 `export_too_large`: export fewer days",
        read_by="api",
    )
)
EXPORT_SEND_DEADLINE_S = _declare(
    Setting(
        env="EXPORT_SEND_DEADLINE_S",
        default=60.0,
        minimum=0.001,
        maximum=3_600.0,
        doc="time a client has to read any archive, on top of its size at "
        "EXPORT_MIN_SEND_BYTES_PER_S; past it the connection is dropped",
        read_by="api",
    )
)
EXPORT_MIN_SEND_BYTES_PER_S = _declare(
    Setting(
        env="EXPORT_MIN_SEND_BYTES_PER_S",
        default=64 * 1024,
        minimum=1,
        maximum=1024**3,
        doc="slowest reading an export's client is granted, in bytes per second: an archive "
        "of N bytes must be read within EXPORT_SEND_DEADLINE_S + N / this",
        read_by="api",
    )
)

# --- the consumer ---
CONSUMER_GROUP = _declare(
    Setting(
        env="CONSUMER_GROUP",
        field="group_id",
        default="analytics-consumer",
        doc="the consumer group; offsets are stored per group",
        read_by="consumer",
    )
)
CONSUMER_INSTANCE_ID = _declare(
    Setting(
        env="CONSUMER_INSTANCE_ID",
        field="group_instance_id",
        default="",
        doc="static group membership (KIP-345): unique per replica, stable across restarts",
        read_by="consumer",
    )
)
CONSUMER_WRITERS = _declare(
    Setting(
        env="CONSUMER_WRITERS",
        field="writers",
        default=2,
        minimum=1,
        maximum=16,
        doc="members of the consumer group in one replica process, each with its own share of "
        "the partitions, batches and PostgreSQL connection: batches of different partitions "
        "are then written side by side (up to the cores PostgreSQL can give them)",
        read_by="consumer",
    )
)
MAX_BATCH_ROWS = _declare(
    Setting(
        env="MAX_BATCH_ROWS",
        default=80_000,
        minimum=1,
        doc="a batch is written when it holds this many events…",
        read_by="consumer",
    )
)
MAX_BATCH_BYTES = _declare(
    Setting(
        env="MAX_BATCH_BYTES",
        default=16 * 1024 * 1024,
        minimum=1024,
        doc="…or this many bytes of messages…",
        read_by="consumer",
    )
)
MAX_BATCH_AGE_S = _declare(
    Setting(
        env="MAX_BATCH_AGE_S",
        default=0.5,
        minimum=0.001,
        doc="…or when its first message is this old",
        read_by="consumer",
    )
)
TARGET_BATCH_WRITE_S = _declare(
    Setting(
        env="TARGET_BATCH_WRITE_S",
        default=0.5,
        minimum=0.0,
        doc="…and holds no more events than the last writes show can be stored in this long "
        "(never fewer than 1,000); 0: by MAX_BATCH_ROWS alone",
        read_by="consumer",
    )
)
RETRY_INITIAL_S = _declare(
    Setting(
        env="RETRY_INITIAL_S",
        default=0.2,
        minimum=0.001,
        doc="first backoff while PostgreSQL or the dead-letter topic is unavailable",
        read_by="consumer",
    )
)
RETRY_MAX_S = _declare(
    Setting(
        env="RETRY_MAX_S",
        default=10.0,
        minimum=0.001,
        doc="longest backoff while PostgreSQL or the dead-letter topic is unavailable",
        read_by="consumer",
    )
)
SHUTDOWN_TIMEOUT_S = _declare(
    Setting(
        env="SHUTDOWN_TIMEOUT_S",
        default=10.0,
        minimum=0.1,
        doc="SIGTERM: longest time to finish the batch in hand before abandoning it and leaving",
        read_by="consumer",
    )
)
SESSION_TIMEOUT_MS = _declare(
    Setting(
        env="SESSION_TIMEOUT_MS",
        default=10_000,
        minimum=1000,
        doc="a silent replica's partitions move to the others after this",
        read_by="consumer",
    )
)
MAX_POLL_INTERVAL_MS = _declare(
    Setting(
        env="MAX_POLL_INTERVAL_MS",
        default=300_000,
        minimum=1000,
        doc="Kafka's max.poll.interval.ms",
        read_by="consumer",
    )
)
VISIT_TIMEOUT_SECONDS = _declare(
    Setting(
        env="VISIT_TIMEOUT_SECONDS",
        default=1800,
        minimum=1,
        maximum=86_400,
        doc="a visitor's visit ends after this long without an event from them; the next "
        "event starts a new one (docs/architecture.md, Visits). Changing it applies to events "
        "stored from then on",
        read_by="consumer",
    )
)
VISIT_VALUES_PER_DAY = _declare(
    Setting(
        env="VISIT_VALUES_PER_DAY",
        default=10_000,
        minimum=1,
        maximum=1_000_000,
        doc="per site, UTC day and free-text visit dimension (source, referrer, UTM values, "
        "entry and exit page), the values kept in the visit rollups; visits with a value past "
        "it count under '(other)' (the raw events keep it). Bounds what hostile traffic adds",
        read_by="consumer",
    )
)
AUTO_ZONES_PER_SITE = _declare(
    Setting(
        env="AUTO_ZONES_PER_SITE",
        default=1,
        doc="zones kept per site because stats are read in them; 0: none",
        read_by="consumer",
    )
)
AUTO_ZONES_MAX = _declare(
    Setting(
        env="AUTO_ZONES_MAX",
        default=100,
        doc="zones kept in all because stats are read in them; 0: none",
        read_by="consumer",
    )
)
AUTO_ZONES_IDLE_DAYS = _declare(
    Setting(
        env="AUTO_ZONES_IDLE_DAYS",
        default=30,
        minimum=1,
        doc="days without a request after which such a zone is dropped",
        read_by="consumer",
    )
)
CONSUMER_METRICS_HOST = _declare(
    Setting(
        env="CONSUMER_METRICS_HOST",
        field="metrics_host",
        default="127.0.0.1",
        doc="address of `/metrics`, `/healthz` and `/readyz`",
        read_by="consumer",
    )
)
CONSUMER_METRICS_PORT = _declare(
    Setting(
        env="CONSUMER_METRICS_PORT",
        field="metrics_port",
        default=0,
        doc="port of `/metrics`, `/healthz` and `/readyz`; 0 turns them off",
        read_by="consumer",
    )
)


# --- the configuration reference ---
_UNITS = (
    ("_PER_S", "per second"),
    ("_PER_MIN", "per minute"),
    ("_MS", "milliseconds"),
    ("_SECONDS", "seconds"),
    ("_S", "seconds"),
    ("_BYTES", "bytes"),
    ("_DAYS", "days"),
)

_SECTIONS: tuple[tuple[ReadBy, str], ...] = (
    ("both", "Both processes"),
    ("api", "The API (`python -m ingest`)"),
    ("consumer", "The consumer (`python -m consumer` and its commands)"),
)


def unit(setting: Setting[Any]) -> str:
    """The unit the variable's name ends with, spelled out."""
    return next((name for suffix, name in _UNITS if setting.env.endswith(suffix)), "")


def shown_default(setting: Setting[Any]) -> str:
    if setting.fallback is not None:
        return f"`{setting.fallback.env}`"
    value = setting.default
    if isinstance(value, bool):
        return f"`{int(value)}`"
    if isinstance(value, float):
        return f"`{value:g}`"
    if isinstance(value, list):
        value = ",".join(value)
    return f"`{value}`" if value not in ("", {}) else "unset"


def accepted(setting: Setting[Any]) -> str:
    if isinstance(setting.default, bool):
        return "`0` or `1`"
    if not isinstance(setting.default, int | float) or setting.minimum is None:
        return ""
    if setting.maximum is not None:
        return f"{setting.minimum:g} to {setting.maximum:g}"
    return f"≥ {setting.minimum:g}"


def markdown() -> str:
    """The configuration reference, as written to docs/configuration.md."""
    lines = [
        "# Configuration",
        "",
        "<!-- Generated from core/settings.py by `python -m core.settings --markdown >"
        " docs/configuration.md`: edit the declarations there, then regenerate. -->",
        "",
        "Every setting is an environment variable, read once when a process starts; unset or "
        "blank, it takes its default. A value that cannot be used stops the process with a "
        "message naming the variable.",
    ]
    for read_by, title in _SECTIONS:
        lines += [
            "",
            f"## {title}",
            "",
            "| variable | default | unit | accepts | meaning |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| `{s.env}` | {shown_default(s)} | {unit(s)} | {accepted(s)} | {s.doc} |"
            for s in DECLARED
            if s.read_by == read_by
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m core.settings", description="The settings of both processes."
    )
    parser.add_argument(
        "--markdown", action="store_true", required=True, help="print the configuration reference"
    )
    parser.parse_args(argv)
    sys.stdout.write(markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
