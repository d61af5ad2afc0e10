"""Exports: a site's stats over a range of UTC days as a ZIP of daily CSV files in Plausible's
export format (core/plausible_csv.py), streamed as it is read.

    GET /api/v1/sites/{site_id}/export?period=month&date=2025-11-01  (or from=…&to=…)
    python -m ingest.export --site SITE --from 2025-11-01 --to 2025-11-30 [--output FILE]

The route admits a request as the stats routes do (the client's rate limit, the site's read
keys: ingest/access.py). Each file is one statement (ingest/export.sql) over the native
rollups and the imported rows, read through a server-side cursor in one REPEATABLE READ
transaction, so every file sees the same data and memory holds one fetch and one chunk of
the archive, whatever the range. An export has its own connection, not one of the stats
pool, with a longer statement timeout; at most EXPORT_CONCURRENCY run at once per process
(503 `export_busy` past that), and a client that stops reading for EXPORT_SEND_TIMEOUT_S is
dropped, which ends the export's transaction and closes its connection.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import re
import sys
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from core.config import environ, without_password
from core.plausible_csv import BY_NAME, TABLES
from ingest.access import StatsAccess, bearer_token
from ingest.database import connection_options
from ingest.errors import BadRequest, ServiceUnavailable
from ingest.export_zip import ZipStream
from ingest.settings import Settings
from ingest.stats_params import MAX_SITE_ID_BYTES, check_text, parse_range

SQL_PATH = Path(__file__).resolve().parent / "export.sql"
EXPORT_CONCURRENCY = 2  # exports running at once per API process
EXPORT_STATEMENT_TIMEOUT_MS = 120_000  # one file's statement
EXPORT_SEND_TIMEOUT_S = 60.0  # the longest a client may leave a chunk unread
EXPORT_MAX_DAYS = 3660
FETCH_ROWS = 2000
CHUNK_BYTES = 256 * 1024
ZIP_MEDIA_TYPE = "application/zip"
_UNSAFE_IN_NAME = re.compile(r"[^A-Za-z0-9_-]")


def load_statements(path: Path = SQL_PATH) -> dict[str, str]:
    """The file's sections, by the name of their `-- name:` line (a table of the format)."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in path.read_text().splitlines():
        if line.startswith("-- name: "):
            current = sections.setdefault(line.removeprefix("-- name: ").strip(), [])
        elif current is not None:
            current.append(line)
    statements = {name: "\n".join(lines).strip() for name, lines in sections.items()}
    if set(statements) != set(BY_NAME):
        raise ValueError(f"{path.name}: sections {sorted(statements)} are not the format's files")
    return statements


STATEMENTS = load_statements()


def archive_name(site_id: str, first: dt.date, last: dt.date) -> str:
    return f"{_UNSAFE_IN_NAME.sub('_', site_id)[:64]}_{first:%Y%m%d}_{last:%Y%m%d}.zip"


async def export_chunks(
    conn: psycopg.AsyncConnection[Any],
    site_id: str,
    first: dt.date,
    last: dt.date,
    modified: dt.datetime,
) -> AsyncGenerator[bytes, None]:
    """The archive of `site_id`'s UTC days [first, last], in chunks of about CHUNK_BYTES;
    waits for each fetch of rows. Runs one transaction on `conn` (autocommit, not in one),
    rolled back when the caller stops early."""
    params = {
        "site": site_id,
        "first": first,
        "last": last,
        "start": dt.datetime.combine(first, dt.time(), dt.UTC),
        "end": dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), dt.UTC),
    }
    archive = ZipStream(modified)
    await conn.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
    try:
        async with conn.transaction():
            for table in TABLES:
                archive.begin(table.file_name(first, last), (c.name for c in table.columns))
                async with conn.cursor(name=f"export_{table.kind}") as cur:
                    await cur.execute(STATEMENTS[table.name], params)
                    while rows := await cur.fetchmany(FETCH_ROWS):
                        archive.rows(rows)
                        if archive.pending >= CHUNK_BYTES:
                            yield archive.take()
                archive.end()
    except BaseException:
        archive.abandon()
        raise
    archive.close()
    yield archive.take()


async def connect(database_url: str, lock_timeout_ms: int) -> psycopg.AsyncConnection[Any]:
    """An export's own connection (not the stats pool's: an export holds it for as long as
    its client reads)."""
    return await psycopg.AsyncConnection.connect(
        database_url,
        autocommit=True,
        connect_timeout=10,
        application_name="analytics-api-export",
        options=connection_options(EXPORT_STATEMENT_TIMEOUT_MS, lock_timeout_ms),
    )


