"""The tracker script (ingest/tracker/script.js) for sites' `<script>` tags.

Two URLs serve the same bytes, read once when the app is built:

- `/js/script.js`, cached for an hour and revalidated by its ETag, so a new release reaches
  every page within the hour;
- `/js/script.<sha256-12>.js`, named after its content, cached for a year as immutable, for
  owners who pin a version (and may add Subresource Integrity). Another version's name
  (a page pinned to an earlier release) is redirected (302) to `/js/script.js` with
  `Cache-Control: no-cache`: the page keeps tracking with the current script, and no cache
  keeps the redirect past the next release, which may serve that version again.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

SCRIPT_PATH = Path(__file__).resolve().parent / "tracker" / "script.js"
MEDIA_TYPE = "text/javascript; charset=utf-8"
SHORT_CACHE = "public, max-age=3600"
IMMUTABLE_CACHE = "public, max-age=31536000, immutable"
REDIRECT_CACHE = "no-cache"


class TrackerScript:
    """The script's bytes, their gzip encoding and the content hash that names them."""

    def __init__(self, source: bytes) -> None:
        self.identity = source
        # mtime=0: the same source always gives the same bytes, on every replica.
        self.gzipped = gzip.compress(source, compresslevel=9, mtime=0)
        self.version = hashlib.sha256(source).hexdigest()[:12]

    @classmethod
    def load(cls, path: Path = SCRIPT_PATH) -> TrackerScript:
        return cls(path.read_bytes())

    @property
    def versioned_path(self) -> str:
        return f"/js/script.{self.version}.js"

    def etag(self, gzipped: bool) -> str:
        # Each encoding is its own representation, so each has its own strong tag.
        return f'"{self.version}-gz"' if gzipped else f'"{self.version}"'

    def response(self, request: Request, cache_control: str) -> Response:
        gzipped = accepts_gzip(request.headers.get("accept-encoding", ""))
        headers = {
            "Cache-Control": cache_control,
            "ETag": self.etag(gzipped),
            "Vary": "Accept-Encoding",
            # Any site may load it, also from pages that require CORP or CORS on scripts.
            "Access-Control-Allow-Origin": "*",
            "Cross-Origin-Resource-Policy": "cross-origin",
            "X-Content-Type-Options": "nosniff",
        }
        if self.matches(request.headers.get("if-none-match")):
            return Response(status_code=304, headers=headers)
        if gzipped:
            headers["Content-Encoding"] = "gzip"
        body = self.gzipped if gzipped else self.identity
        return Response(body, 200, headers=headers, media_type=MEDIA_TYPE)

    def matches(self, if_none_match: str | None) -> bool:
        """Whether a cached copy is current: a weak comparison, as RFC 9110 asks for GET."""
        if not if_none_match:
            return False
        ours = {self.etag(False), self.etag(True)}
        for tag in if_none_match.split(","):
            tag = tag.strip()
            if tag == "*" or tag.removeprefix("W/") in ours:
                return True
        return False


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether `gzip` is among the client's acceptable encodings (not with q=0)."""
    for item in accept_encoding.split(","):
        coding, _, params = item.partition(";")
        if coding.strip().lower() not in ("gzip", "x-gzip"):
            continue
        for param in params.split(";"):
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    return float(value) > 0
                except ValueError:
                    return False
        return True
    return False


def tracker_routes(script: TrackerScript | None = None) -> list[Route]:
    script = script or TrackerScript.load()

    async def latest(request: Request) -> Response:
        return script.response(request, SHORT_CACHE)

    async def pinned(request: Request) -> Response:
        return script.response(request, IMMUTABLE_CACHE)

    async def other_version(request: Request) -> Response:
        # Subresource Integrity pinned to the old version makes the browser refuse the
        # current bytes; without it, the page tracks on with the current script.
        return RedirectResponse(
            "/js/script.js",
            302,
            headers={"Cache-Control": REDIRECT_CACHE, "Access-Control-Allow-Origin": "*"},
        )

    return [
        Route("/js/script.js", latest, methods=["GET"]),
        Route(script.versioned_path, pinned, methods=["GET"]),
        Route("/js/script.{version}.js", other_version, methods=["GET"]),
    ]
