"""Parsing settings from the environment (errors that name the variable; core/settings.py
declares which there are), and keeping the database password out of logs."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from urllib.parse import unquote

from psycopg.conninfo import conninfo_to_dict, make_conninfo


class ConfigError(ValueError):
    """A setting that cannot be used; the message names the variable."""


def parse_whole(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None


def parse_number(name: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None


def parse_switch(raw: str) -> bool:
    """On unless `0` or `false`."""
    return raw not in ("0", "false")


def parse_site_keys(raw: str, name: str) -> dict[str, tuple[str, ...]]:
    """`site-a=key1,site-a=key2,site-b=key3` -> {"site-a": ("key1", "key2"), ...}."""
    keys: dict[str, list[str]] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        site, sep, key = item.partition("=")
        if not sep or not site.strip() or not key.strip():
            raise ConfigError(f"{name} must be site_id=key pairs separated by commas")
        keys.setdefault(site.strip(), []).append(key.strip())
    return {site: tuple(ks) for site, ks in keys.items()}


def parse_hot_sites(raw: str) -> dict[str, int]:
    """`HOT_SITES=site-a:4,site-b:8`: each named site spread over that many sub-keys."""
    spread: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        site, _, count = item.rpartition(":")
        if not site or not count.isdigit() or int(count) < 1:
            raise ConfigError(f"HOT_SITES must look like site-a:4,site-b:8, got {item!r}")
        spread[site] = int(count)
    return spread


def parse_origins(raw: str) -> list[str]:
    """`CORS_ALLOW_ORIGINS=https://a.example, https://b.example`: entries trimmed, empty ones
    dropped (a space after a comma must not make an origin that never matches)."""
    return [origin for origin in (part.strip() for part in raw.split(",")) if origin]


HIDDEN = "***"


def redacted_conninfo(conninfo: str) -> str:
    """A libpq connection string (URL or key=value) fit for logs: its password shown as ***.

    URLs keep their shape (the userinfo's password and any `password=` query parameter are
    replaced); key=value strings are parsed by libpq and written back. A string libpq cannot
    parse is not shown at all.
    """
    scheme, sep, rest = conninfo.partition("://")
    if sep and scheme in ("postgresql", "postgres"):
        end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
        netloc, tail = rest[:end], rest[end:]
        userinfo, at, hosts = netloc.rpartition("@")
        if at and ":" in userinfo:
            netloc = f"{userinfo.partition(':')[0]}:{HIDDEN}@{hosts}"
        path, question, query = tail.partition("?")
        if question:
            pairs = [
                f"password={HIDDEN}" if p.partition("=")[0] == "password" else p
                for p in query.split("&")
            ]
            tail = f"{path}?{'&'.join(pairs)}"
        return f"{scheme}://{netloc}{tail}"
    try:
        params = conninfo_to_dict(conninfo)
    except Exception:  # psycopg.ProgrammingError; its message may quote the string
        return "(a connection string that cannot be parsed)"
    if "password" in params:
        params["password"] = HIDDEN
    return make_conninfo("", **params)


def without_password(text: str, conninfo: str) -> str:
    """`text` (an error message, say) with the password of `conninfo` replaced by ***, as
    written in the string and as decoded, should the text quote either."""
    secrets = set()
    rest = conninfo.partition("://")[2]
    userinfo = rest.split("/")[0].split("?")[0].rpartition("@")[0]
    if ":" in userinfo:
        secrets.add(userinfo.partition(":")[2])
    for pair in rest.partition("?")[2].split("&"):
        key, _, value = pair.partition("=")
        if key == "password":
            secrets.add(value)
    secrets |= {unquote(secret) for secret in secrets}
    # Not parseable: the raw form above is all there is.
    with contextlib.suppress(Exception):
        secrets.add(str(conninfo_to_dict(conninfo).get("password") or ""))
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        text = text.replace(secret, HIDDEN)
    return text


def environ() -> Mapping[str, str]:
    return os.environ
