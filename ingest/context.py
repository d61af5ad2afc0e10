"""Placeholder until the enrichment of issue 13 lands: the interface it will have.

`Enricher.derive` returns the context of a hit (browser, OS, device, country, referrer,
UTM parameters); this placeholder derives nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec


class Derived(msgspec.Struct, frozen=True):
    browser: str | None = None
    os: str | None = None
    device: str | None = None
    country: str | None = None
    referrer_host: str | None = None
    referrer_source: str | None = None
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None
    utm_content: str | None = None
    utm_term: str | None = None


class Enricher:
    @classmethod
    def from_settings(cls, env: Mapping[str, str]) -> Enricher:
        return cls()

    def derive(
        self,
        *,
        user_agent: str | None,
        client_address: str | None,
        url: str | None,
        referrer: str | None,
        country_header: str | None,
    ) -> Derived:
        return Derived()
