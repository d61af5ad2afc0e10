"""Writing a checked Plausible export into the imported_* tables (schema.sql), and removing
imports again. Native rows are never read for writing nor changed.

An import is one transaction: every file is copied (COPY) into a staging table, checked for
rows that name the same key twice, and moved into its table; an error anywhere rolls all of
it back. Imports of one site take turns (an advisory lock per site). Before writing, the
import deletes what earlier imports of the site hold for the days of its range, and the
records of those wholly inside it: per site and day, imported rows come from one import, so
importing the same export again replaces it instead of doubling it.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from consumer.data_epoch import bump_epoch
from consumer.imports_read import Row
from core.plausible_csv import TABLES, Column, CsvTable

LOCK_SITE = "SELECT pg_advisory_xact_lock(hashtext('imports'), hashtext(%s))"
NEW_IMPORT = """
INSERT INTO imports (site_id, first_day, last_day, source, digest)
VALUES (%(site)s, %(first)s, %(last)s, %(source)s, %(digest)s) RETURNING import_id
"""
# Earlier imports of the site wholly inside the new one's days: nothing of them is left.
REPLACED = """
DELETE FROM imports
WHERE site_id = %(site)s AND import_id <> %(id)s AND first_day >= %(first)s
  AND last_day <= %(last)s
RETURNING import_id
"""
# Earlier imports that keep days outside the new one's range.
OVERLAPPED = """
SELECT import_id FROM imports
WHERE site_id = %(site)s AND import_id <> %(id)s AND first_day <= %(last)s
  AND last_day >= %(first)s
ORDER BY 1
"""
NATIVE_DAYS = """
SELECT min(day), max(day) FROM daily_stats
WHERE site_id = %(site)s AND day BETWEEN %(first)s AND %(last)s
"""
IMPORTS_OF_SITE = """
SELECT import_id, first_day, last_day, source, imported_at FROM imports
WHERE site_id = %(site)s AND (%(id)s::bigint IS NULL OR import_id = %(id)s)
ORDER BY import_id
"""
FORGET_IMPORT = "DELETE FROM imports WHERE site_id = %(site)s AND import_id = %(id)s"


def column_name(column: Column) -> str:
    """The table's name of a CSV column: `date` is `day`, as in every rollup."""
    return "day" if column.name == "date" else column.name


def _columns(table: CsvTable) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(column_name(c)) for c in table.stored)


def _keys(table: CsvTable) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(n) for n in ("day", *table.keys))


def delete_days(table: CsvTable) -> sql.Composed:
    return sql.SQL(
        "DELETE FROM {} WHERE site_id = %(site)s AND day BETWEEN %(first)s AND %(last)s"
    ).format(sql.Identifier(table.name))


def delete_import(table: CsvTable) -> sql.Composed:
    return sql.SQL(
        "DELETE FROM {} WHERE site_id = %(site)s AND day BETWEEN %(first)s AND %(last)s"
        " AND import_id = %(id)s"
    ).format(sql.Identifier(table.name))


def count_import(table: CsvTable) -> sql.Composed:
    return sql.SQL(
        "SELECT count(*) FROM {} WHERE site_id = %(site)s AND day BETWEEN %(first)s AND"
        " %(last)s AND import_id = %(id)s"
    ).format(sql.Identifier(table.name))


def staging(table: CsvTable) -> tuple[sql.SQL, sql.Composed, sql.Composed]:
    """A staging table shaped like the file's stored columns plus its line numbers, then
    the COPY into it."""
    return (
        sql.SQL("DROP TABLE IF EXISTS import_rows"),
        sql.SQL(
            "CREATE TEMP TABLE import_rows ON COMMIT DROP AS"
            " SELECT {}, 0::bigint AS line FROM {} WITH NO DATA"
        ).format(_columns(table), sql.Identifier(table.name)),
        sql.SQL("COPY import_rows ({}, line) FROM STDIN").format(_columns(table)),
    )


def duplicates(table: CsvTable) -> sql.Composed:
    """Two lines of the file with the same key (day and dimensions), if any."""
    return sql.SQL(
        "SELECT array_agg(line ORDER BY line) FROM import_rows GROUP BY {}"
        " HAVING count(*) > 1 ORDER BY min(line) LIMIT 1"
    ).format(_keys(table))


def move_rows(table: CsvTable) -> sql.Composed:
    return sql.SQL(
        "INSERT INTO {table} (site_id, import_id, {columns})"
        " SELECT %(site)s, %(id)s, {columns} FROM import_rows"
    ).format(table=sql.Identifier(table.name), columns=_columns(table))


class DuplicateRows(Exception):
    """A file holds two rows with the same key; the message names both lines."""


