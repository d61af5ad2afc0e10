"""The API fuzzed from its own OpenAPI document (schemathesis): no 5xx, no crash, every
answer as documented. 503 is allowed only with Retry-After (genuine broker trouble)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import schemathesis
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from hypothesis import HealthCheck, given, settings
from psycopg import sql
from schemathesis import GenerationMode
from schemathesis.checks import negative_data_rejection, positive_data_acceptance
from schemathesis.core.parameters import ParameterLocation

from ingest.settings import Settings
from tests.conftest import DROP_DATABASE, TEST_PARTITIONS, _with_dbname
from tests.processes import start_api

pytestmark = pytest.mark.e2e

# Refusals of schema-valid events by limits JSON Schema cannot state: a UTF-8 byte length (the
# schema's maxLength counts characters), and a timestamp window relative to today.
# Limits in UTF-8 bytes, which JSON Schema (counting characters) cannot state, and the time
# window: a value the document allows may still be refused with one of these.
# `write_key_needed`: a batch item forwarding a browser's fields without a write key (a 403
# on /event, documented there; in a batch, an item refused among the others).
POLICY_CODES = {
    "field_too_long",
    "too_long",
    "timestamp_too_old",
    "timestamp_expired",
    "write_key_needed",
}


def _components(case: schemathesis.Case) -> dict[str, str]:
    """How each part of the request was generated (positive or negative)."""
    meta = case._meta  # schemathesis keeps it private; it is the only record of this
    return {} if meta is None else {str(k.value): v.mode.value for k, v in meta.components.items()}


def _negative_body(case: schemathesis.Case) -> bool:
    return _components(case).get(ParameterLocation.BODY.value) == GenerationMode.NEGATIVE.value


def _refused_by_policy(body: dict[str, Any]) -> bool:
    """Whether a 400 refuses an event (or every event of a batch) for a POLICY_CODES limit."""
    codes = {body.get("code")} if not body.get("errors") else {e["code"] for e in body["errors"]}
    return codes <= POLICY_CODES


@pytest.fixture(scope="module")
async def fuzz_topic(kafka_bootstrap: str) -> AsyncIterator[str]:
    name = f"fuzz-{uuid.uuid4().hex[:12]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, TEST_PARTITIONS, 1)])
        await admin.create_topics([NewTopic(f"{name}.dlq", TEST_PARTITIONS, 1)])
        yield name
        await admin.delete_topics([name, f"{name}.dlq"])
    finally:
        await admin.close()


@pytest.fixture(scope="module")
def fuzz_api(
    kafka_bootstrap: str,
    server_database_url: str,
    template_database: str,
    fuzz_topic: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(server_database_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template_database)
            )
        )
    api_settings = Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        database_url=_with_dbname(server_database_url, name),
        events_topic=fuzz_topic,
        dlq_topic=f"{fuzz_topic}.dlq",
        topic_partitions=TEST_PARTITIONS,
        max_past_days=3660,
    )
    log_dir: Path = tmp_path_factory.mktemp("fuzz")
    api, base_url = start_api(api_settings, log_dir)
    try:
        yield base_url
    finally:
        api.terminate()
        with psycopg.connect(server_database_url, autocommit=True) as conn:
            conn.execute(DROP_DATABASE.format(sql.Identifier(name)))


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_answers_as_documented(fuzz_api: str, mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzz_api}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 6  # schemathesis leaves out /openapi.json itself

    for operation in operations:
        if mode is GenerationMode.NEGATIVE and not (operation.body or operation.query):
            continue  # nothing to make invalid

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=25,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def answers_as_documented(case: schemathesis.Case) -> None:
            response = case.call(timeout=30)
            assert response.status_code < 500 or (
                response.status_code == 503 and "retry-after" in response.headers
            ), f"{case.method} {case.path}: {response.status_code} {response.text}"
            if response.status_code == 503:
                return
            if response.status_code == 400 and _refused_by_policy(response.json()):
                case.validate_response(response, excluded_checks=[positive_data_acceptance])
            elif response.status_code == 202 and case.path == "/events":
                # A batch is answered per event (docs/api.md): its schema-violating events are
                # refused in `errors` and the others accepted, where schemathesis's negative
                # check expects the whole request refused. A negative case may also leave the
                # body valid and break only a parameter the route does not need (a write key
                # sent where none is required): then every event is accepted.
                body = response.json()
                negative = _negative_body(case)
                assert not negative or body["rejected"] > 0, (body, _components(case))
                case.validate_response(response, excluded_checks=[negative_data_rejection])
            elif response.status_code == 413:
                # A limit (batch size) is refused with 413, a status schemathesis's own
                # negative check does not list.
                case.validate_response(response, excluded_checks=[negative_data_rejection])
            else:
                case.validate_response(response)

        answers_as_documented()
