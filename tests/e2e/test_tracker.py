"""The tracker script in a real headless Chromium, on a plain HTML page served by this test
(not by the API) that loads the script from the running API.

The page is a small single-page app: a call queued before the script loads, two pushState
navigations, replaceState calls that keep the URL, a custom event with properties and a
popstate. The first tests check what the browser sent, by pointing `data-api` at a recorder
of this test on another origin (so CORS applies, and a preflight would show); the last one
lets the script send the same hits to the API's `POST /api/event` and finds every one of
them in the stats API.

Chromium is Debian's package (services/chromium.sh install, run by `make test`).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
import secrets
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec
import pytest
from playwright.async_api import Browser, Page, Request, async_playwright

from consumer.settings import ConsumerSettings
from ingest.settings import Settings
from tests.e2e.test_dashboard import CHROMIUM, CHROMIUM_ARGS
from tests.processes import start_api, start_consumer

pytestmark = pytest.mark.e2e

SITE = "site-tracker"
WAIT_S = 30.0
# A desktop browser's user agent: HeadlessChrome's own is a bot's, which the API drops.
DESKTOP_UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
REFERRER = "https://news.example.org/"
# A name Chromium resolves to loopback (--host-resolver-rules): a page that is not local.
SHOP_HOST = "shop.test"

# docs/tracker.md's queue snippet, then a call made before the deferred script has loaded.
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Shop</title>
<script>
window.analytics = window.analytics || function () {
  (window.analytics.q = window.analytics.q || []).push(arguments) };
analytics("early", {props: {from: "queue"}});
</script>
<script defer data-site="%(site)s" %(attributes)s src="%(api)s/js/script.js"></script>
</head><body>
<nav><a href="/app/pricing" data-route>Pricing</a>
  <a href="/app/signup" data-route>Sign up</a></nav>
<main id="view"></main>
<button id="buy">Start the pro plan</button>
<script>
function render() { document.getElementById("view").textContent = location.pathname; }
document.addEventListener("click", function (e) {
  var link = e.target.closest("a[data-route]");
  if (!link) return;
  e.preventDefault();
  history.pushState({}, "", link.getAttribute("href"));
  render();
});
document.getElementById("buy").addEventListener("click", function () {
  analytics("signup", {props: {plan: "pro", seats: 3}});
});
window.addEventListener("popstate", render);
render();
</script>
</body></html>
"""

# What the single-page app of drive_app sends, in order: (name, path).
EXPECTED_HITS = [
    ("pageview", "/app/"),
    ("early", "/app/"),
    ("pageview", "/app/pricing"),
    ("pageview", "/app/signup"),
    ("signup", "/app/signup"),
    ("pageview", "/app/pricing"),
]


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class SitePages:
    """The site's pages on one origin, and on another a recorder of whatever reaches it."""

    page_url: str = ""
    recorder_url: str = ""
    api_url: str = ""
    attributes: str = ""  # extra attributes of the script tag
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def page(self) -> bytes:
        values = {"site": SITE, "attributes": self.attributes, "api": self.api_url}
        return (PAGE % values).encode()

    def record(self, item: Received) -> None:
        with self.lock:
            self.received.append(item)

    def recorded(self) -> list[Received]:
        with self.lock:
            return list(self.received)


def handler_for(site: SitePages, recorder: bool) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            if recorder:
                self.answer_recorded()
                return
            if not self.path.startswith("/app/"):
                self.send_error(404)
                return
            body = site.page()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def answer_recorded(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            headers = {k.lower(): v for k, v in self.headers.items()}
            site.record(Received(self.command, self.path, headers, self.rfile.read(length)))
            self.send_response(202)
            self.send_header("Access-Control-Allow-Origin", "*")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self) -> None:
            self.answer_recorded() if recorder else self.send_error(405)

        do_OPTIONS = do_POST  # a preflight is recorded, and the tests refuse any

    return Handler


