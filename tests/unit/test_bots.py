"""Bot reasons (ingest/bots.py) over tables of real user agents: browsers pass, crawlers,
headless browsers, link-preview fetchers and HTTP tools are named, in the documented order."""

from __future__ import annotations

import sys

import crawleruseragents  # type: ignore[import-untyped]
import pytest

from ingest import bots
from ingest.bots import BOT_REASONS, MAX_USER_AGENT_CHARS, bot_reason

BROWSERS = {
    "chrome-windows": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, "
    "like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "chrome-mac": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, "
    "like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "chrome-os": "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like "
    "Gecko) Chrome/131.0.0.0 Safari/537.36",
    "firefox-windows": "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 "
    "Firefox/133.0",
    "firefox-ubuntu": "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:133.0) Gecko/20100101 "
    "Firefox/133.0",
    "safari-mac": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, "
    "like Gecko) Version/18.1 Safari/605.1.15",
    "edge-windows": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like "
    "Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
    "opera-windows": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like "
    "Gecko) Chrome/131.0.0.0 Safari/537.36 OPR/115.0.0.0",
    "yandex-windows": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, "
    "like Gecko) Chrome/130.0.0.0 YaBrowser/24.12.0.0 Safari/537.36",
    "safari-iphone": "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "chrome-iphone": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) CriOS/131.0.6778.73 Mobile/15E148 Safari/604.1",
    "safari-ipad": "Mozilla/5.0 (iPad; CPU OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
    "like Gecko) Version/17.6 Mobile/15E148 Safari/604.1",
    "firefox-ipad": "Mozilla/5.0 (iPad; CPU OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
    "like Gecko) FxiOS/133.0 Mobile/15E148 Safari/605.1.15",
    "chrome-pixel": "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like "
    "Gecko) Chrome/131.0.6778.81 Mobile Safari/537.36",
    "chrome-android-reduced": "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, "
    "like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
    "chrome-galaxy-tab": "Mozilla/5.0 (Linux; Android 13; SM-X710) AppleWebKit/537.36 (KHTML, "
    "like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "samsung-internet-phone": "Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S918B) "
    "AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/26.0 Chrome/122.0.0.0 Mobile "
    "Safari/537.36",
    "samsung-internet-tab": "Mozilla/5.0 (Linux; Android 13; SAMSUNG SM-X710) AppleWebKit/537.36 "
    "(KHTML, like Gecko) SamsungBrowser/26.0 Chrome/122.0.0.0 Safari/537.36",
    "firefox-android": "Mozilla/5.0 (Android 14; Mobile; rv:133.0) Gecko/133.0 Firefox/133.0",
    "firefox-android-tablet": "Mozilla/5.0 (Android 14; Tablet; rv:133.0) Gecko/133.0 "
    "Firefox/133.0",
    "edge-android": "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Mobile Safari/537.36 EdgA/131.0.0.0",
    "silk-kindle": "Mozilla/5.0 (Linux; Android 11; KFTRWI) AppleWebKit/537.36 (KHTML, like "
    "Gecko) Silk/131.1.1 like Chrome/131.0.6778.200 Safari/537.36",
    # In-app browsers: real people, though their apps name themselves. (Slack's desktop app
    # is not here: the list's "Sonic" pattern matches its user agent, but it never loads a
    # third-party page with it.)
    "instagram-in-app": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) "
    "AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 Instagram 334.0.4.32.98 "
    "(iPhone15,2; iOS 17_5; en_US; en; scale=3.00; 1179x2556; 609788018)",
    "facebook-in-app": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) "
    "AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/470.0.0.38.108;"
    "FBDV/iPhone15,2;FBMD/iPhone;FBSN/iOS;FBSV/17.5;FBSS/3;FBID/phone;FBLC/en_US;FBOP/5]",
    "line-in-app": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148 Safari Line/14.9.0",
}

