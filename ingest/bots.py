"""Is this hit a bot's, and which kind: a pure decision over the user-agent string.

`bot_reason` answers one of `BOT_REASONS` or None for a browser. The checks run in a fixed
order, so a user agent that is several things is counted under the first:

1. `no_user_agent`: none sent, or only whitespace (every browser sends one).
2. `preview`: link-preview fetchers (chat apps and social networks unfurling a shared link).
3. `headless`: browser automation (headless Chromium, PhantomJS, jsdom, ...).
4. `tool`: HTTP libraries and command-line clients (curl, python-requests, okhttp, ...).
5. `crawler`: any other hit of the maintained crawler list (the crawler-user-agents package,
   1,500+ patterns compiled as one RE2 pattern, linear in the input), or a user agent
   ua-parser's maintained rules call a "Spider".

The explicit lists of steps 2-4 only sort what the maintained data already flags into reasons
an operator can act on; they are not the bot list. Only the first `MAX_USER_AGENT_CHARS`
characters are looked at, and answers are cached by that prefix in a bounded LRU, so no user
agent, however long or however many distinct ones arrive, costs more than one bounded scan.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Final, Literal

import crawleruseragents  # type: ignore[import-untyped]  # the list's data only

from ingest.context import user_agent_parser

BotReason = Literal["no_user_agent", "crawler", "headless", "preview", "tool"]
BOT_REASONS: Final[tuple[BotReason, ...]] = (
    "no_user_agent",
    "preview",
    "headless",
    "tool",
    "crawler",
)

# Real browsers' user agents are 100-300 characters; anything a bot hides past this prefix
# only makes it count as a browser, which it could do by sending a browser's string anyway.
MAX_USER_AGENT_CHARS: Final = 512
# Distinct user agents remembered. Real traffic repeats a few thousand strings; a flood of
# unique ones evicts entries but cannot grow memory past this many prefixes.
CACHED_USER_AGENTS: Final = 4096


class _Pattern:
    """A pattern compiled with RE2 when it is installed (one linear pass over the input,
    whatever the alternation's size) and with Python's `re` otherwise."""

    def __init__(self, pattern: str, *, ignore_case: bool = False) -> None:
        self.search: Callable[[str], object]
        try:
            import re2  # type: ignore[import-untyped]
        except ImportError:
            self.search = re.compile(pattern, re.IGNORECASE if ignore_case else 0).search
            self.engine = "re"
        else:
            options = re2.Options()
            options.case_sensitive = not ignore_case
            # The default 8 MiB is too small for the crawler list's 1,500 alternatives: RE2
            # would fall back to a slower matcher. A bound on the DFA cache, used as needed.
            options.max_mem = 64 << 20
            self.search = re2.compile(pattern, options).search
            self.engine = "re2"


# Link-preview fetchers: they fetch a page once when someone shares it, never a visit. In-app
# browsers (LINE, Snapchat, Instagram, ...) carry their app's name too but are real visitors:
# only the fetchers' own tokens are listed.
_PREVIEW = _Pattern(
    r"Slackbot|Slack-ImgProxy|facebookexternalhit|Facebot|Twitterbot|WhatsApp/|Discordbot"
    r"|TelegramBot|LinkedInBot|SkypeUriPreview|MicrosoftPreview|redditbot|Embedly|Iframely"
    r"|vkShare|Pinterestbot|Mastodon/|Cardyb|Google-PageRenderer|Synapse \(bot"
    r"|Bitrix24 Link|Quora Link Preview|KakaoTalk-Scrap|Yahoo Link Preview",
    ignore_case=True,
)
# Browser automation. Electron itself is not on it: desktop apps embed it for real users.
_HEADLESS = _Pattern(
    r"Headless|PhantomJS|SlimerJS|jsdom/|HtmlUnit|Zombie\.js|Puppeteer|Playwright"
    r"|Selenium|WebDriver|Cypress/|Nightmare/",
    ignore_case=True,
)
# HTTP client libraries and command-line tools, as their default user agents name them: a
# whole token, at the start or after a separator, followed by a version or the end.
_TOOL = _Pattern(
    r"(?:^|[\s;(])(?:curl|Wget|wget2|python-requests|Python-urllib|python-httpx|aiohttp|httpx"
    r"|Go-http-client|okhttp|Apache-HttpClient|Java|Java-http-client|libwww-perl"
    r"|lwp-trivial|GuzzleHttp|axios|node-fetch|undici|got|HTTPie|PostmanRuntime|insomnia"
    r"|Ruby|Faraday|rest-client|reqwest|Dart|Deno|Bun|Scrapy|PycURL|libcurl|WinHttp"
    r"|Mechanize|http\.rb|Typhoeus)(?:[/\s;)]|$)",
    ignore_case=True,
)


@functools.cache
def _crawlers() -> _Pattern:
    """The crawler-user-agents patterns as one alternation (case-sensitive, as published)."""
    patterns = [entry["pattern"] for entry in crawleruseragents.CRAWLER_USER_AGENTS_DATA]
    return crawler_pattern(patterns)


def crawler_pattern(patterns: list[str]) -> _Pattern:
    return _Pattern("|".join(f"(?:{pattern})" for pattern in patterns))


def prepare() -> str:
    """Builds the rules now rather than on the first hit (call it at start-up, about 0.3 s);
    returns the engine of the crawler list, `re2` or `re`."""
    user_agent_parser()
    return _crawlers().engine


def bot_reason(user_agent: str | None) -> BotReason | None:
    """Why a hit with this user agent is a bot's (one of `BOT_REASONS`), or None for a
    browser. Never raises."""
    if user_agent is None:
        return "no_user_agent"
    return _reason_of_prefix(user_agent[:MAX_USER_AGENT_CHARS])


@functools.lru_cache(maxsize=CACHED_USER_AGENTS)
def _reason_of_prefix(user_agent: str) -> BotReason | None:
    if not user_agent.strip():
        return "no_user_agent"
    if _PREVIEW.search(user_agent):
        return "preview"
    if _HEADLESS.search(user_agent):
        return "headless"
    if _TOOL.search(user_agent):
        return "tool"
    if _crawlers().search(user_agent):
        return "crawler"
    device = user_agent_parser().parse_device(user_agent)
    if device is not None and device.family == "Spider":
        return "crawler"
    return None
