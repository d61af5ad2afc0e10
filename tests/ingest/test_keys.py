"""Write keys: off by default; when configured, 401 without a key, 403 with a wrong one."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import msgspec
import pytest

from core.config import ConfigError
from ingest.keys import WriteKeys, load_write_keys, presented_key
from ingest.settings import Settings
from tests.ingest.support import api_client, event

KEYS = {"site-a": ["key-a-1", "key-a-2"], "site-b": ["key-b"]}


def test_keys_come_from_json_or_a_file(tmp_path: Path) -> None:
    assert load_write_keys({}) == {}
    assert load_write_keys({"WRITE_KEYS": json.dumps(KEYS)}) == KEYS
    path = tmp_path / "keys.json"
    path.write_text(json.dumps(KEYS))
    assert load_write_keys({"WRITE_KEYS_FILE": str(path)}) == KEYS
    with pytest.raises(ConfigError) as caught:
        load_write_keys({"WRITE_KEYS": '{"site-a": "secret-value"}'})
    assert "secret-value" not in str(caught.value)
    with pytest.raises(ConfigError):
        load_write_keys({"WRITE_KEYS_FILE": str(tmp_path / "missing.json")})


def test_key_is_read_from_header_basic_bearer_or_query() -> None:
    basic = base64.b64encode(b"key-a-1:").decode()
    assert presented_key({"x-write-key": "k"}, {}) == "k"
    assert presented_key({"authorization": f"Basic {basic}"}, {}) == "key-a-1"
    assert presented_key({"authorization": "Bearer k2"}, {}) == "k2"
    assert presented_key({"authorization": "Basic !!!"}, {}) is None
    assert presented_key({}, {"write_key": "k3"}) == "k3"
    assert presented_key({}, {}) is None
    WriteKeys({}).check(None, ["any-site"])  # off: nothing required


@pytest.mark.kafka
async def test_keys_gate_ingest_per_site(api_settings: Settings) -> None:
    settings = msgspec.structs.replace(api_settings, write_keys=KEYS)
    basic = base64.b64encode(b"key-a-2:").decode()
    async with api_client(settings) as client:
        missing = await client.post("/event", json=event(site_id="site-a"))
        wrong = await client.post(
            "/event", json=event(site_id="site-a"), headers={"x-write-key": "key-b"}
        )
        unknown_site = await client.post(
            "/event", json=event(site_id="site-z"), headers={"x-write-key": "key-b"}
        )
        header = await client.post(
            "/event", json=event(site_id="site-a"), headers={"x-write-key": "key-a-1"}
        )
        basic_auth = await client.post(
            "/events", json=[event(site_id="site-a")], headers={"authorization": f"Basic {basic}"}
        )
        beacon = await client.post(
            "/events?write_key=key-b",
            content=json.dumps([event(site_id="site-b")]),
            headers={"content-type": "text/plain"},
        )
        mixed_sites = await client.post(
            "/events",
            json=[event(site_id="site-a"), event(site_id="site-b")],
            headers={"x-write-key": "key-a-1"},
        )
    assert missing.status_code == 401
    assert missing.json()["code"] == "write_key_required"
    assert "www-authenticate" in missing.headers
    assert wrong.status_code == 403 and wrong.json()["code"] == "write_key_invalid"
    assert unknown_site.status_code == 403
    assert "key-b" not in wrong.text
    assert [header.status_code, basic_auth.status_code, beacon.status_code] == [202, 202, 202]
    assert mixed_sites.status_code == 403
