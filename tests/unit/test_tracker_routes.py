"""Serving the tracker script: caching, the versioned URL, gzip, the size budget, packaging."""

from __future__ import annotations

import gzip
import hashlib
import tomllib
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette

from ingest.app import handle_api_error
from ingest.errors import ApiError
from ingest.tracker_routes import SCRIPT_PATH, TrackerScript, accepts_gzip, tracker_routes
from tests.processes import ROOT

SOURCE = SCRIPT_PATH.read_bytes()
VERSION = hashlib.sha256(SOURCE).hexdigest()[:12]
GZIP_BUDGET_BYTES = 1536  # issue 13: at most 1.5 kB gzipped


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = Starlette(routes=tracker_routes(), exception_handlers={ApiError: handle_api_error})
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


def test_the_script_fits_its_size_budget_gzipped() -> None:
    assert len(gzip.compress(SOURCE, compresslevel=9)) <= GZIP_BUDGET_BYTES
    assert len(TrackerScript(SOURCE).gzipped) <= GZIP_BUDGET_BYTES


def test_the_script_never_touches_cookies_or_storage() -> None:
    text = SOURCE.decode()
    for forbidden in ("cookie", "localStorage", "sessionStorage", "indexedDB"):
        assert forbidden not in text


def test_the_wheel_carries_the_script() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    setuptools = project["tool"]["setuptools"]
    assert "ingest.tracker" in setuptools["packages"]
    assert "*.js" in setuptools["package-data"]["ingest.tracker"]
    assert SCRIPT_PATH.parent.name == "tracker" and SCRIPT_PATH.parent.parent.name == "ingest"


async def test_latest_script_is_cached_an_hour_with_an_etag(client: httpx.AsyncClient) -> None:
    r = await client.get("/js/script.js", headers={"Accept-Encoding": "identity"})
    assert r.status_code == 200
    assert r.content == SOURCE
    assert r.headers["content-type"] == "text/javascript; charset=utf-8"
    assert r.headers["cache-control"] == "public, max-age=3600"
    assert r.headers["etag"] == f'"{VERSION}"'
    assert r.headers["access-control-allow-origin"] == "*"
    assert r.headers["vary"] == "Accept-Encoding"
    assert "content-encoding" not in r.headers


async def test_a_current_copy_is_answered_304(client: httpx.AsyncClient) -> None:
    first = await client.get("/js/script.js")
    for tag in (first.headers["etag"], f"W/{first.headers['etag']}", f'"other", "{VERSION}"', "*"):
        r = await client.get("/js/script.js", headers={"If-None-Match": tag})
        assert r.status_code == 304, tag
        assert r.content == b""
        assert r.headers["etag"] == first.headers["etag"]
        assert r.headers["cache-control"] == "public, max-age=3600"


async def test_a_stale_copy_gets_the_script(client: httpx.AsyncClient) -> None:
    r = await client.get("/js/script.js", headers={"If-None-Match": '"0123456789ab"'})
    assert r.status_code == 200
    assert r.content == SOURCE


async def test_gzip_when_accepted(client: httpx.AsyncClient) -> None:
    r = await client.get("/js/script.js", headers={"Accept-Encoding": "br, gzip;q=0.8"})
    assert r.status_code == 200
    assert r.headers["content-encoding"] == "gzip"
    assert r.headers["etag"] == f'"{VERSION}-gz"'
    assert int(r.headers["content-length"]) == len(TrackerScript(SOURCE).gzipped)
    assert r.content == SOURCE  # httpx decodes it

    refused = await client.get("/js/script.js", headers={"Accept-Encoding": "gzip;q=0"})
    assert "content-encoding" not in refused.headers
    assert refused.content == SOURCE


async def test_versioned_url_is_immutable_for_a_year(client: httpx.AsyncClient) -> None:
    r = await client.get(f"/js/script.{VERSION}.js")
    assert r.status_code == 200
    assert r.content == SOURCE
    assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert r.headers["etag"].strip('"').startswith(VERSION)
    assert TrackerScript(SOURCE).versioned_path == f"/js/script.{VERSION}.js"


async def test_another_version_is_redirected_to_the_current_script(
    client: httpx.AsyncClient,
) -> None:
    r = await client.get("/js/script.0123456789ab.js")
    assert r.status_code == 302
    assert r.headers["location"] == "/js/script.js"
    # Revalidated at every use: the next release may serve that version again.
    assert r.headers["cache-control"] == "no-cache"
    assert r.headers["access-control-allow-origin"] == "*"
    followed = await client.get("/js/script.0123456789ab.js", follow_redirects=True)
    assert followed.status_code == 200
    assert followed.content == SOURCE


async def test_only_get_and_head(client: httpx.AsyncClient) -> None:
    assert (await client.head("/js/script.js")).status_code == 200
    assert (await client.post("/js/script.js")).status_code == 405


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("", False),
        ("gzip", True),
        ("GZIP", True),
        ("deflate, gzip", True),
        ("x-gzip", True),
        ("gzip;q=0", False),
        ("gzip; q=0.0", False),
        ("gzip;q=0.5", True),
        ("gzip;q=bogus", False),
        ("br, deflate", False),
        ("gzipped", False),
    ],
)
def test_accept_encoding(header: str, expected: bool) -> None:
    assert accepts_gzip(header) is expected


def test_the_same_source_gives_the_same_bytes_on_every_replica() -> None:
    assert TrackerScript(SOURCE).gzipped == TrackerScript(SOURCE).gzipped
    assert TrackerScript(SOURCE).version == VERSION
    assert TrackerScript(b"changed").version != VERSION
