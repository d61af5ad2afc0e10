"""Reading a Plausible CSV export (core/plausible_csv.py) for `python -m consumer.imports`:
finding its files in a ZIP or a directory, and checking and converting each row. Pure but for
reading the files; rows are read one at a time, so a file of any size takes little memory.

Every refusal is an ImportRefused naming the file, the line and the column.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import re
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from core.plausible_csv import (
    IGNORED_COLUMNS,
    IMPORTED_TABLES,
    MAX_COUNT,
    NOT_SET,
    Column,
    CsvTable,
    parse_file_name,
)

StoredValue = dt.date | str | int
Row = tuple[StoredValue, ...]

_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_COUNT = re.compile(r"[0-9]{1,19}")
# A CSV field may be longer than the csv module's default limit (128 KiB) only if it is far
# past every column's byte limit: refused as too long either way.
csv.field_size_limit(1 << 20)


class ImportRefused(Exception):
    """The export cannot be imported; the message says where and why."""


@dataclass(frozen=True)
class SourceFile:
    """One CSV file of an export: its name (as in the ZIP or directory), its table and days,
    and how to open it for reading bytes."""

    name: str
    table: CsvTable
    first: dt.date
    last: dt.date
    open: Callable[[], IO[bytes]]

    def digest(self) -> bytes:
        """SHA-256 of the file's bytes, read in chunks."""
        sha = hashlib.sha256()
        with self.open() as stream:
            while chunk := stream.read(1 << 16):
                sha.update(chunk)
        return sha.digest()


@contextmanager
def export_files(path: Path) -> Iterator[list[SourceFile]]:
    """The CSV files of the export at `path` (a ZIP, or a directory of CSV files), one per
    table, in the format's order; raises ImportRefused for a name that is not one of the
    format's, two files of one table, or none at all."""
    if path.is_dir():
        yield _files(path, {p.name: _file_opener(p) for p in sorted(path.iterdir()) if p.is_file()})
        return
    if not zipfile.is_zipfile(path):
        raise ImportRefused(f"{path}: neither a ZIP file nor a directory")
    with zipfile.ZipFile(path) as archive:
        names = [i.filename for i in archive.infolist() if not i.is_dir()]
        openers: dict[str, Callable[[], IO[bytes]]] = {
            name: _zip_opener(archive, name) for name in names
        }
        yield _files(path, openers)


def _zip_opener(archive: zipfile.ZipFile, name: str) -> Callable[[], IO[bytes]]:
    return lambda: archive.open(name)


def _file_opener(path: Path) -> Callable[[], IO[bytes]]:
    return lambda: path.open("rb")


def _files(path: Path, openers: dict[str, Callable[[], IO[bytes]]]) -> list[SourceFile]:
    found: dict[str, SourceFile] = {}
    for name, opener in openers.items():
        parsed = parse_file_name(PurePosixPath(name).name)
        if parsed is None:
            raise ImportRefused(
                f"{path}: {name} is not a file of a Plausible CSV export (expected names like "
                "imported_pages_20250101_20250131.csv)"
            )
        table = parsed.table
        if table.name in found:
            raise ImportRefused(
                f"{path}: {found[table.name].name} and {name} both hold {table.name}"
            )
        found[table.name] = SourceFile(name, table, parsed.first, parsed.last, opener)
    if not found:
        raise ImportRefused(f"{path}: holds no CSV file of a Plausible export")
    return sorted(found.values(), key=lambda f: IMPORTED_TABLES.index(f.table.name))


@dataclass(frozen=True)
class Layout:
    """Where each stored column is in a file's rows (None: absent, its default is used), and
    the header's columns the import leaves aside."""

    positions: tuple[int | None, ...]
    width: int
    ignored: tuple[str, ...]