@pytest.fixture
def site() -> Iterator[SitePages]:
    """Two loopback HTTP servers of this test: the pages and the recorder."""
    test_site = SitePages()
    servers = []
    for recorder in (False, True):
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(test_site, recorder))
        threading.Thread(target=server.serve_forever, name="test-site", daemon=True).start()
        servers.append(server)
    test_site.page_url = f"http://127.0.0.1:{servers[0].server_address[1]}"
    test_site.recorder_url = f"http://127.0.0.1:{servers[1].server_address[1]}"
    try:
        yield test_site
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: run `services/chromium.sh install` (make test does)")
    async with async_playwright() as p:
        # Playwright gives each launch a fresh temporary profile (its --user-data-dir).
        b = await p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                *CHROMIUM_ARGS,
                "--disable-quic",
                f"--host-resolver-rules=MAP {SHOP_HOST} 127.0.0.1",
            ],
        )
        try:
            yield b
        finally:
            await b.close()


@pytest.fixture
def api_url(api_settings: Settings, tmp_path: Path, site: SitePages) -> Iterator[str]:
    """The API as a real process; it serves the script the page loads."""
    api, base_url = start_api(api_settings, tmp_path)
    site.api_url = base_url
    try:
        yield base_url
    finally:
        api.terminate()


async def until(condition: Callable[[], bool], what: str) -> None:
    """Waits (bounded) until the condition holds; fails naming what did not happen."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while not condition():
        if loop.time() > deadline:
            pytest.fail(f"not within {WAIT_S:.0f}s: {what}")
        await asyncio.sleep(0.05)


def sent_to(page: Page, endpoint: str) -> list[Request]:
    """The page's requests to the endpoint, in the order the page made them (live list)."""
    requests: list[Request] = []
    page.on("request", lambda r: requests.append(r) if r.url == endpoint else None)
    return requests


async def drive_app(page: Page, site: SitePages, sent: list[Request]) -> None:
    """Loads the app and walks through it, each step once the previous one's hits left."""

    async def step(count: int) -> None:
        await until(lambda: len(sent) >= count, f"{count} hits sent ({len(sent)} so far)")

    await page.goto(f"{site.page_url}/app/?utm_source=newsletter", referer=REFERRER)
    await step(2)  # the page view, then the queued call
    await page.click("text=Pricing")
    await step(3)
    await page.click("text=Sign up")
    await step(4)
    # The same URL again, and a fragment alone: no page view for either.
    await page.evaluate("history.replaceState({}, '', location.href)")
    await page.evaluate("history.replaceState({}, '', '#plans')")
    await page.click("#buy")
    await step(5)
    await page.go_back()
    await step(6)


def body_of(request: Request) -> dict[str, Any]:
    body = json.loads(request.post_data or "null")
    assert isinstance(body, dict)
    return body


# Playwright does not show a beacon's body: this keeps each Blob the page hands to
# sendBeacon (and then sends it as it would have).
BEACON_SPY = """
window.beacons = [];
const sendBeacon = Navigator.prototype.sendBeacon;
Navigator.prototype.sendBeacon = function (url, data) {
  window.beacons.push(data);
  return sendBeacon.call(this, url, data);
};
"""


async def beacons(page: Page) -> list[tuple[str, dict[str, Any]]]:
    """(Blob type, decoded body) of each beacon the page sent, in order."""
    sent = await page.evaluate(
        "Promise.all(window.beacons.map(async b => [b.type, await b.text()]))"
    )
    return [(kind, json.loads(text)) for kind, text in sent]


