"""Batches and retries through the whole path: API and consumer processes, real services."""

from __future__ import annotations

import gzip
import json
import uuid

import httpx
import pytest

from tests.ingest.support import event
from tests.support import wait_for

pytestmark = pytest.mark.e2e


async def test_a_retried_event_id_is_counted_once(pipeline: str) -> None:
    site = f"site-{uuid.uuid4().hex[:10]}"
    retried = event(site_id=site, event_id=str(uuid.uuid4()), user_id="u1")
    async with httpx.AsyncClient(base_url=pipeline) as client:
        # The same event three times: alone, again, and inside a gzip batch.
        assert (await client.post("/event", json=retried)).status_code == 202
        assert (await client.post("/event", json=retried)).status_code == 202
        batch = gzip.compress(json.dumps([retried, event(site_id=site, user_id="u2")]).encode())
        response = await client.post(
            "/events",
            content=batch,
            headers={"content-encoding": "gzip", "content-type": "application/json"},
        )
        assert response.json()["accepted"] == 2
        # A last event of the same site (same partition, so consumed after the others).
        marker = event(site_id=site, user_id="u3", path="/last")
        assert (await client.post("/event", json=marker)).status_code == 202

        async def last_one_stored() -> bool:
            stats = await client.get("/stats", params={"site_id": site, "date": "2025-11-12"})
            paths = {p["path"] for p in stats.json()["top_paths"]}
            return "/last" in paths

        await wait_for(last_one_stored, timeout_s=30, what="the marker event")
        stats = (await client.get("/stats", params={"site_id": site, "date": "2025-11-12"})).json()
    assert stats["total_views"] == 3  # retried (once), u2, and the marker
    assert stats["unique_users"] == 3
