"""The error body's one shape, and the memoized partitioner agreeing with Kafka's."""

from __future__ import annotations

import json

from aiokafka.partitioner import DefaultPartitioner

from ingest.errors import BadRequest, ServiceUnavailable, error_response
from ingest.publish import CachedPartitioner


def test_error_body_has_message_code_and_field() -> None:
    response = error_response(BadRequest("`date` is required", field="date"))
    assert response.status_code == 400
    assert json.loads(response.body) == {
        "message": "`date` is required",
        "code": "invalid_request",
        "field": "date",
    }
    assert response.headers["content-type"] == "application/json; charset=utf-8"


def test_unavailable_carries_retry_after_and_no_field() -> None:
    response = error_response(ServiceUnavailable("Kafka is down", retry_after_s=2))
    assert response.status_code == 503
    assert response.headers["retry-after"] == "2"
    assert json.loads(response.body) == {"message": "Kafka is down", "code": "unavailable"}


def test_cached_partitioner_agrees_with_kafkas_default() -> None:
    cached, default = CachedPartitioner(), DefaultPartitioner()
    partitions = list(range(12))
    for i in range(500):
        key = f"site-{i}".encode()
        expected = default(key, partitions, partitions)
        assert cached(key, partitions, partitions) == expected
        assert cached(key, partitions, partitions) == expected  # from the cache
    assert cached(b"site-1", list(range(7)), list(range(7))) == default(
        b"site-1", list(range(7)), list(range(7))
    )
