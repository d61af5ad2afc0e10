"""The dashboard in a real headless Chromium: the top line, the chart, top paths, sources
with their UTM tabs, entry and exit pages and the current visitors appear, and they follow
new events. Saves test-artifacts/dashboard.png.

Chromium is Debian's package (services/chromium.sh install, run by `make test`); Playwright
drives it through its executable path.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, async_playwright

from consumer.batch import to_row
from consumer.write import Writer
from ingest.settings import Settings
from tests.integration.test_stats_visits import CPC, GOOGLE, HN, MAIL, Visit, seed_visits
from tests.processes import ROOT, start_api
from tests.support import make_record

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
SCREENSHOT = ROOT / "test-artifacts" / "dashboard.png"
SITE = "site-dash"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: run `services/chromium.sh install` (make test does)")
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


def context_of(user: str) -> dict[str, str]:
    """A visitor's device and country: u0, u2, u4, u6 on phones in NL, the others desktops
    in DE."""
    if int(user[1:]) % 2 == 0:
        return {"device": "mobile", "browser": "Mobile Safari", "os": "iOS", "country": "NL"}
    return {"device": "desktop", "browser": "Firefox", "os": "Linux", "country": "DE"}


async def write_views(database_url: str, views: list[tuple[str, str, str]], offset: int) -> None:
    writer = Writer(database_url, "dash", "events")
    try:
        rows = [
            to_row(
                make_record(
                    site_id=SITE,
                    path=path,
                    user_id=user,
                    **context_of(user),
                    timestamp=dt.datetime.fromisoformat(ts).replace(tzinfo=dt.UTC),
                )
            )
            for ts, path, user in views
        ]
        await writer.write(rows, {0: offset + len(rows)}, {0: offset} if offset else {})
    finally:
        await writer.close()


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def dashboard_visits(now: dt.datetime) -> list[Visit]:
    """Four visits in November 2025 (two bounces; 300 + 0 + 90 + 0 s; 7 page views), and two
    visitors active a minute ago."""
    return [
        Visit("u1", utc("2025-11-03 10:00"), utc("2025-11-03 10:05"), "/", "/pricing", 3, 3,
              site_id=SITE, **GOOGLE),
        Visit("u2", utc("2025-11-04 11:00"), utc("2025-11-04 11:00"), "/blog", "/blog", 1, 1,
              site_id=SITE, **GOOGLE, **CPC),
        Visit("u3", utc("2025-11-05 12:00"), utc("2025-11-05 12:01:30"), "/", "/docs", 2, 2,
              site_id=SITE, **MAIL),
        Visit("u4", utc("2025-11-06 09:00"), utc("2025-11-06 09:00"), "/", "/", 1, 1,
              site_id=SITE, **HN),
        Visit("r1", now - dt.timedelta(minutes=2), now - dt.timedelta(minutes=1), "/", "/", 2, 2,
              site_id=SITE),
        Visit("r2", now - dt.timedelta(minutes=3), now - dt.timedelta(seconds=30), "/", "/", 1, 1,
              site_id=SITE),
    ]  # fmt: skip


async def rows_of(page: Any, table: str) -> list[list[str]]:
    return [
        await row.locator("td").all_text_contents()
        for row in await page.locator(f"#{table} tbody tr").all()
    ]


async def test_dashboard_shows_totals_chart_and_top_paths(
    browser: Browser,
    api_settings: Settings,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    views = [
        (f"2025-11-{day:02d} {hour:02d}:00:00", path, f"u{(day * hour) % 7}")
        for day in range(1, 31)
        for hour in range(0, 24, 3)
        for path in (["/", "/pricing"] if day % 2 else ["/", "/docs", "/blog"])
        if (day + hour) % 4
    ]
    await write_views(database_url, views, 0)
    seed_visits(database_url, dashboard_visits(dt.datetime.now(dt.UTC)))
    monkeypatch.setenv("DASHBOARD_REFRESH_S", "1")
    api, base_url = start_api(api_settings, tmp_path)
    try:
        page = await browser.new_page(viewport={"width": 1100, "height": 900})
        await page.goto(
            f"{base_url}/dashboard?site_id={SITE}&period=month&date=2025-11-30&timezone=UTC"
        )
        await page.wait_for_selector("body[data-loaded=true]", timeout=20_000)
        assert await page.text_content("#site") == SITE
        assert await page.text_content("#total-views") == f"{len(views):,}"
        assert await page.text_content("#total-visitors") == "7"
        line = page.locator("#chart svg path.line")
        assert await line.get_attribute("data-points") == "30"
        assert len(await line.get_attribute("d") or "") > 100
        first_row = page.locator("#top-paths tbody tr").first
        top_views = sum(1 for v in views if v[1] == "/")
        assert await first_row.locator("td").all_text_contents() == ["/", f"{top_views:,}", "7"]
        phone_views = sum(1 for v in views if int(v[2][1:]) % 2 == 0)
        by_device = {
            "mobile": [f"{phone_views:,}", "4"],
            "desktop": [f"{len(views) - phone_views:,}", "3"],
        }
        rows = await page.locator("#devices tbody tr").all()
        shown = {}
        for row in rows:
            device, *numbers = await row.locator("td").all_text_contents()
            shown[device] = numbers
        assert shown == by_device
        countries = await page.locator("#countries tbody td:first-child").all_text_contents()
        assert sorted(countries) == ["DE", "NL"]
        assert await page.locator("#custom-events tbody tr").count() == 0  # page views only

        # The visits' top line: 4 visits, 2 bounces, 97.5 s on average, 7 page views.
        assert await page.text_content("#total-visits") == "4"
        assert await page.text_content("#total-bounce-rate") == "50%"
        assert await page.text_content("#total-visit-duration") == "1m 38s"
        assert await page.text_content("#total-views-per-visit") == "1.75"
        assert await rows_of(page, "sources") == [
            ["Google", "2", "2", "50%"],
            ["(not set)", "1", "1", "0%"],
            ["Hacker News", "1", "1", "100%"],
        ]
        await page.click("[data-tab=utm-medium]")
        await page.wait_for_selector("#utm-medium:not([hidden]) tbody tr")
        assert await page.locator("#sources").is_hidden()
        assert await rows_of(page, "utm-medium") == [
            ["(not set)", "2", "2", "50%"],
            ["cpc", "1", "1", "100%"],
            ["email", "1", "1", "0%"],
        ]
        await page.click("[data-tab=entry-pages]")
        await page.wait_for_selector("#entry-pages:not([hidden]) tbody tr")
        assert await page.locator("#top-paths").is_hidden()
        assert await rows_of(page, "entry-pages") == [["/", "3", "3"], ["/blog", "1", "1"]]
        await page.click("[data-tab=exit-pages]")
        await page.wait_for_selector("#exit-pages:not([hidden]) tbody tr")
        assert len(await rows_of(page, "exit-pages")) == 4
        await page.wait_for_selector("#realtime[data-loaded=true]", timeout=20_000)
        assert await page.text_content("#realtime") == "2 current visitors"
        await page.click("[data-tab=top-paths]")
        await page.wait_for_selector("#top-paths:not([hidden])")

        # New events show up at the next refresh.
        await write_views(database_url, [("2025-11-30 23:00:00", "/new", "u99")], len(views))
        await page.wait_for_function(
            "text => document.querySelector('#total-views').textContent === text",
            arg=f"{len(views) + 1:,}",
            timeout=20_000,
        )
        assert await page.text_content("#total-visitors") == "8"
        SCREENSHOT.parent.mkdir(exist_ok=True)
        await page.screenshot(path=str(SCREENSHOT), full_page=True)
    finally:
        api.terminate()


async def test_clicking_a_custom_event_shows_its_properties(
    browser: Browser,
    api_settings: Settings,
    database_url: str,
    tmp_path: Path,
) -> None:
    events = [
        ("signup", "u1", {"plan": "pro", "source": "ads"}),
        ("signup", "u2", {"plan": "pro"}),
        ("signup", "u2", {"plan": "free"}),
        ("signup", "u3", None),
        ("purchase", "u1", {"plan": "pro", "size": "L"}),
        ("page_view", "u4", {"plan": "pro"}),
    ]
    writer = Writer(database_url, "dash", "events")
    try:
        rows = [
            to_row(
                make_record(
                    site_id=SITE,
                    event_type=kind,
                    user_id=user,
                    props=props,
                    timestamp=dt.datetime(2025, 11, 12, 10, i, tzinfo=dt.UTC),
                )
            )
            for i, (kind, user, props) in enumerate(events)
        ]
        await writer.write(rows, {0: len(rows)}, {})
    finally:
        await writer.close()
    api, base_url = start_api(api_settings, tmp_path)
    try:
        page = await browser.new_page(viewport={"width": 1100, "height": 900})
        await page.goto(
            f"{base_url}/dashboard?site_id={SITE}&period=day&date=2025-11-12&timezone=UTC"
        )
        await page.wait_for_selector("body[data-loaded=true]", timeout=20_000)
        assert await page.locator("#event-properties").is_hidden()
        custom = page.locator("#custom-events tbody tr")
        assert await custom.locator("td:first-child").all_text_contents() == ["signup", "purchase"]

        await custom.first.click()
        await page.wait_for_selector("#event-properties:not([hidden]) #properties tbody tr")
        assert await page.text_content("#selected-event") == "signup"
        shown = [
            await row.locator("td").all_text_contents()
            for row in await page.locator("#properties tbody tr").all()
        ]
        # Visitors among the signups with that value; the signup without properties has none.
        assert shown == [
            ["plan", "pro", "2", "2"],
            ["plan", "free", "1", "1"],
            ["source", "ads", "1", "1"],
        ]
        await custom.nth(1).click()
        await page.wait_for_function(
            "document.querySelector('#selected-event').textContent === 'purchase'"
        )
        keys = await page.locator("#properties tbody td:first-child").all_text_contents()
        assert sorted(keys) == ["plan", "size"]
        SCREENSHOT.parent.mkdir(exist_ok=True)
        await page.screenshot(
            path=str(SCREENSHOT.with_name("dashboard-properties.png")), full_page=True
        )
    finally:
        api.terminate()
