"""Broker trouble: 503 with Retry-After while Kafka is down, recovery without a restart,
shedding load when too many events wait, and start-up failing with a clear message.

These tests stop and restart a broker of their own (never the shared one)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import httpx
import pytest
from aiokafka.errors import KafkaError

from ingest.app import create_app
from ingest.publish import Publisher, PublishSaturated, make_producer
from ingest.settings import Settings
from tests.ingest.support import api_client, event, read_topic
from tests.processes import free_port
from tests.services import PrivateService, private_kafka
from tests.support import make_record

# Its private broker: on the worker of the other private services (tests/faults).
pytestmark = [pytest.mark.kafka, pytest.mark.xdist_group("private-services")]


class OwnBroker(NamedTuple):
    """A broker of this test's own (free ports, state in tmp): it may stop and restart it."""

    service: PrivateService
    bootstrap: str

    def start(self) -> None:
        self.service.start()

    def stop(self) -> None:
        self.service.stop()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[OwnBroker]:
    broker = OwnBroker(*private_kafka(tmp_path))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
        broker.service.remove_state()


def settings_for(bootstrap: str) -> Settings:
    topic = f"events-{uuid.uuid4().hex[:12]}"
    return Settings(
        kafka_bootstrap_servers=bootstrap,
        events_topic=topic,
        dlq_topic=f"{topic}.dlq",
        topic_partitions=2,
        publish_timeout_s=2.0,
        retry_after_s=3,
        max_past_days=3660,  # the events are dated 2025-11-12
    )


async def post_until(client: httpx.AsyncClient, status: int, *, attempts: int) -> httpx.Response:
    response = await client.post("/event", json=event())
    for _ in range(attempts):
        if response.status_code == status:
            break
        await asyncio.sleep(1)
        response = await client.post("/event", json=event())
    return response


async def test_broker_down_answers_503_then_recovers(own_broker: OwnBroker) -> None:
    settings = settings_for(own_broker.bootstrap)
    async with api_client(settings) as client:
        assert (await client.post("/event", json=event())).status_code == 202
        own_broker.stop()
        try:
            # Concurrent requests share messages; when those are not acknowledged, every
            # request waiting on them gets the same 503.
            wave = await asyncio.gather(
                *(client.post("/event", json=event(path=f"/down/{i}")) for i in range(10))
            )
            assert [r.status_code for r in wave] == [503] * 10, [r.text for r in wave]
            assert {r.json()["code"] for r in wave} == {"unavailable"}
            assert {r.headers["retry-after"] for r in wave} == {"3"}
            # While the circuit is open, further requests are refused without waiting.
            batch = await client.post("/events", json=[event(), event()])
            assert batch.status_code == 503
            assert (await client.get("/readyz")).status_code == 503
            metrics = (await client.get("/metrics")).text
            assert "ingest_broker_down 1.0" in metrics
        finally:
            own_broker.start()
        recovered = await post_until(client, 202, attempts=60)
        assert recovered.status_code == 202, recovered.text
        assert (await client.get("/readyz")).status_code == 200
        # Coalescing works again after the outage: a concurrent wave is all accepted.
        paths = [f"/after/{i}" for i in range(10)]
        after = await asyncio.gather(*(client.post("/event", json=event(path=p)) for p in paths))
        assert [r.status_code for r in after] == [202] * 10
    # Everything answered 202 is in the topic (the first, the recovered one, the last wave).
    records = await read_topic(own_broker.bootstrap, settings.events_topic, 12)
    assert set(paths) <= {r.path for r in records}


async def test_start_up_fails_fast_when_the_broker_is_unreachable() -> None:
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    app = create_app(settings_for(address))
    with pytest.raises(KafkaError) as caught:
        async with asyncio.timeout(60), app.router.lifespan_context(app):
            pass
    assert address in str(caught.value)


@pytest.mark.parametrize("coalesce", [False, True], ids=["message-per-event", "coalesced"])
async def test_too_many_events_in_flight_are_shed(
    api_settings: Settings, topic: str, coalesce: bool
) -> None:
    publisher = Publisher(
        make_producer(api_settings),
        topic,
        10,
        max_in_flight_events=5,
        site_arrays=coalesce,
        coalesce=coalesce,
    )
    await publisher.start()
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(publisher.publish([make_record() for _ in range(5)]))
            await asyncio.sleep(0)  # the first publish now waits for its acks
            assert publisher.saturated
            with pytest.raises(PublishSaturated):
                await publisher.publish([make_record()])
        assert not publisher.saturated
        await publisher.publish([make_record()])
    finally:
        await publisher.stop()
    assert len(await read_topic(api_settings.kafka_bootstrap_servers, topic, 6)) == 6
