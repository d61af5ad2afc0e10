"""Who the client is, as the API served by uvicorn sees it: TRUSTED_PROXY_HOPS alone decides
whether X-Forwarded-For is read (uvicorn's own proxy handling is off)."""

from __future__ import annotations

from pathlib import Path

import httpx
import msgspec
import pytest

from ingest.settings import Settings
from tests.processes import start_api

pytestmark = pytest.mark.kafka


def test_with_no_trusted_proxy_x_forwarded_for_does_not_change_the_client(
    api_settings: Settings, tmp_path: Path
) -> None:
    """One token per client address: if the header named the client, each request below
    would be another client with a full bucket; with hops=0 both are the loopback peer."""
    settings = msgspec.structs.replace(api_settings, trusted_proxy_hops=0)
    api, base_url = start_api(
        settings,
        tmp_path,
        STATS_CLIENT_RATE_BURST="1",
        STATS_CLIENT_RATE_LIMIT_PER_S="0.01",
    )
    try:
        with httpx.Client(base_url=base_url, timeout=30) as client:
            first = client.get(
                "/stats", params={"site_id": "site-a"}, headers={"X-Forwarded-For": "8.8.8.8"}
            )
            second = client.get(
                "/stats", params={"site_id": "site-a"}, headers={"X-Forwarded-For": "9.9.9.9"}
            )
    finally:
        api.terminate()
    assert first.status_code != 429, first.text
    assert second.status_code == 429, second.text
    assert second.json()["code"] == "rate_limited"
