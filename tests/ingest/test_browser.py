"""The browser route and the context fields against a real broker and PostgreSQL (salts)."""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime

import msgspec
import pytest
from psycopg_pool import PoolTimeout

from core.events import EventRecord
from ingest.app import create_app
from ingest.settings import Settings
from tests.ingest.support import api_client, event, read_topic

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
SAFARI = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)
PLAIN = {"content-type": "text/plain;charset=UTF-8"}


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@pytest.fixture
def browser_settings(api_settings: Settings) -> Settings:
    return msgspec.structs.replace(api_settings, visitor_key=new_key())


def hit(**changes: object) -> str:
    return json.dumps({"n": "pageview", "u": "https://shop.example/pricing?utm_source=x",
                       "d": "site-b", "r": None, **changes})  # fmt: skip


async def test_hits_become_page_views_and_events_with_one_visitor_per_browser(
    browser_settings: Settings, topic: str
) -> None:
    async with api_client(browser_settings) as client:
        answers = [
            await client.post("/api/event", content=hit(), headers={**PLAIN, "user-agent": ua})
            for ua in (FIREFOX, FIREFOX, SAFARI)
        ]
        custom = await client.post(
            "/api/event",
            json={"n": "signup", "u": "https://shop.example/join", "d": "site-b",
                  "p": {"plan": "pro"}},
            headers={"user-agent": FIREFOX},
        )  # fmt: skip
    assert [a.status_code for a in (*answers, custom)] == [202] * 4
    assert all(a.content == b"" for a in answers)
    assert answers[0].headers["access-control-allow-origin"] == "*"
    records = await read_topic(browser_settings.kafka_bootstrap_servers, topic, 4)
    views = [r for r in records if r.event_type == "page_view"]
    (signup,) = [r for r in records if r.event_type == "signup"]
    assert [r.path for r in views] == ["/pricing"] * 3
    assert views[0].utm_source == "x"
    assert views[0].user_id == views[1].user_id != views[2].user_id
    assert signup.user_id == views[0].user_id and signup.props == {"plan": "pro"}
    assert signup.path == "/join" and signup.site_id == "site-b"
    for record in records:
        encoded = msgspec.msgpack.encode(record)
        assert b"127.0.0.1" not in encoded and b"Firefox/128" not in encoded


async def test_bots_are_answered_202_dropped_and_counted(
    browser_settings: Settings, topic: str
) -> None:
    async with api_client(browser_settings) as client:
        bot = await client.post("/api/event", content=hit(), headers={**PLAIN, "user-agent": ""})
        person = await client.post(
            "/api/event", content=hit(u="https://shop.example/person"),
            headers={**PLAIN, "user-agent": FIREFOX},
        )  # fmt: skip
        forwarded = await client.post("/event", json=event(user_agent=""))
        metrics = (await client.get("/metrics")).text
    assert (bot.status_code, bot.content) == (202, b"")
    assert person.status_code == 202
    assert forwarded.status_code == 403  # no write key: the user agent is not honoured
    assert 'ingest_bots_dropped_total{reason="no_user_agent"} 1.0' in metrics
    (record,) = await read_topic(browser_settings.kafka_bootstrap_servers, topic, 1)
    assert record.path == "/person"


async def test_refusals_name_the_field_and_may_be_read_by_any_origin(
    browser_settings: Settings,
) -> None:
    headers = {**PLAIN, "user-agent": FIREFOX}
    async with api_client(browser_settings) as client:
        bad_url = await client.post("/api/event", content=hit(u="/relative"), headers=headers)
        bad_prop = await client.post("/api/event", content=hit(p={"k": "v" * 257}), headers=headers)
        too_big = await client.post("/api/event", content="x" * 9000, headers=headers)
        form = await client.post(
            "/api/event", content=hit(),
            headers={"content-type": "application/x-www-form-urlencoded", "user-agent": FIREFOX},
        )  # fmt: skip
    assert (bad_url.status_code, bad_url.json()["field"]) == (400, "u")
    assert (bad_prop.status_code, bad_prop.json()["field"]) == (400, "p.k")
    assert bad_prop.json()["code"] == "field_too_long"
    assert (too_big.status_code, form.status_code) == (413, 415)
    for answer in (bad_url, bad_prop, too_big, form):
        assert answer.headers["access-control-allow-origin"] == "*"


async def test_without_visitor_key_the_route_is_off_and_the_rest_works(
    api_settings: Settings, topic: str
) -> None:
    async with api_client(api_settings) as client:
        off = await client.post("/api/event", content=hit(), headers={"user-agent": FIREFOX})
        ok = await client.post("/event", json=event())
        browser_ready = await client.get("/readyz/browser")
    assert off.status_code == 503
    assert off.json()["code"] == "browser_route_disabled"
    assert browser_ready.status_code == 503
    assert browser_ready.json()["code"] == "browser_route_disabled"
    assert "VISITOR_KEY" in off.json()["message"]
    assert ok.status_code == 202 and ok.content == b'{"message":"Event accepted"}'


