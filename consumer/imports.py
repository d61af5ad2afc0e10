"""Importing Plausible CSV exports as a site's history, and listing and removing imports.

    python -m consumer.imports EXPORT.zip|DIRECTORY --site SITE
    python -m consumer.imports list --site SITE
    python -m consumer.imports remove --site SITE [--import ID]

An import reads every row of every file first (consumer/imports_read.py): a bad one stops it
with the file, line and column, and nothing is written. Then it writes all the files in one
transaction (consumer/imports_write.py). The days it covers are those its file names span;
whatever earlier imports of the site held for those days is replaced, so importing the same
export twice leaves one copy. Native data is never changed: imported rows are added to it by
the stats API (ingest/stats_imported.py) and by exports. `remove` deletes one import, or all
of a site's, and nothing else. Long imports say how far they are once a second.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg

from consumer.imports_read import (
    ImportLimits,
    ImportRefused,
    Row,
    SourceFile,
    export_files,
    read_rows,
)
from consumer.imports_read import ignored_columns as header_ignored
from consumer.imports_write import (
    Batch,
    DuplicateRows,
    ImportRecord,
    Progress,
    Written,
    list_imports,
    remove_imports,
    write_import,
)
from consumer.schema import SchemaNotCurrent, require_current_schema
from consumer.settings import settings_for_command
from core.config import without_password

COMMAND = "imports"


def check_files(files: list[SourceFile], progress: Progress) -> str:
    """Reads every row of every file (raising ImportRefused at the first bad one); returns
    the export's digest: SHA-256 over each file's name and digest, in the format's order."""
    sha = hashlib.sha256()
    for source in files:
        for _ in read_rows(source):
            progress.row(f"checking {source.name}")
        sha.update(source.name.encode() + b"\0" + source.digest())
    return sha.hexdigest()


def _rows(source: SourceFile) -> Callable[[], Iterator[tuple[int, Row]]]:
    return lambda: read_rows(source)


async def import_export(
    database_url: str,
    path: Path,
    site_id: str,
    say: Callable[[str], None],
    limits: ImportLimits | None = None,
) -> Written:
    """Checks the export at `path` (within `limits`), then writes it for `site_id` in one
    transaction; raises ImportRefused or DuplicateRows (nothing written), or psycopg errors."""
    progress = Progress(say)
    with export_files(path, limits) as files:
        digest = check_files(files, progress)
        for source in files:
            ignored = header_ignored(source)
            if ignored:
                say(f"{source.name}: columns not kept here: {', '.join(ignored)}")
        batch = Batch(
            site_id=site_id,
            first=min(f.first for f in files),
            last=max(f.last for f in files),
            source=path.name,
            digest=digest,
            files=tuple((f.table, f.name, _rows(f)) for f in files),
        )
        await require_current_schema(database_url)
        async with await psycopg.AsyncConnection.connect(
            database_url, connect_timeout=10, autocommit=True
        ) as conn:
            written = await write_import(conn, batch, progress)
    return written


def _report(site_id: str, path: Path, written: Written) -> list[str]:
    lines = [
        f"imports: {path.name} imported for site {site_id!r} as import {written.import_id}: "
        + ", ".join(f"{rows:,} rows of {table}" for table, rows in written.rows.items())
    ]
    if written.replaced:
        lines.append(f"imports: it replaces import(s) {_ids(written.replaced)}")
    if written.overlapped:
        lines.append(
            f"imports: it replaces the days it covers of import(s) {_ids(written.overlapped)}; "
            "their other days stay"
        )
    if written.native_days:
        first, last = written.native_days
        lines.append(
            f"imports: warning: the site has native data from {first} to {last} within the "
            "imported days; stats add both (docs/operations.md, Imports)"
        )
    return lines


def _ids(ids: list[int]) -> str:
    return ", ".join(map(str, ids))


def _describe(record: ImportRecord) -> str:
    return (
        f"import {record.import_id}: {record.first} to {record.last}, {record.rows:,} rows, "
        f"from {record.source}, at {record.imported_at:%Y-%m-%d %H:%M:%S %Z}"
    )


async def _listed(database_url: str, site_id: str) -> list[ImportRecord]:
    async with await psycopg.AsyncConnection.connect(
        database_url, connect_timeout=10, autocommit=True
    ) as conn:
        return await list_imports(conn, site_id)


async def _removed(database_url: str, site_id: str, import_id: int | None) -> list[ImportRecord]:
    async with await psycopg.AsyncConnection.connect(
        database_url, connect_timeout=10, autocommit=True
    ) as conn:
        return await remove_imports(conn, site_id, import_id)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m consumer.imports",
        description="Import a Plausible CSV export (a ZIP or a directory of CSV files) as a "
        "site's history; or `list` or `remove` a site's imports.",
    )
    parser.add_argument("export", type=Path, help="the export: a ZIP file or a directory")
    parser.add_argument("--site", required=True, help="the site_id it is imported for")
    parser.add_argument(
        "--max-bytes",
        type=int,
        default=ImportLimits().max_inflated_bytes,
        help="largest export, all files uncompressed (default: %(default)s bytes)",
    )
    return parser


def _manage_parser(action: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m consumer.imports {action}")
    parser.add_argument("--site", required=True, help="the site_id")
    if action == "remove":
        parser.add_argument(
            "--import", dest="import_id", type=int, default=None, help="one import (default: all)"
        )
    return parser


def main(argv: list[str]) -> int:
    action = argv[0] if argv and argv[0] in ("list", "remove") else "import"
    args = (_manage_parser(action) if action != "import" else _parser()).parse_args(
        argv[1:] if action != "import" else argv
    )
    settings = settings_for_command(COMMAND)
    if settings is None:
        return 2
    url = settings.database_url
    try:
        if action == "list":
            records = asyncio.run(_listed(url, args.site))
            for record in records:
                print(_describe(record))
            if not records:
                print(f"imports: site {args.site!r} has no imports")
        elif action == "remove":
            records = asyncio.run(_removed(url, args.site, args.import_id))
            for record in records:
                print(f"imports: removed {_describe(record)}")
            if not records:
                which = f"import {args.import_id}" if args.import_id is not None else "imports"
                print(f"imports: site {args.site!r} has no {which}; nothing removed")
                return 1 if args.import_id is not None else 0
        else:
            limits = ImportLimits(max_inflated_bytes=args.max_bytes)
            written = asyncio.run(
                import_export(
                    url, args.export, args.site, lambda line: print(f"imports: {line}"), limits
                )
            )
            for line in _report(args.site, args.export, written):
                print(line)
    except (ImportRefused, DuplicateRows) as exc:
        print(f"imports: refused, nothing imported: {exc}", file=sys.stderr)
        return 1
    except SchemaNotCurrent as exc:
        print(f"imports: {exc}", file=sys.stderr)
        return 1
    except psycopg.Error as exc:
        reason = without_password(str(exc), url)
        print(f"imports: {type(exc).__name__}: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
