"""The health answers of the consumer's HTTP port, called as a WSGI app (no network)."""

from __future__ import annotations

import json
from typing import Any

from aiokafka.errors import CommitFailedError
from prometheus_client import CollectorRegistry

from consumer.loop import Health, ReplicaHealth, _first_line
from consumer.monitoring import STALE_AFTER_S, make_app


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def get(app: Any, path: str) -> tuple[str, dict[str, Any]]:
    answer: dict[str, str] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        answer["status"] = status

    body = b"".join(app({"PATH_INFO": path, "REQUEST_METHOD": "GET"}, start_response))
    return answer["status"], json.loads(body)


def test_healthz_fails_when_the_loop_stops_polling() -> None:
    clock = FakeClock()
    health = Health(clock)
    app = make_app(CollectorRegistry(), health)
    status, body = get(app, "/healthz")
    assert status.startswith("200") and body["status"] == "ok"
    clock.now += STALE_AFTER_S + 1
    status, body = get(app, "/healthz")
    assert status.startswith("503") and body["seconds_since_poll"] > STALE_AFTER_S
    health.polled()
    assert get(app, "/healthz")[0].startswith("200")


def test_readyz_fails_while_writes_fail() -> None:
    health = Health(FakeClock())
    app = make_app(CollectorRegistry(), health)
    health.write_failing = True
    assert get(app, "/readyz")[0].startswith("503")
    health.write_failing = False
    assert get(app, "/readyz")[0].startswith("200")


def test_a_replica_is_as_healthy_as_its_worst_member() -> None:
    clock = FakeClock()
    polling, stuck = Health(clock), Health(clock)
    polling.assigned, stuck.assigned = 3, 2
    app = make_app(CollectorRegistry(), ReplicaHealth([polling, stuck]))
    clock.now += STALE_AFTER_S + 1
    polling.polled()
    polling.stored()
    status, body = get(app, "/healthz")
    assert status.startswith("503") and body["seconds_since_poll"] > STALE_AFTER_S
    assert body["assigned_partitions"] == 5 and body["writers"] == 2
    assert body["writers_assigned"] == 2
    assert body["seconds_since_stored"] == 0  # the latest store of any member
    stuck.polled()
    assert get(app, "/healthz")[0].startswith("200")
    stuck.write_failing = True
    assert get(app, "/readyz")[0].startswith("503")


def test_a_skipped_kafka_commit_is_logged_on_one_line() -> None:
    rebalanced = CommitFailedError(
        "Commit cannot be completed since the group has already\n"
        "            rebalanced and assigned the partitions to another member.\n"
        "            This means that the time between subsequent calls..."
    )
    assert _first_line(rebalanced) == (
        "CommitFailedError: Commit cannot be completed since the group has already"
    )
    assert _first_line(TimeoutError()) == "TimeoutError"
    assert _first_line(ValueError("first\nsecond")) == "ValueError: first"
