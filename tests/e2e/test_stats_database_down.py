"""Stats answer 503 while PostgreSQL is down, ingest keeps answering 202, and stats recover.

The test runs its own PostgreSQL server (services/postgres.sh on a free port with its own
data folder) and stops and restarts that one; the shared server is never touched.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import httpx
import msgspec
import pytest

from consumer.schema import apply_schema
from ingest.settings import Settings
from tests.processes import start_api
from tests.services import PrivateService, private_postgres
from tests.support import wait_for

# Its private server: on the worker of the other private services (tests/faults).
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("private-services")]


class OwnPostgres(NamedTuple):
    """A PostgreSQL server of this test's own (tests/services.py), which it stops and starts."""

    service: PrivateService
    url: str

    def run(self, command: str) -> None:
        self.service.start() if command == "start" else self.service.stop()


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[OwnPostgres]:
    service, server_url = private_postgres(tmp_path)
    server = OwnPostgres(service, f"{server_url}/analytics")
    service.start()
    try:
        asyncio.run(apply_schema(server.url))
        yield server
    finally:
        service.stop()
        service.remove_state()


async def test_stats_503_while_postgres_is_down_and_ingest_still_202(
    api_settings: Settings, own_postgres: OwnPostgres, tmp_path: Path
) -> None:
    settings = msgspec.structs.replace(api_settings, database_url=own_postgres.url)
    api, base_url = start_api(settings, tmp_path)
    stats = {"site_id": "s", "date": "2025-11-12"}
    aggregate = {"site_id": "s", "period": "month", "date": "2025-11-12"}
    event = {
        "site_id": "s",
        "event_type": "page_view",
        "path": "/",
        "user_id": "u",
        "timestamp": "2025-11-12T10:00:00Z",
    }
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=15) as client:
            up = await client.get("/stats", params=stats)
            assert up.status_code == 200
            assert up.json()["total_views"] == 0

            own_postgres.run("stop")
            down = await client.get("/stats", params=stats)
            assert down.status_code == 503
            assert down.json()["code"] == "unavailable"
            assert down.headers["retry-after"] == "1"
            for path in ("aggregate", "timeseries", "breakdown"):
                r = await client.get(f"/api/v1/stats/{path}", params=aggregate)
                assert r.status_code == 503, (path, r.text)
            accepted = await client.post("/event", json=event)
            assert accepted.status_code == 202

            own_postgres.run("start")

            async def stats_answer() -> bool:
                r = await client.get("/stats", params=stats)
                return r.status_code == 200

            await wait_for(stats_answer, timeout_s=30, what="/stats to answer after restart")
    finally:
        api.terminate()