BOTS = {
    # crawlers: the maintained list, or ua-parser's "Spider"
    "googlebot": (
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "crawler",
    ),
    "googlebot-smartphone": (
        "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, "
        "like Gecko) Chrome/131.0.6778.69 Mobile Safari/537.36 (compatible; Googlebot/2.1; "
        "+http://www.google.com/bot.html)",
        "crawler",
    ),
    "bingbot": (
        "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
        "crawler",
    ),
    "applebot": (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_5) AppleWebKit/605.1.15 (KHTML, like "
        "Gecko) Version/13.1.1 Safari/605.1.15 (Applebot/0.1; +http://www.apple.com/go/applebot)",
        "crawler",
    ),
    "yandexbot": ("Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)", "crawler"),
    "baiduspider": (
        "Mozilla/5.0 (compatible; Baiduspider/2.0; +http://www.baidu.com/search/spider.html)",
        "crawler",
    ),
    "duckduckbot": ("DuckDuckBot/1.1; (+http://duckduckgo.com/duckduckbot.html)", "crawler"),
    "gptbot": (
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko); compatible; GPTBot/1.2; "
        "+https://openai.com/gptbot",
        "crawler",
    ),
    "claudebot": (
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; ClaudeBot/1.0; "
        "+claudebot@anthropic.com)",
        "crawler",
    ),
    "ahrefsbot": ("Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)", "crawler"),
    "semrushbot": (
        "Mozilla/5.0 (compatible; SemrushBot/7~bl; +http://www.semrush.com/bot.html)",
        "crawler",
    ),
    "bytespider": (
        "Mozilla/5.0 (Linux; Android 5.0) AppleWebKit/537.36 (KHTML, like Gecko) Mobile "
        "Safari/537.36 (compatible; Bytespider; spider-feedback@bytedance.com)",
        "crawler",
    ),
    # headless browsers and automation
    "headless-chrome": (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "HeadlessChrome/131.0.0.0 Safari/537.36",
        "headless",
    ),
    "phantomjs": (
        "Mozilla/5.0 (Unknown; Linux x86_64) AppleWebKit/538.1 (KHTML, like Gecko) "
        "PhantomJS/2.1.1 Safari/538.1",
        "headless",
    ),
    "jsdom": (
        "Mozilla/5.0 (linux) AppleWebKit/537.36 (KHTML, like Gecko) jsdom/24.1.0",
        "headless",
    ),
    "cypress": (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Cypress/13.6.0 "
        "Chrome/118.0.5993.159 Electron/27.1.3 Safari/537.36",
        "headless",
    ),
    # link-preview fetchers
    "slackbot": ("Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)", "preview"),
    "facebookexternalhit": (
        "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
        "preview",
    ),
    "twitterbot": ("Twitterbot/1.0", "preview"),
    "whatsapp": ("WhatsApp/2.23.20.0 A", "preview"),
    "discordbot": ("Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)", "preview"),
    "telegrambot": ("TelegramBot (like TwitterBot)", "preview"),
    # a preview fetcher built on an HTTP library: the first check wins
    "linkedinbot": (
        "LinkedInBot/1.0 (compatible; Mozilla/5.0; Apache-HttpClient +http://www.linkedin.com)",
        "preview",
    ),
    "skype": (
        "Mozilla/5.0 (Windows NT 6.1; WOW64) SkypeUriPreview Preview/0.5 "
        "skype-url-preview@microsoft.com",
        "preview",
    ),
    "redditbot": (
        "Mozilla/5.0 (compatible; redditbot/1.0; +http://www.reddit.com/feedback)",
        "preview",
    ),
    "iframely": ("Iframely/1.3.1 (+https://iframely.com/docs/about)", "preview"),
    "mastodon": ("Mastodon/4.2.8 (http.rb/5.1.1; +https://mastodon.social/) Bot", "preview"),
    # HTTP tools and libraries
    "curl": ("curl/8.5.0", "tool"),
    "wget": ("Wget/1.21.4", "tool"),
    "python-requests": ("python-requests/2.32.3", "tool"),
    "python-urllib": ("Python-urllib/3.12", "tool"),
    "aiohttp": ("Python/3.12 aiohttp/3.10.10", "tool"),
    "go": ("Go-http-client/2.0", "tool"),
    "okhttp": ("okhttp/4.12.0", "tool"),
    "axios": ("axios/1.7.7", "tool"),
    "node-fetch": ("node-fetch/1.0 (+https://github.com/bitinn/node-fetch)", "tool"),
    "apache-httpclient": ("Apache-HttpClient/4.5.14 (Java/17.0.9)", "tool"),
    "java": ("Java/17.0.9", "tool"),
    "postman": ("PostmanRuntime/7.42.0", "tool"),
    "httpie": ("HTTPie/3.2.2", "tool"),
    "libwww-perl": ("libwww-perl/6.72", "tool"),
}


@pytest.mark.parametrize("label", sorted(BROWSERS))
def test_a_browser_is_not_a_bot(label: str) -> None:
    assert bot_reason(BROWSERS[label]) is None


@pytest.mark.parametrize("label", sorted(BOTS))
def test_a_bot_is_named_with_its_reason(label: str) -> None:
    user_agent, reason = BOTS[label]
    assert bot_reason(user_agent) == reason


@pytest.mark.parametrize("user_agent", [None, "", "   ", "\t"])
def test_no_user_agent_is_a_reason_of_its_own(user_agent: str | None) -> None:
    assert bot_reason(user_agent) == "no_user_agent"


def test_every_reason_is_reachable_and_listed() -> None:
    reasons = {reason for _, reason in BOTS.values()} | {"no_user_agent"}
    assert reasons == set(BOT_REASONS)


def test_every_example_of_the_maintained_crawler_list_is_a_bot() -> None:
    examples = [
        example
        for entry in crawleruseragents.CRAWLER_USER_AGENTS_DATA
        for example in entry.get("instances", ())
    ]
    assert len(examples) > 1000
    assert [example for example in examples if bot_reason(example) is None] == []


def test_the_list_is_compiled_with_re2_and_without_it_with_re(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert bots.prepare() == "re2"
    monkeypatch.setitem(sys.modules, "re2", None)  # what an environment without it sees
    patterns = [entry["pattern"] for entry in crawleruseragents.CRAWLER_USER_AGENTS_DATA]
    fallback = bots.crawler_pattern(patterns)
    assert fallback.engine == "re"
    assert fallback.search(BOTS["googlebot"][0])
    assert not any(fallback.search(user_agent) for user_agent in BROWSERS.values())


@pytest.mark.parametrize(
    "user_agent",
    [
        "A" * 1_000_000,
        "Mozilla/5.0 " + "(" * 100_000,
        BROWSERS["chrome-windows"] + "\x00" * 1000,
        "Mozilla/5.0 (Windows NT 10.0) Chrome/131 Safari/537.36 \U0001f600" * 50,
        "\u202e\u200b\ufeff Mozilla",
        "é" * 10_000,
        "\\" * 10_000,
    ],
)
def test_hostile_user_agents_get_an_answer(user_agent: str) -> None:
    assert bot_reason(user_agent) in (None, *BOT_REASONS)


def test_a_marker_past_the_examined_prefix_is_not_seen() -> None:
    # The documented bound: only the prefix is scanned, so a long string costs no more.
    hidden = "x" * MAX_USER_AGENT_CHARS + " Googlebot/2.1"
    assert bot_reason(hidden) is None
    assert bot_reason(hidden[-MAX_USER_AGENT_CHARS:]) == "crawler"