async def test_the_browser_sends_every_hit_once_with_no_preflight(
    browser: Browser, site: SitePages, api_url: str
) -> None:
    collect = f"{site.recorder_url}/collect"
    site.attributes = f'data-api="{collect}" data-allow-local'
    page = await browser.new_page()
    await page.add_init_script(BEACON_SPY)
    sent = sent_to(page, collect)
    await drive_app(page, site, sent)

    assert {r.resource_type for r in sent} == {"ping"}  # beacons
    spied = await beacons(page)
    assert {kind for kind, _ in spied} == {"text/plain"}
    bodies = [body for _, body in spied]
    assert [(b["n"], urlsplit(b["u"]).path) for b in bodies] == EXPECTED_HITS
    assert {b["d"] for b in bodies} == {SITE}
    assert bodies[0]["u"] == f"{site.page_url}/app/?utm_source=newsletter"
    assert {b["r"] for b in bodies} == {REFERRER}
    assert [b.get("p") for b in bodies] == [
        None,
        {"from": "queue"},
        None,
        None,
        {"plan": "pro", "seats": "3"},  # values are sent as strings
        None,
    ]
    assert set(bodies[0]) == {"n", "u", "d", "r"}  # nothing else: no identifier of any kind

    # What reached the other origin: exactly these, as simple requests (no preflight).
    await until(lambda: len(site.recorded()) >= len(sent), "every hit received")
    received = site.recorded()
    assert [(r.method, r.path) for r in received] == [("POST", "/collect")] * len(sent)
    assert Counter(json.dumps(json.loads(r.body)) for r in received) == Counter(
        json.dumps(body) for body in bodies
    )
    for r in received:
        assert r.headers["content-type"] == "text/plain"
        assert r.headers["origin"] == site.page_url
        assert "cookie" not in r.headers
    await page.close()


async def test_fetch_with_keepalive_where_there_is_no_sendbeacon(
    browser: Browser, site: SitePages, api_url: str
) -> None:
    collect = f"{site.recorder_url}/collect"
    site.attributes = f'data-api="{collect}" data-allow-local'
    page = await browser.new_page()
    await page.add_init_script("delete Navigator.prototype.sendBeacon")
    sent = sent_to(page, collect)
    await drive_app(page, site, sent)

    assert {r.resource_type for r in sent} == {"fetch"}
    assert [(body_of(r)["n"], urlsplit(body_of(r)["u"]).path) for r in sent] == EXPECTED_HITS
    await until(lambda: len(site.recorded()) >= len(sent), "every hit received")
    received = site.recorded()
    assert [(r.method, r.headers["content-type"]) for r in received] == [
        ("POST", "text/plain")
    ] * len(sent)
    await page.close()


@pytest.mark.parametrize("host", ["127.0.0.1", SHOP_HOST], ids=["local-page", "automated"])
async def test_local_pages_and_automated_browsers_send_nothing_unless_allowed(
    browser: Browser, site: SitePages, api_url: str, host: str
) -> None:
    """A page on 127.0.0.1 is local; one on shop.test is not, but Playwright's browser says
    it is automated (navigator.webdriver)."""
    collect = f"{site.recorder_url}/collect"
    site.attributes = f'data-api="{collect}"'  # no data-allow-local
    page = await browser.new_page()
    assert await page.evaluate("navigator.webdriver") is True
    sent = sent_to(page, collect)
    sentinel = f"{site.recorder_url}/sentinel"
    seen: list[str] = []
    page.on("request", lambda r: seen.append(r.url))
    await page.goto(f"{site.page_url.replace('127.0.0.1', host)}/app/")
    await page.wait_for_function("window.analytics && window.analytics.live === 1")
    await page.click("text=Pricing")
    await page.click("#buy")
    # A request the page makes after all of that: once it is seen, any hit would have been.
    await page.evaluate("url => fetch(url, {method: 'POST', body: 'after'})", sentinel)
    await until(lambda: sentinel in seen, "the sentinel request")
    assert sent == []
    await page.close()


@pytest.fixture
def visitor_key(monkeypatch: pytest.MonkeyPatch) -> str:
    """The API's key for the daily visitor salts (the browser route needs one)."""
    key = os.environ.get("VISITOR_KEY") or base64.b64encode(secrets.token_bytes(32)).decode()
    monkeypatch.setenv("VISITOR_KEY", key)
    return key


@pytest.fixture
def tracked_pipeline(
    visitor_key: str,
    api_settings: Settings,
    consumer_settings: ConsumerSettings,
    tmp_path: Path,
    site: SitePages,
) -> Iterator[str]:
    """The API and a consumer as real processes; yields the API's base URL."""
    consumer = start_consumer(consumer_settings, tmp_path)
    settings = msgspec.structs.replace(api_settings, visitor_key=visitor_key)
    api, base_url = start_api(settings, tmp_path)
    site.api_url = base_url
    try:
        yield base_url
    finally:
        api.terminate()
        consumer.terminate()


