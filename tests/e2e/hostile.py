"""Helpers of the hostile-input suites: a client that remembers every status, and the proof
that follows each case (a fresh event counted, nothing accepted missing, no 5xx)."""

from __future__ import annotations

import base64
import datetime as dt
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from consumer.reconcile import reconcile
from consumer.settings import ConsumerSettings
from ingest.settings import Settings
from tests.processes import start_api, start_consumer
from tests.support import wait_for

CJK = "".join(chr(c) for c in range(0x4E00, 0x4E00 + 2000))  # three UTF-8 bytes each


def today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def now_iso(delta: dt.timedelta = dt.timedelta()) -> str:
    return (dt.datetime.now(dt.UTC) + delta).isoformat().replace("+00:00", "Z")


def event(site: str, **changes: Any) -> dict[str, Any]:
    return {
        "site_id": site,
        "event_type": "page_view",
        "path": "/",
        "user_id": "u1",
        "timestamp": now_iso(),
        **changes,
    }


def new_site() -> str:
    return f"site-{uuid.uuid4().hex[:10]}"


class Client:
    """An HTTP client that remembers every status it got, so a test can assert no 5xx."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.AsyncClient(base_url=base_url, timeout=30)
        self.statuses: list[tuple[str, int]] = []

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        response = await self.http.request(method, url, **kwargs)
        self.statuses.append((f"{method} {url}", response.status_code))
        return response

    async def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("POST", url, **kwargs)

    async def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", url, **kwargs)

    def server_errors(self) -> list[tuple[str, int]]:
        return [(what, status) for what, status in self.statuses if status >= 500]


@pytest.fixture
async def hostile(
    api_settings: Settings, consumer_settings: ConsumerSettings, tmp_path: Path
) -> AsyncIterator[tuple[Client, ConsumerSettings]]:
    """The API (with the default past-time window) and one consumer as real processes; after
    the test: a fresh event is counted, nothing accepted is missing, nothing answered 5xx."""
    # A VISITOR_KEY of its own, so that the browser route takes hostile input too.
    visitor_key = base64.b64encode(os.urandom(32)).decode()
    settings = msgspec.structs.replace(api_settings, max_past_days=31, visitor_key=visitor_key)
    consumer = start_consumer(consumer_settings, tmp_path)
    api, base_url = start_api(settings, tmp_path)
    client = Client(base_url)
    try:
        yield client, consumer_settings
        await assert_still_healthy(client, consumer_settings)
    finally:
        await client.http.aclose()
        api.terminate()
        consumer.terminate()


async def views_today(client: Client, site: str) -> int:
    response = await client.get("/stats", params={"site_id": site, "date": today().isoformat()})
    assert response.status_code == 200, response.text
    return int(response.json()["total_views"])


async def assert_still_healthy(client: Client, settings: ConsumerSettings) -> None:
    site = new_site()
    response = await client.post("/event", json=event(site))
    assert response.status_code == 202, response.text

    async def counted() -> bool:
        return await views_today(client, site) == 1

    await wait_for(counted, timeout_s=30, what="a fresh event counted after the hostile input")

    async def caught_up() -> bool:
        report = await reconcile(settings)
        assert report.missing == [], report.missing
        return report.pending == 0

    await wait_for(caught_up, timeout_s=30, what="every accepted event stored or dead-lettered")
    assert client.server_errors() == []