class Progress:
    """Says how far a long import is, at most once per `every_s`."""

    def __init__(
        self,
        say: Callable[[str], None],
        every_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._say = say
        self._every_s = every_s
        self._clock = clock
        self._last = clock()
        self.rows = 0

    def row(self, what: str) -> None:
        self.rows += 1
        if self.rows % 1024 == 0 and self._clock() - self._last >= self._every_s:
            self._last = self._clock()
            self._say(f"{what}: {self.rows:,} rows")


@dataclass
class Written:
    import_id: int
    rows: dict[str, int] = field(default_factory=dict)
    replaced: list[int] = field(default_factory=list)  # earlier imports wholly replaced
    overlapped: list[int] = field(default_factory=list)  # earlier imports partly replaced
    native_days: tuple[dt.date, dt.date] | None = None  # native data within the range


@dataclass(frozen=True)
class Batch:
    """What to write: the site, the days, where it came from, and each table's rows (with
    their line numbers, for errors), read anew when iterated."""

    site_id: str
    first: dt.date
    last: dt.date
    source: str
    digest: str
    files: tuple[tuple[CsvTable, str, Callable[[], Iterator[tuple[int, Row]]]], ...]


async def write_import(
    conn: psycopg.AsyncConnection[Any], batch: Batch, progress: Progress
) -> Written:
    """Writes `batch` in one transaction on `conn` (not in one already) and commits; waits
    for another import of the same site first. Raises DuplicateRows (nothing written) when a
    file names a key twice."""
    span = {"site": batch.site_id, "first": batch.first, "last": batch.last}
    async with conn.transaction():
        await conn.execute(LOCK_SITE, (batch.site_id,))
        cur = await conn.execute(
            NEW_IMPORT, {**span, "source": batch.source, "digest": batch.digest}
        )
        row = await cur.fetchone()
        assert row is not None
        written = Written(import_id=int(row[0]))
        params = {**span, "id": written.import_id}
        for table in TABLES:
            await conn.execute(delete_days(table), params)
        cur = await conn.execute(REPLACED, params)
        written.replaced = [int(r[0]) for r in await cur.fetchall()]
        cur = await conn.execute(OVERLAPPED, params)
        written.overlapped = [int(r[0]) for r in await cur.fetchall()]
        cur = await conn.execute(NATIVE_DAYS, span)
        native = await cur.fetchone()
        if native is not None and native[0] is not None:
            written.native_days = (native[0], native[1])
        for table, name, rows in batch.files:
            written.rows[table.name] = await _copy_file(conn, table, name, rows(), params, progress)
        await bump_epoch(conn)
    return written


async def _copy_file(
    conn: psycopg.AsyncConnection[Any],
    table: CsvTable,
    name: str,
    rows: Iterable[tuple[int, Row]],
    params: dict[str, Any],
    progress: Progress,
) -> int:
    drop, create, copy_in = staging(table)
    await conn.execute(drop)
    await conn.execute(create)
    count = 0
    async with conn.cursor() as cur:
        async with cur.copy(copy_in) as copy:
            for line, row in rows:
                await copy.write_row((*row, line))
                count += 1
                progress.row(f"writing {name}")
        await cur.execute(duplicates(table))
        twice = await cur.fetchone()
        if twice is not None:
            first, second = twice[0][0], twice[0][1]
            raise DuplicateRows(
                f"{name}, line {second}: the same {', '.join(('date', *table.keys))} as line "
                f"{first}; each is listed once in an export"
            )
        await cur.execute(move_rows(table), params)
    return count


@dataclass(frozen=True)
class ImportRecord:
    import_id: int
    first: dt.date
    last: dt.date
    source: str
    imported_at: dt.datetime
    rows: int


async def list_imports(
    conn: psycopg.AsyncConnection[Any], site_id: str, import_id: int | None = None
) -> list[ImportRecord]:
    """The site's imports (or the one asked for), oldest first, with the rows each still
    holds (a later import may have replaced some of its days)."""
    cur = await conn.execute(IMPORTS_OF_SITE, {"site": site_id, "id": import_id})
    records = []
    for iid, first, last, source, at in await cur.fetchall():
        params = {"site": site_id, "first": first, "last": last, "id": iid}
        rows = 0
        for table in TABLES:
            counted = await (await conn.execute(count_import(table), params)).fetchone()
            rows += int(counted[0]) if counted else 0
        records.append(ImportRecord(int(iid), first, last, source, at, rows))
    return records


async def remove_imports(
    conn: psycopg.AsyncConnection[Any], site_id: str, import_id: int | None = None
) -> list[ImportRecord]:
    """Deletes the site's imports (every one, or the one asked for) and their rows, in one
    transaction; returns what was removed (empty: there was none)."""
    async with conn.transaction():
        await conn.execute(LOCK_SITE, (site_id,))
        removed = await list_imports(conn, site_id, import_id)
        for record in removed:
            params = {
                "site": site_id,
                "first": record.first,
                "last": record.last,
                "id": record.import_id,
            }
            for table in TABLES:
                await conn.execute(delete_import(table), params)
            await conn.execute(FORGET_IMPORT, params)
        if removed:
            await bump_epoch(conn)
    return removed
