"""Exports: a site's stats over a range of UTC days as a ZIP of daily CSV files in Plausible's
export format (core/plausible_csv.py).

    GET /api/v1/sites/{site_id}/export?period=month&date=2025-11-01  (or from=…&to=…)
    python -m ingest.export --site SITE --from 2025-11-01 --to 2025-11-30 [--output FILE]

The route admits a request as the stats routes do (the client's rate limit, the site's read
keys: ingest/access.py), then as exports are (ingest/export_send.py: slots per process, one
export at a time per client). Each file is one statement (ingest/export.sql) over the native
rollups and the imported rows, read through a server-side cursor in one REPEATABLE READ
transaction, so every file sees the same data and memory holds one fetch and one chunk of
the archive, whatever the range. An export has its own connection, not one of the stats
pool, with a longer statement timeout. The route builds the whole archive into a temporary
file (at most EXPORT_MAX_BYTES) and closes its connection before the first byte is sent: a
slow client holds neither a connection nor a snapshot (which would hold back vacuum), only
its temporary file, and only until its send deadline (EXPORT_SEND_DEADLINE_S plus its size at
EXPORT_MIN_SEND_BYTES_PER_S). The command streams to its output file instead.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import re
import sys
import tempfile
import time
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import IO, Any

import psycopg
from starlette.requests import Request
from starlette.responses import Response

from core.config import environ, without_password
from core.plausible_csv import BY_NAME, TABLES
from ingest.access import StatsAccess, bearer_token
from ingest.database import connection_options
from ingest.errors import BadRequest, ServiceUnavailable
from ingest.export_send import (
    ZIP_MEDIA_TYPE,
    ArchiveResponse,
    ExportBusy,
    ExportSlots,
    owners_of,
    send_deadline_s,
)
from ingest.export_zip import ZipStream
from ingest.settings import Settings
from ingest.stats_params import MAX_SITE_ID_BYTES, check_text, parse_range

SQL_PATH = Path(__file__).resolve().parent / "export.sql"
EXPORT_STATEMENT_TIMEOUT_MS = 120_000  # one file's statement
# An archive this small stays in memory while it is sent; a larger one goes to disk.
SPOOL_MEMORY_BYTES = 4 * 1024 * 1024
EXPORT_MAX_DAYS = 3660
FETCH_ROWS = 2000
CHUNK_BYTES = 256 * 1024
# Files grouped from every visit of the range. The planner multiplies the distinct values of
# the eight grouping columns into about a tenth of the visits, so it sorts them all, or hashes
# them in partitions spilled to disk under the default work_mem (4 MB); there are a few dozen
# groups a day, which a hash table in memory holds. On the 10M-event month (8M visits) the
# sources file took 20-27 s sorted, 27 s hashed with 4 MB and 5-6 s with 64 MB, same sitting
# (docs/benchmarks.md). At most EXPORT_CONCURRENCY exports hold that memory at once.
HASHED_GROUPS = frozenset({"imported_sources"})
HASH_SETTINGS = "SET LOCAL enable_sort = off; SET LOCAL work_mem = '64MB'"
DEFAULT_SETTINGS = "SET LOCAL enable_sort = on; RESET work_mem"
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
            # Every row is read: plan for all of them, not for the first tenth as a cursor
            # does by default (which picked sorted, index-ordered plans for the visits).
            await conn.execute("SET LOCAL cursor_tuple_fraction = 1.0")
            for table in TABLES:
                archive.begin(table.file_name(first, last), (c.name for c in table.columns))
                hashed = table.name in HASHED_GROUPS
                if hashed:
                    await conn.execute(HASH_SETTINGS)
                async with conn.cursor(name=f"export_{table.kind}") as cur:
                    await cur.execute(STATEMENTS[table.name], params)
                    while rows := await cur.fetchmany(FETCH_ROWS):
                        archive.rows(rows)
                        if archive.pending >= CHUNK_BYTES:
                            yield archive.take()
                if hashed:
                    await conn.execute(DEFAULT_SETTINGS)
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


class ExportTooLarge(BadRequest):
    """The archive of the days asked for is larger than EXPORT_MAX_BYTES."""

    code = "export_too_large"


class ArchiveTooLarge(Exception):
    """The archive being built passed its size cap."""


async def build_archive(
    conn: psycopg.AsyncConnection[Any],
    site_id: str,
    first: dt.date,
    last: dt.date,
    modified: dt.datetime,
    max_bytes: int,
) -> IO[bytes]:
    """The whole archive (export_chunks) in a temporary file, in memory up to
    SPOOL_MEMORY_BYTES and on disk past it, positioned at its start; waits for every
    statement, and returns once the export's transaction has ended, so no snapshot outlives
    the build. Raises ArchiveTooLarge past `max_bytes` (the transaction rolled back)."""
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES)  # noqa: SIM115
    chunks = export_chunks(conn, site_id, first, last, modified)
    try:
        size = 0
        async for chunk in chunks:
            size += len(chunk)
            if size > max_bytes:
                raise ArchiveTooLarge(f"the archive passes {max_bytes} bytes")
            spool.write(chunk)
    except BaseException:
        await chunks.aclose()
        spool.close()
        raise
    spool.seek(0)
    return spool


class ExportRoute:
    """`GET /api/v1/sites/{site_id}/export`, admitted by the stats routes' StatsAccess, then
    by ExportSlots (ingest/export_send.py)."""

    def __init__(self, settings: Settings, access: StatsAccess) -> None:
        self._access = access
        self._settings = settings
        self.slots = ExportSlots(
            settings.export_concurrency, settings.export_max_sending, settings.retry_after_s
        )

    async def export(self, request: Request) -> Response:
        client = self._access.limit_client(request.scope)
        site_id = check_text(request.path_params["site_id"], "site_id", MAX_SITE_ID_BYTES)
        params = dict(request.query_params)
        if params.pop("timezone", "UTC") not in ("", "UTC"):
            raise BadRequest("exports are in UTC days: leave out `timezone`", field="timezone")
        now = dt.datetime.now(dt.UTC)
        days = parse_range(params, now=now, max_days=EXPORT_MAX_DAYS)
        token = bearer_token(request.headers.get("authorization"))
        self._access.check_key(client, site_id, token)
        if request.method == "HEAD":
            # What a GET would answer with, but the archive (and so its length) is not built:
            # a HEAD costs a check, not an export.
            name = archive_name(site_id, days.first, days.last)
            head = Response(
                media_type=ZIP_MEDIA_TYPE,
                headers={"Content-Disposition": f'attachment; filename="{name}"'},
            )
            del head.headers["content-length"]  # unknown, not 0
            return head
        ticket = self.slots.admit(owners_of(client, token))
        try:
            archive = await self._build(site_id, days.first, days.last, now)
        except BaseException:
            ticket.release()
            raise
        settings = self._settings
        size = archive.seek(0, 2)
        deadline_s = send_deadline_s(
            size, settings.export_send_deadline_s, settings.export_min_send_bytes_per_s
        )
        try:
            ticket.sending(time.monotonic() + deadline_s)
        except ExportBusy:
            archive.close()
            ticket.release()
            raise
        name = archive_name(site_id, days.first, days.last)
        return ArchiveResponse(archive, name, deadline_s, ticket.release)

    async def _build(
        self, site_id: str, first: dt.date, last: dt.date, now: dt.datetime
    ) -> IO[bytes]:
        """The built archive; its connection is closed before it is returned."""
        settings = self._settings
        try:
            conn = await connect(settings.database_url, settings.stats_lock_timeout_ms)
        except psycopg.OperationalError:
            raise ServiceUnavailable(
                "Exports are unavailable: the database cannot be reached",
                retry_after_s=settings.retry_after_s,
            ) from None
        try:
            return await build_archive(conn, site_id, first, last, now, settings.export_max_bytes)
        except ArchiveTooLarge:
            raise ExportTooLarge(
                f"the export of {first} to {last} is larger than {settings.export_max_bytes} "
                "bytes (EXPORT_MAX_BYTES); export fewer days",
                field="date",
            ) from None
        except psycopg.OperationalError as exc:
            # A statement past EXPORT_STATEMENT_TIMEOUT_MS, or the database gone meanwhile.
            raise ServiceUnavailable(
                f"the export could not be read from the database ({type(exc).__name__}); "
                "retry later or export fewer days",
                retry_after_s=settings.retry_after_s,
            ) from None
        finally:
            await conn.close()


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
