"""Reading typed settings from the environment, with errors that say which variable is wrong."""

from __future__ import annotations

import os
from collections.abc import Mapping

DEFAULT_KAFKA_BOOTSTRAP_SERVERS = "127.0.0.1:19092"
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:15432/analytics"


class ConfigError(ValueError):
    """A setting that cannot be used; the message names the variable."""


def env_str(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "").strip()
    return value or default


def env_int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def env_float(env: Mapping[str, str], name: str, default: float, *, minimum: float = 0) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def env_site_keys(env: Mapping[str, str], name: str) -> dict[str, tuple[str, ...]]:
    """`site-a=key1,site-a=key2,site-b=key3` -> {"site-a": ("key1", "key2"), ...}."""
    raw = env.get(name, "").strip()
    keys: dict[str, list[str]] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        site, sep, key = item.partition("=")
        if not sep or not site.strip() or not key.strip():
            raise ConfigError(f"{name} must be site_id=key pairs separated by commas")
        keys.setdefault(site.strip(), []).append(key.strip())
    return {site: tuple(ks) for site, ks in keys.items()}


def environ() -> Mapping[str, str]:
    return os.environ
