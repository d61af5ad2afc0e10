"""Hostile input in the context fields and the browser route, end to end (the conventions
of test_hostile.py: each case followed by a fresh event counted and nothing missing)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from consumer.settings import ConsumerSettings
from tests.e2e.hostile import CJK, Client, event, new_site, views_today
from tests.support import wait_for

pytestmark = pytest.mark.e2e

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
EMOJI = "\U0001f600"  # four UTF-8 bytes


def url_of(size: int) -> str:
    """An absolute URL of exactly `size` UTF-8 bytes, mostly CJK and emoji in its path."""
    head = "https://shop.example/"
    room = size - len(head)
    body = CJK[: (room - 4) // 3 - 1] + EMOJI
    body += "a" * (room - len(body.encode()))
    url = head + body
    assert len(url.encode()) == size
    return url


def props_at_limits() -> dict[str, str]:
    """10 keys of 64 bytes, values of 128 bytes, in characters of every UTF-8 width."""
    props = {}
    for i in range(10):
        key = f"{i:02d}" + "é" * 31  # 2 + 62 = 64 bytes
        props[key] = EMOJI * 31 + CJK[i] + "a"  # 124 + 3 + 1 = 128 bytes
    assert all(len(k.encode()) == 64 and len(v.encode()) == 128 for k, v in props.items())
    return props


def utf8_json(body: Any) -> bytes:
    """JSON as a browser sends it: characters in UTF-8, not `\\u` escapes."""
    return json.dumps(body, ensure_ascii=False).encode()


async def post(client: Client, url: str, body: Any) -> Any:
    return await client.post(
        url, content=utf8_json(body), headers={"content-type": "application/json"}
    )


async def browser(client: Client, hit: dict[str, Any], user_agent: str = FIREFOX) -> Any:
    return await client.post(
        "/api/event",
        content=utf8_json(hit),
        headers={"content-type": "text/plain", "user-agent": user_agent},
    )


async def test_context_fields_at_their_limits_are_stored_and_one_over_refused(
    hostile: tuple[Client, ConsumerSettings],
) -> None:
    client, _ = hostile
    site = new_site()
    longest = url_of(2048)
    context = {"url": longest, "referrer": longest, "props": props_at_limits()}
    response = await post(client, "/event", event(site, **context))
    assert response.status_code == 202, response.text
    response = await post(client, "/events", [event(site, user_id="u2", **context)])
    assert response.json()["accepted"] == 1, response.text
    over: list[tuple[dict[str, Any], str]] = [
        ({"url": url_of(2049)}, "url"),
        ({"referrer": url_of(2049)}, "referrer"),
        ({"props": {**props_at_limits(), "one more": "v"}}, "props"),
        ({"props": {"plan": EMOJI * 32 + "a"}}, "props.plan"),
        ({"props": {"é" * 32 + "a": "v"}}, "props." + "é" * 32 + "a"),
        ({"props": {"": "v"}}, "props"),
        ({"props": {"plan": "\u0000"}}, "props.plan"),
        ({"url": "https://shop.example/\u0000"}, "url"),
    ]
    for changes, field in over:
        response = await post(client, "/event", event(site, **changes))
        assert response.status_code == 400, (field, response.text)
        assert response.json()["field"] == field

    async def two() -> bool:
        return await views_today(client, site) == 2

    await wait_for(two, timeout_s=30, what="both events with context at their limits counted")


async def test_browser_hits_at_their_limits_are_stored_and_one_over_refused(
    hostile: tuple[Client, ConsumerSettings],
) -> None:
    client, _ = hostile
    site = new_site()
    widest_site = site + "-" + CJK[: (128 - len(site) - 1) // 3]
    # Every property at its limits fits in the route's 8 KiB with both URLs at theirs.
    many = props_at_limits()
    accepted = [
        {"n": "pageview", "u": url_of(2048), "d": site, "r": url_of(2048), "p": many},
        {"n": "pageview", "u": url_of(2048), "d": site, "r": url_of(2048), "p": {"k": "v"}},
        {"n": "pageview", "u": "https://shop.example/" + EMOJI, "d": site, "r": None},
        {"n": CJK[:21] + "a", "u": "https://shop.example/", "d": site, "p": {"k": "v"}},
        {"n": "pageview", "u": "https://shop.example/", "d": widest_site},
    ]
    for hit in accepted:
        response = await browser(client, hit)
        assert response.status_code == 202, response.text
    base = {"n": "pageview", "u": "https://shop.example/", "d": site}
    over: list[tuple[dict[str, Any], str]] = [
        ({"u": url_of(2049)}, "u"),
        ({"r": url_of(2049)}, "r"),
        ({"n": CJK[:22]}, "n"),
        ({"d": site + CJK[:40]}, "d"),
        ({"p": {**many, "x": "y"}}, "p"),
        ({"p": {"plan": "a" * 129}}, "p.plan"),
        ({"u": "data:text/html,hi"}, "u"),
        ({"n": "a\u0000"}, "n"),
    ]
    for changes, field in over:
        response = await browser(client, {**base, **changes})
        assert response.status_code == 400, (field, response.text)
        assert response.json()["field"] == field
    oversized = await browser(client, {**base, "p": {"k": "v" * 9000}})
    assert oversized.status_code == 413
    # A bot's hit at the limits is answered like any other, and not stored.
    assert (await browser(client, accepted[0], user_agent="")).status_code == 202

    async def three_views() -> bool:
        return await views_today(client, site) == 3

    await wait_for(three_views, timeout_s=30, what="the page views at their limits counted")