async def wait_for_browser_route(base_url: str) -> None:
    """Waits while the browser route answers 503 (no salt yet). The probe is a hit of
    another site, so it counts nowhere this test looks."""
    probe = {"n": "pageview", "u": "https://probe.example/", "d": "site-probe", "r": None}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    async with httpx.AsyncClient(base_url=base_url, headers={"User-Agent": DESKTOP_UA}) as http:
        while True:
            r = await http.post(
                "/api/event", content=json.dumps(probe), headers={"Content-Type": "text/plain"}
            )
            if r.status_code == 202:
                return
            if r.status_code != 503 or loop.time() > deadline:
                pytest.fail(f"POST /api/event answered {r.status_code}: {r.text}")
            await asyncio.sleep(0.2)


async def test_every_hit_reaches_the_stats_api(
    browser: Browser, site: SitePages, tracked_pipeline: str
) -> None:
    base_url = tracked_pipeline
    await wait_for_browser_route(base_url)
    site.attributes = "data-allow-local"  # the script posts to its own origin's /api/event
    context = await browser.new_context(user_agent=DESKTOP_UA)
    page = await context.new_page()
    sent = sent_to(page, f"{base_url}/api/event")
    await drive_app(page, site, sent)
    await context.close()

    today = dt.datetime.now(dt.UTC).date()
    window = {"site_id": SITE, "period": "7d", "date": today.isoformat()}  # midnight-proof
    names = Counter(name for name, _ in EXPECTED_HITS)
    views = Counter(path for name, path in EXPECTED_HITS if name == "pageview")
    async with httpx.AsyncClient(base_url=base_url) as http:

        async def stats(route: str, **params: str) -> Any:
            r = await http.get(f"/api/v1/stats/{route}", params={**window, **params})
            assert r.status_code == 200, r.text
            return r.json()["results"]

        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_S
        while (await stats("aggregate"))["events"]["value"] < len(EXPECTED_HITS):
            if loop.time() > deadline:
                pytest.fail(f"hits missing from the stats: {await stats('aggregate')}")
            await asyncio.sleep(0.2)

        aggregate = await stats("aggregate")
        assert aggregate["events"]["value"] == len(EXPECTED_HITS)
        assert aggregate["views"]["value"] == names["pageview"]
        assert aggregate["visitors"]["value"] == 1  # one address, one browser, one day
        by_name = await stats("breakdown", property="event:name")
        assert {row["event_type"]: row["events"] for row in by_name} == {
            "page_view" if name == "pageview" else name: count for name, count in names.items()
        }
        by_page = await stats("breakdown", property="event:page")
        assert {row["path"]: row["views"] for row in by_page} == dict(views)

        # The consumer made one visit of the hits: no gap between them, one visitor.
        visit = await stats(
            "aggregate", metrics="visits,bounce_rate,views_per_visit,visit_duration"
        )
        assert visit["visits"]["value"] == 1
        assert visit["bounce_rate"]["value"] == 0
        assert visit["views_per_visit"]["value"] == names["pageview"]
        assert 0 <= visit["visit_duration"]["value"] < WAIT_S

        async def first(prop: str) -> list[Any]:
            rows = await stats("breakdown", property=prop, metrics="visits")
            return [(row[prop.removeprefix("visit:")], row["visits"]) for row in rows]

        assert await first("visit:entry_page") == [(EXPECTED_HITS[0][1], 1)]
        assert await first("visit:exit_page") == [(EXPECTED_HITS[-1][1], 1)]
        assert await first("visit:utm_source") == [("newsletter", 1)]
        assert await first("visit:referrer") == [(urlsplit(REFERRER).hostname, 1)]
        r = await http.get("/api/v1/stats/realtime/visitors", params={"site_id": SITE})
        assert (r.status_code, r.json()) == (200, 1)

    # The dashboard shows the same visit, live.
    page = await browser.new_page()
    await page.goto(f"{base_url}/dashboard?site_id={SITE}&period=7d&date={today.isoformat()}")
    await page.wait_for_selector("body[data-loaded=true]", timeout=20_000)
    assert await page.text_content("#total-visits") == "1"
    assert await page.text_content("#total-bounce-rate") == "0%"
    assert await page.text_content("#current-visitors") == "1"