def read_header(source: SourceFile, header: list[str]) -> Layout:
    """Matches the header's names with the table's columns; raises ImportRefused for a
    required column that is missing or a name given twice."""
    names = [h.strip() for h in header]
    if names and names[0].startswith("\ufeff"):
        names[0] = names[0][1:]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ImportRefused(f"{source.name}, line 1: column {name!r} appears twice")
    known = {c.name for c in source.table.columns}
    positions: list[int | None] = []
    for column in source.table.stored:
        if column.name in names:
            positions.append(names.index(column.name))
        elif column.required:
            raise ImportRefused(
                f"{source.name}, line 1: column {column.name!r} is missing (a "
                f"{source.table.name} file has {', '.join(c.name for c in source.table.columns)})"
            )
        else:
            positions.append(None)
    ignored = tuple(n for n in names if n not in known or n in IGNORED_COLUMNS)
    return Layout(tuple(positions), len(names), ignored)


def convert(source: SourceFile, layout: Layout, fields: list[str], line: int) -> Row:
    """A row's stored values, in the table's stored-column order (core/plausible_csv.py):
    the day, text as the rollups keep it (empty is '(not set)', devices lower case), counts
    as integers. Raises ImportRefused naming the line and column."""
    if len(fields) != layout.width:
        raise ImportRefused(
            f"{source.name}, line {line}: {len(fields)} fields where the header has {layout.width}"
        )
    values: list[StoredValue] = []
    for column, position in zip(source.table.stored, layout.positions, strict=True):
        if position is None:
            raw: str | int = column.default
            values.append(stored_text(column, raw) if isinstance(raw, str) else raw)
            continue
        values.append(_value(source, column, fields[position], line))
    return tuple(values)


def _value(source: SourceFile, column: Column, raw: str, line: int) -> StoredValue:
    where = f"{source.name}, line {line}, column {column.name!r}"
    if column.kind == "date":
        if not _DATE.fullmatch(raw):
            raise ImportRefused(f"{where}: {raw!r} is not a day (YYYY-MM-DD)")
        try:
            day = dt.date.fromisoformat(raw)
        except ValueError:
            raise ImportRefused(f"{where}: {raw!r} is not a calendar day") from None
        if not source.first <= day <= source.last:
            raise ImportRefused(
                f"{where}: {day} is outside the days its file name covers "
                f"({source.first} to {source.last})"
            )
        return day
    if column.kind == "count":
        if not _COUNT.fullmatch(raw) or int(raw) > MAX_COUNT:
            raise ImportRefused(
                f"{where}: {raw[:40]!r} is not a whole number from 0 to {MAX_COUNT}"
            )
        return int(raw)
    if "\x00" in raw:
        raise ImportRefused(f"{where}: a value must not contain NUL")
    size = len(raw.encode())
    if size > column.max_bytes:
        raise ImportRefused(
            f"{where}: the value is {size} bytes of UTF-8; at most {column.max_bytes} are kept"
        )
    return stored_text(column, raw)


def stored_text(column: Column, raw: str) -> str:
    """How the rollups keep a CSV text value: empty is NOT_SET; devices are lower case
    (Plausible writes "Desktop", the tracker's rollups "desktop")."""
    if raw == "":
        return NOT_SET
    return raw.lower() if column.name == "device" else raw


def read_rows(source: SourceFile) -> Iterator[tuple[int, Row]]:
    """Each data row of the file with its line number (the header is line 1), converted
    (`convert`); raises ImportRefused at the first bad row, or for bytes that are not UTF-8."""
    with source.open() as stream:
        text = io.TextIOWrapper(stream, encoding="utf-8", newline="")
        reader = csv.reader(text, strict=True)
        try:
            header = next(reader, None)
            if header is None:
                raise ImportRefused(f"{source.name}: empty (a header line is expected)")
            layout = read_header(source, header)
            for fields in reader:
                if not fields:
                    continue
                yield reader.line_num, convert(source, layout, fields, reader.line_num)
        except UnicodeDecodeError:
            raise ImportRefused(
                f"{source.name}, near line {reader.line_num + 1}: not UTF-8 text"
            ) from None
        except csv.Error as exc:
            raise ImportRefused(f"{source.name}, line {reader.line_num}: {exc}") from None


def ignored_columns(source: SourceFile) -> tuple[str, ...]:
    """The header's columns the import leaves aside (for the command's summary)."""
    with source.open() as stream:
        text = io.TextIOWrapper(stream, encoding="utf-8", errors="replace", newline="")
        header = next(csv.reader(text), [])
    return read_header(source, header).ignored if header else ()
