"""The consumer's Prometheus metrics, in a registry of its own (one per consumer)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from consumer.batch import REJECTED, UNDECODABLE, Poison


class ConsumerStats:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events_written = Counter(
            "consumer_events_written", "Events stored (new rows)", registry=self.registry
        )
        self.duplicates = Counter(
            "consumer_duplicate_events",
            "Events skipped because their event_id was already stored",
            registry=self.registry,
        )
        self.batches = Counter("consumer_batches", "Batches committed", registry=self.registry)
        self.batch_seconds = Histogram(
            "consumer_batch_write_seconds",
            "Time to write one batch to PostgreSQL (one transaction)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.dead_lettered = Counter(
            "consumer_dead_lettered",
            "Dead letters produced, by kind: undecodable messages (whole), events the database "
            "rejected (one each); a retry after a failure may produce some twice",
            ["error"],
            registry=self.registry,
        )
        for kind in (UNDECODABLE, REJECTED):
            self.dead_lettered.labels(kind)
        self.isolation_passes = Counter(
            "consumer_isolation_passes",
            "Batches the database rejected and that were bisected to find the culprit events",
            registry=self.registry,
        )
        self.write_retries = Counter(
            "consumer_write_retries",
            "Batch writes that failed and were retried",
            registry=self.registry,
        )
        self.rebalances = Counter(
            "consumer_rebalances",
            "Partition assignments received (one per member of the replica and rebalance)",
            registry=self.registry,
        )
        self.lag = Gauge(
            "consumer_lag",
            "Messages in the partition not yet stored in PostgreSQL (end offset minus stored)",
            ["partition"],
            registry=self.registry,
        )
        self.written_total = 0

    def record_batch(self, rows: int, inserted: int, elapsed_s: float) -> None:
        self.events_written.inc(inserted)
        self.duplicates.inc(rows - inserted)
        self.batches.inc()
        self.batch_seconds.observe(elapsed_s)
        self.written_total += inserted

    def count_dead_lettered(self, poison: Iterable[Poison]) -> None:
        for item in poison:
            self.dead_lettered.labels(item.error).inc()

    def set_lag(self, partition: int, lag: int) -> None:
        self.lag.labels(str(partition)).set(lag)

    def forget_partition(self, partition: int) -> None:
        """Drops the lag of a partition this replica no longer owns (its new owner reports it)."""
        with contextlib.suppress(KeyError):
            self.lag.remove(str(partition))
