"""Placeholder until the bot detection of issue 13 lands: the interface it will have.

Only an empty or missing user agent is called a bot here; the real module recognises
crawlers, headless browsers, link-preview fetchers and HTTP tools from maintained lists.
"""

from __future__ import annotations


def bot_reason(user_agent: str | None) -> str | None:
    """Why a hit with this user agent is a bot's ("no_user_agent", "crawler", "headless",
    "preview", "tool"), or None for a browser."""
    if not user_agent or not user_agent.strip():
        return "no_user_agent"
    return None