async def test_without_a_salt_for_the_day_the_route_answers_503(browser_settings: Settings) -> None:
    unreachable = "postgresql://postgres@127.0.0.1:9/analytics?connect_timeout=1"
    settings = msgspec.structs.replace(browser_settings, database_url=unreachable, db_timeout_s=0.5)
    async with api_client(settings) as client:
        answer = await client.post("/api/event", content=hit(), headers={"user-agent": FIREFOX})
        ok = await client.post("/event", json=event())
        ready = await client.get("/readyz/browser")
        ingest_ready = await client.get("/readyz")
    assert answer.status_code == 503
    assert answer.json()["code"] == "visitor_salt_unavailable"
    assert ok.status_code == 202
    # /event needs no database: the API stays ready for it.
    assert ingest_ready.status_code == 200, ingest_ready.text
    # The browser route is not: a load balancer routing /api/event apart sends browser hits
    # to replicas that have the salt.
    assert ready.status_code == 503, ready.text
    assert ready.json()["code"] == "visitor_salt_unavailable"
    assert ready.json()["message"].startswith("Not ready: ")
    assert "retry-after" in ready.headers


async def test_with_the_days_salt_the_api_is_ready(browser_settings: Settings) -> None:
    async with api_client(browser_settings) as client:
        ready = await client.get("/readyz/browser")
    assert ready.status_code == 200, ready.text


async def test_a_replica_with_another_key_refuses_hits_and_is_not_ready(
    browser_settings: Settings, topic: str
) -> None:
    other = msgspec.structs.replace(browser_settings, visitor_key=new_key())
    async with api_client(other) as first:  # the first replica seals the day's salts
        assert (await first.get("/readyz/browser")).status_code == 200
    async with api_client(browser_settings) as client:
        answer = await client.post("/api/event", content=hit(), headers={"user-agent": FIREFOX})
        ready = await client.get("/readyz/browser")
        ok = await client.post("/event", json=event())
    assert answer.status_code == 503
    assert answer.json()["code"] == "visitor_key_mismatch"
    assert ready.status_code == 503, ready.text
    assert ready.json()["code"] == "visitor_key_mismatch"
    assert "VISITOR_KEY" in ready.json()["message"]
    assert ok.status_code == 202


async def test_the_salt_keeper_has_its_own_connection(browser_settings: Settings) -> None:
    """Stats questions holding every connection of the stats pool leave the keeper's."""
    settings = msgspec.structs.replace(browser_settings, db_pool_max_size=1, db_timeout_s=0.5)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        held = await app.state.pool.getconn()
        try:
            with pytest.raises(PoolTimeout):
                await app.state.pool.getconn(timeout=0.2)
            salts = app.state.browser.salts
            await salts.refresh(app.state.salt_pool)
        finally:
            await app.state.pool.putconn(held)
    assert salts.salt_for(datetime.now(UTC).date()) is not None


async def test_context_fields_travel_on_event_and_events(
    api_settings: Settings, topic: str
) -> None:
    context = {
        "url": "https://shop.example/é?utm_campaign=spring",
        "referrer": "https://search.example/?q=shoes",
        "props": {"plan": "pro", "größe": "L"},
    }
    async with api_client(api_settings) as client:
        one = await client.post("/event", json=event(path="/one", **context))
        many = await client.post("/events", json=[event(path="/two", **context)])
    assert one.content == b'{"message":"Event accepted"}'
    assert many.json()["accepted"] == 1
    records = await read_topic(api_settings.kafka_bootstrap_servers, topic, 2)
    for record in records:
        assert isinstance(record, EventRecord)
        # What is derived from the URL and the referrer travels; they themselves do not
        # (a full URL can carry personal data in its query string).
        assert (record.utm_campaign, record.referrer_host, record.props) == (
            "spring", "search.example", context["props"],
        )  # fmt: skip
        assert "shoes" not in repr(record)


async def test_forwarded_browser_fields_need_a_valid_write_key(
    api_settings: Settings, topic: str
) -> None:
    forwarded = {"user_agent": FIREFOX, "client_address": "203.0.113.9"}
    async with api_client(api_settings) as client:
        refused = await client.post("/event", json=event(**forwarded))
        batch = await client.post("/events", json=[event(**forwarded), event(path="/kept")])
    assert refused.status_code == 403
    assert refused.json()["code"] == "write_key_needed"
    assert refused.json()["field"] == "user_agent"
    assert batch.status_code == 202
    assert [(e["code"], e["field"]) for e in batch.json()["errors"]] == [
        ("write_key_needed", "user_agent")
    ]
    keyed = msgspec.structs.replace(api_settings, write_keys={"site-abc-123": ["k-1"]})
    async with api_client(keyed) as client:
        honoured = await client.post(
            "/event", json=event(path="/forwarded", **forwarded), headers={"x-write-key": "k-1"}
        )
        bot = await client.post(
            "/event", json=event(user_agent="", path="/bot"), headers={"x-write-key": "k-1"}
        )
    assert honoured.status_code == 202 and honoured.content == b'{"message":"Event accepted"}'
    assert bot.status_code == 202
    records = await read_topic(api_settings.kafka_bootstrap_servers, topic, 2)
    assert sorted(r.path for r in records) == ["/forwarded", "/kept"]
    for record in records:
        assert b"203.0.113.9" not in msgspec.msgpack.encode(record)