class ExportBusy(ServiceUnavailable):
    """EXPORT_CONCURRENCY exports are running in this process already."""

    code = "export_busy"


class ExportResponse(StreamingResponse):
    """A streamed archive that gives up on a client that stops reading for longer than
    `send_timeout_s`, and runs `cleanup` (closing the export's connection) however the
    response ends, even when it never started."""

    def __init__(
        self,
        chunks: AsyncGenerator[bytes, None],
        name: str,
        send_timeout_s: float,
        cleanup: Callable[[], Awaitable[None]],
    ) -> None:
        super().__init__(
            chunks,
            media_type=ZIP_MEDIA_TYPE,
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
        self._chunks = chunks
        self._send_timeout_s = send_timeout_s
        self._cleanup = cleanup

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._chunks.aclose()
            await self._cleanup()

    async def stream_response(self, send: Send) -> None:
        start = {"type": "http.response.start", "status": self.status_code}
        await send({**start, "headers": self.raw_headers})
        async for chunk in self._chunks:
            message = {"type": "http.response.body", "body": chunk, "more_body": True}
            await asyncio.wait_for(send(message), self._send_timeout_s)
        await send({"type": "http.response.body", "body": b"", "more_body": False})


class ExportRoute:
    """`GET /api/v1/sites/{site_id}/export`, admitted by the stats routes' StatsAccess."""

    def __init__(self, settings: Settings, access: StatsAccess) -> None:
        self._access = access
        self._database_url = settings.database_url
        self._lock_timeout_ms = settings.stats_lock_timeout_ms
        self._retry_after_s = settings.retry_after_s
        self.running = 0

    async def export(self, request: Request) -> Response:
        client = self._access.limit_client(request.scope)
        site_id = check_text(request.path_params["site_id"], "site_id", MAX_SITE_ID_BYTES)
        params = dict(request.query_params)
        if params.pop("timezone", "UTC") not in ("", "UTC"):
            raise BadRequest("exports are in UTC days: leave out `timezone`", field="timezone")
        now = dt.datetime.now(dt.UTC)
        days = parse_range(params, now=now, max_days=EXPORT_MAX_DAYS)
        self._access.check_key(client, site_id, bearer_token(request.headers.get("authorization")))
        if self.running >= EXPORT_CONCURRENCY:
            raise ExportBusy(
                f"this API is already running {EXPORT_CONCURRENCY} exports; retry later",
                retry_after_s=self._retry_after_s,
            )
        try:
            conn = await connect(self._database_url, self._lock_timeout_ms)
        except psycopg.OperationalError:
            raise ServiceUnavailable(
                "Exports are unavailable: the database cannot be reached",
                retry_after_s=self._retry_after_s,
            ) from None
        self.running += 1

        async def cleanup() -> None:
            self.running -= 1
            await conn.close()

        chunks = export_chunks(conn, site_id, days.first, days.last, now)
        name = archive_name(site_id, days.first, days.last)
        return ExportResponse(chunks, name, EXPORT_SEND_TIMEOUT_S, cleanup)


async def export_to_file(
    database_url: str, site_id: str, first: dt.date, last: dt.date, output: Path
) -> int:
    """Writes the archive to `output`; returns its size in bytes."""
    size = 0
    async with await connect(database_url, lock_timeout_ms=10_000) as conn:
        with output.open("wb") as out:
            now = dt.datetime.now(dt.UTC)
            async for chunk in export_chunks(conn, site_id, first, last, now):
                out.write(chunk)
                size += len(chunk)
    return size


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ingest.export",
        description="Write a site's stats of UTC days as a Plausible CSV export (ZIP).",
    )
    parser.add_argument("--site", required=True)
    parser.add_argument("--from", dest="first", type=dt.date.fromisoformat, required=True)
    parser.add_argument("--to", dest="last", type=dt.date.fromisoformat, required=True)
    parser.add_argument("--output", type=Path, default=None, help="default: SITE_FROM_TO.zip")
    args = parser.parse_args(argv)
    if args.last < args.first:
        parser.error("--to is before --from")
    url = Settings.from_env(environ()).database_url
    output = args.output or Path(archive_name(args.site, args.first, args.last))
    started = time.perf_counter()
    try:
        size = asyncio.run(export_to_file(url, args.site, args.first, args.last, output))
    except psycopg.Error as exc:
        print(f"export: {type(exc).__name__}: {without_password(str(exc), url)}", file=sys.stderr)
        return 1
    print(f"export: wrote {output} ({size:,} bytes) in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
